// The ClientHello parser against a real TLS server (node:tls, OpenSSL) on loopback. Thousands of
// generated first flights, each fed to proxy-gate's HelloReader in random TCP chunks and sent to the
// server, which says what it read: the server name its SNICallback saw, or a ServerHello for a hello
// without one. For every case proxy-gate either names exactly the server the TLS server sees, or
// refuses (malformed); it calls bytes "not TLS" only when the server read no ClientHello from them;
// and every well-formed hello is read (no false refusals). The seed is printed: HELLO_SEED repeats a run.
import { randomInt } from 'node:crypto'
import { connect, createServer, type AddressInfo } from 'node:net'
import { createSecureContext, TLSSocket } from 'node:tls'
import t from 'tap'
import { HelloReader, parseClientHello, type HelloResult } from '../lib/policy/tls-hello.js'
import { selfSigned } from './helpers/net.js'
import { captureHello, EXT, helloMessage, helloParts, record, serverNameData, sslv2Hello, u16, vector, Random, type Extension, type HelloParts } from './helpers/client-hello.js'

const SEED = process.env.HELLO_SEED === undefined ? randomInt(2 ** 31) : Number(process.env.HELLO_SEED)
const MAX = 32 * 1024
const GREASE = Array.from({ length: 16 }, (_, i) => (i << 12) | 0x0a00 | (i << 4) | 0x0a)

/** What the TLS server read from one connection. */
interface Seen {
  /** the name its SNICallback got (it fails the handshake right there: no crypto to pay for) */
  readonly name: string | undefined
  /** the server socket's servername once closed ('' for an empty server name) */
  readonly servername: string | undefined
  /** it answered with a ServerHello (or HelloRetryRequest): it read a ClientHello */
  readonly serverHello: boolean
}

interface Oracle {
  see(chunks: readonly Buffer[]): Promise<Seen>
  close(): Promise<void>
}

/**
 * A lenient OpenSSL server (TLS 1.0 up, every cipher): it reads any ClientHello a TLS server might.
 * Each connection gets a TLSSocket of its own, so what it read is known by the client's port.
 */
async function startOracle(): Promise<Oracle> {
  const { cert, key } = selfSigned(['oracle.test'])
  const secureContext = createSecureContext({ cert, key, minVersion: 'TLSv1', ciphers: 'ALL:@SECLEVEL=0' })
  const closed = new Map<number, (seen: Omit<Seen, 'serverHello'>) => void>()
  const server = createServer((raw) => {
    const port = raw.remotePort ?? 0
    let name: string | undefined
    const SNICallback = (servername: string, done: (error: Error) => void): void => {
      name = servername
      done(new Error('seen')) // the name is all it takes: no crypto to pay for
    }
    const socket = new TLSSocket(raw, { isServer: true, secureContext, SNICallback })
    socket.on('error', () => socket.destroy())
    socket.on('close', () => {
      const servername = (socket as TLSSocket & { servername?: unknown }).servername
      closed.get(port)?.({ name, servername: typeof servername === 'string' ? servername : undefined })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  // every case ends with the TLS server closing: the client sends its flight and ends, it never finishes a handshake
  const see = (chunks: readonly Buffer[]): Promise<Seen> =>
    new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port })
      let answer = Buffer.alloc(0)
      let server: Promise<Omit<Seen, 'serverHello'>> | undefined
      const safety = setTimeout(() => reject(new Error(`the TLS server never closed: ${Buffer.concat(chunks).subarray(0, 64).toString('hex')}`)), 10_000)
      socket.setNoDelay(true)
      socket.on('connect', () => {
        const local = socket.localPort ?? 0
        server = new Promise<Omit<Seen, 'serverHello'>>((got) => closed.set(local, got)).finally(() => closed.delete(local))
        for (const chunk of chunks) socket.write(chunk)
        socket.end()
      })
      socket.on('data', (d: Buffer) => (answer = answer.length < 6 ? Buffer.concat([answer, d]) : answer))
      socket.on('error', () => socket.destroy())
      socket.on('close', () => {
        void server?.then((seen) => {
          clearTimeout(safety)
          resolve({ ...seen, serverHello: answer[0] === 0x16 && answer[5] === 0x02 })
        })
      })
    })
  return { see, close: () => new Promise((resolve) => server.close(() => resolve())) }
}

/** proxy-gate's reading of the chunks, as they come (and the same, all at once). */
function read(chunks: readonly Buffer[]): { result: HelloResult; whole: HelloResult } {
  const reader = new HelloReader(MAX)
  let result: HelloResult = { kind: 'need-more' }
  for (const chunk of chunks) {
    result = reader.push(chunk)
    if (result.kind !== 'need-more') break
  }
  return { result, whole: parseClientHello(Buffer.concat(chunks), MAX) }
}

/** Why the parser and the server disagree, if they do; refusing (malformed, never complete) always agrees. */
function disagreement(result: HelloResult, seen: Seen): string | undefined {
  const named = seen.name ?? seen.servername
  if (result.kind === 'not-tls') return named !== undefined || seen.serverHello ? `called not TLS, the server read a ClientHello (name ${String(named)})` : undefined
  if (result.kind !== 'hello') return undefined
  if (named !== undefined && named !== result.sni) return `parsed server name ${String(result.sni)}, the server saw ${named}`
  if (result.sni !== undefined && named === undefined && seen.serverHello) return `parsed server name ${result.sni}, the server read the hello without one`
  return undefined
}

interface Case {
  readonly what: string
  readonly chunks: readonly Buffer[]
  /** for well-formed hellos: the server name both must see (null: none) */
  readonly expect?: string | null
}

// ---- generated cases ---------------------------------------------------------------------

function hostName(r: Random): string {
  if (r.chance(0.05)) return `${r.int(1, 254)}.${r.int(0, 255)}.${r.int(0, 255)}.${r.int(1, 254)}`
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_'
  const target = r.chance(0.1) ? r.int(200, 255) : r.int(1, 40)
  let name = ''
  while (name.length < target) {
    const label = Array.from({ length: r.int(1, 63) }, () => alphabet[r.int(0, alphabet.length - 1)]).join('')
    name = name === '' ? label : `${name}.${label}`
  }
  name = name.slice(0, target).replace(/\.$/, 'x')
  return r.chance(0.05) && name.length < 255 ? `${name}.` : name
}

/** Adds shares of groups OpenSSL 3.0 does not know (post-quantum sizes and more, up to 24 KB: over one record) before the real ones. */
function withBigKeyShares(extensions: Extension[], r: Random): Extension[] {
  const groups = r.shuffle([0x11ec, 0x6399, 0x0200, ...GREASE]).slice(0, r.int(1, 4))
  const shares = groups.map((g) => Buffer.concat([u16(g), vector(2, r.bytes(r.int(800, 6000)))]))
  return extensions.map((e) => {
    if (e.type === EXT.supportedGroups) return { type: e.type, data: vector(2, Buffer.concat([...groups.map(u16), e.data.subarray(2)])) }
    if (e.type === EXT.keyShare) return { type: e.type, data: vector(2, Buffer.concat([...shares, e.data.subarray(2)])) }
    return e
  })
}

function tcpChunks(r: Random, bytes: Buffer): Buffer[] {
  const count = r.chance(0.05) ? Math.min(bytes.length, 200) : r.int(1, 12)
  const out: Buffer[] = []
  let at = 0
  for (const size of r.cuts(bytes.length, count)) out.push(bytes.subarray(at, (at += size)))
  return out
}

interface Built {
  readonly parts: HelloParts
  readonly name: string | undefined
  /** the handshake records, one Buffer each */
  readonly records: Buffer[]
}

function wellFormed(r: Random, base: HelloParts): Built {
  const name = r.chance(0.2) ? undefined : hostName(r)
  let extensions = (base.extensions ?? []).filter((e) => e.type !== EXT.serverName)
  if (name !== undefined) extensions.push({ type: EXT.serverName, data: serverNameData([[0, name]]) })
  for (const g of r.shuffle(GREASE).slice(0, r.int(0, 2))) extensions.push({ type: g, data: r.bytes(r.int(0, 4)) })
  if (r.chance(0.5)) extensions = withBigKeyShares(extensions, r)
  if (r.chance(0.3)) extensions.push({ type: EXT.padding, data: Buffer.alloc(r.int(0, 600)) })
  const cipherSuites = r.chance(0.5) ? Buffer.concat([u16(r.pick(GREASE)), base.cipherSuites]) : base.cipherSuites
  const parts = { ...base, random: r.bytes(32), sessionId: r.chance(0.5) ? r.bytes(32) : Buffer.alloc(0), cipherSuites, extensions: r.shuffle(extensions) }
  const message = helloMessage(parts)
  const least = Math.ceil(message.length / 16_384)
  const sizes = r.cuts(message.length, Math.max(least, r.chance(0.1) ? r.int(5, 60) : r.int(1, 4)))
  const fitted = sizes.some((s) => s > 16_384) ? Array.from({ length: least }, () => Math.ceil(message.length / least)) : sizes
  const records: Buffer[] = []
  let at = 0
  for (const size of fitted) records.push(record(0x16, 0x0300 | r.int(0, 4), message.subarray(at, (at += size))))
  if (at < message.length) records.push(record(0x16, 0x0301, message.subarray(at)))
  return { parts, name, records }
}

const OTHER_RECORDS = [0x14, 0x15, 0x17, 0x18, 0x13, 0x19, 0x00, 0x80, 0xff]

/** One or two changes to a well-formed hello: each either leaves it readable or makes a TLS server read it differently. */
function mutated(r: Random, base: HelloParts): Case {
  const built = wellFormed(r, base)
  let { records } = built
  let parts = built.parts
  const what: string[] = []
  const ext = (list: Extension[]): void => {
    parts = { ...parts, extensions: list }
    records = [record(0x16, 0x0301, helloMessage(parts))]
  }
  for (let n = r.int(1, 2); n > 0; n--) {
    const kind = r.int(0, 13)
    what.push(String(kind))
    const at = r.int(0, records.length)
    const exts = [...(parts.extensions ?? [])].filter((e) => e.type !== EXT.serverName)
    if (kind === 0) records.unshift(...Array.from({ length: r.int(1, 3) }, () => record(0x16, 0x0301, Buffer.alloc(0))))
    else if (kind === 1) records.splice(at, 0, record(0x16, 0x0303, Buffer.alloc(0)))
    else if (kind === 2) records.splice(r.chance(0.5) ? 0 : at, 0, record(r.pick(OTHER_RECORDS), 0x0300 | r.int(0, 4), r.chance(0.3) ? Buffer.alloc(0) : r.bytes(r.int(1, 5))))
    else if (kind === 3) {
      const i = r.int(0, records.length - 1)
      records[i] = Buffer.concat([Buffer.from([0x16, r.pick([0x00, 0x01, 0x02, 0x04, 0x16, 0xfe]), r.int(0, 4)]), records[i]?.subarray(3) ?? Buffer.alloc(0)])
    } else if (kind === 4) records = [sslv2Hello(r.pick([0x0300, 0x0301, 0x0303, 0x0304, 0x0400, 0x0002]), Buffer.from('00002f00003500000a00009c0000ff', 'hex').subarray(0, 3 * r.int(1, 5)), r.bytes(r.int(16, 32)))]
    else if (kind === 5) {
      const names = [['', ''], ['a'.repeat(r.int(256, 300))], ['ok.test', 'evil.test'], ['with space.test'], ['ctrl\x01.test'], ['nul\x00.test'], ['caf\xe9.test']][r.int(0, 6)] ?? []
      ext([...exts, { type: EXT.serverName, data: serverNameData(names.map((n) => [0, n] as const)) }])
    } else if (kind === 6) {
      const list = r.chance(0.5) ? [[1, 'other.test'], [0, 'evil.test']] : [[0, 'ok.test'], [r.int(1, 255), 'evil.test']]
      ext([...exts, { type: EXT.serverName, data: serverNameData(list as Array<[number, string]>) }])
    } else if (kind === 7) ext([...exts, { type: EXT.serverName, data: serverNameData([[0, 'ok.test']]) }, { type: EXT.serverName, data: serverNameData([[0, r.pick(['ok.test', 'evil.test'])]]) }])
    else if (kind === 8) {
      const g = r.pick(GREASE)
      ext(r.shuffle([...(parts.extensions ?? []), { type: g, data: Buffer.alloc(0) }, { type: g, data: r.bytes(2) }]))
    } else if (kind === 9) records = [record(0x16, 0x0301, helloMessage(parts, r.bytes(r.int(1, 4))))]
    else if (kind === 10) {
      // a byte anywhere set to anything: lengths, types, versions, names
      const all = Buffer.concat(records)
      const i = r.chance(0.5) ? r.int(0, Math.min(all.length - 1, 80)) : r.int(0, all.length - 1)
      all[i] = r.chance(0.5) ? r.int(0, 255) : (all[i] ?? 0) ^ (1 << r.int(0, 7))
      records = [all]
    } else if (kind === 11) {
      const message = helloMessage(parts)
      message[0] = r.pick([0, 2, 11, 20, 0x81])
      records = [record(0x16, 0x0301, message)]
    } else if (kind === 12) records = [Buffer.concat(records).subarray(0, r.int(1, Buffer.concat(records).length - 1))]
    else {
      const first = r.chance(0.5) ? { type: EXT.padding, data: Buffer.alloc(17_000) } : undefined
      ext(first ? [...exts, first] : [])
      if (!first) parts = { ...parts, extensions: undefined }
      records = [record(0x16, 0x0301, helloMessage(parts))]
    }
  }
  return { what: `mutations ${what.join('+')}`, chunks: tcpChunks(r, Buffer.concat(records)) }
}

const PLAIN = ['GET / HTTP/1.1\r\nHost: x\r\n\r\n', 'SSH-2.0-OpenSSH_9.6\r\n', 'EHLO x\r\n', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', '\x00\x00\x00\x08\x04\xd2\x16\x2f', '\x03\x00\x00\x13\x0e\xe0\x00\x00', '\x10\x0c\x00\x04MQTT']

/** First bytes near the line between TLS and not: record types and versions, SSLv2 headers, plain protocols. */
function boundary(r: Random, base: HelloParts): Case {
  const hello = helloMessage({ ...base, random: r.bytes(32) })
  const v2 = sslv2Hello(r.pick([0x0301, 0x0303]), Buffer.from('00002f000035', 'hex'), r.bytes(32))
  const kind = r.int(0, 3)
  let bytes: Buffer
  if (kind === 0) bytes = Buffer.from(r.pick(PLAIN), 'latin1')
  else if (kind === 1) bytes = Buffer.concat([Buffer.from([r.int(0, 255), r.chance(0.5) ? 0x03 : r.int(0, 255), r.int(0, 4)]), vector(2, hello)])
  else if (kind === 2) bytes = Buffer.concat([Buffer.from([r.int(0x80, 0xff), r.int(0, 255), r.chance(0.5) ? 0x01 : r.int(0, 255)]), v2.subarray(3)])
  else bytes = Buffer.concat([Buffer.from([r.pick([0x14, 0x15, 0x16, 0x17, 0x18]), r.int(0, 255)]), r.bytes(r.int(1, 40))])
  return { what: `boundary ${kind}`, chunks: tcpChunks(r, bytes) }
}

t.test('differential: proxy-gate reads the server name the TLS server reads, or refuses', async (t) => {
  t.comment(`seed ${SEED} (HELLO_SEED=${SEED} repeats this run)`)
  const oracle = await startOracle()
  t.teardown(() => oracle.close())
  const base = helloParts(await captureHello({ servername: 'base.test', ALPNProtocols: ['h2', 'http/1.1'] }))
  const r = new Random(SEED)

  // finding 1's exact bytes: an empty record, then a hello for evil.test; the server reads evil.test
  const evil = helloMessage({ ...base, extensions: (base.extensions ?? []).map((e) => (e.type === EXT.serverName ? { type: 0, data: serverNameData([[0, 'evil.test']]) } : e)) })
  const fronted = [Buffer.concat([Buffer.from('1603010000', 'hex'), record(0x16, 0x0301, evil)])]
  t.equal((await oracle.see(fronted)).name, 'evil.test', 'OpenSSL skips the empty record and reads the name behind it')
  t.match(read(fronted).result, { kind: 'malformed', reason: /empty record/ }, 'proxy-gate refuses it')

  const cases: Case[] = [
    ...Array.from({ length: 1500 }, (): Case => {
      const built = wellFormed(r, base)
      return { what: 'well-formed', chunks: tcpChunks(r, Buffer.concat(built.records)), expect: built.name ?? null }
    }),
    ...Array.from({ length: 2500 }, () => mutated(r, base)),
    ...Array.from({ length: 1000 }, () => boundary(r, base)),
  ]
  const problems: string[] = []
  // Node 22 and 24 leave some hellos to OpenSSL's own servername handling (socket.servername) without calling
  // SNICallback, and their OpenSSL answers some hellos without a name with an alert (their groups or ciphers)
  const counts: Record<string, number> = {}
  const check = async (c: Case): Promise<void> => {
    const { result, whole } = read(c.chunks)
    const seen = await oracle.see(c.chunks)
    const key = `${c.what.split(' ')[0] ?? ''} ${result.kind}`
    counts[key] = (counts[key] ?? 0) + 1
    const hex = Buffer.concat(c.chunks).subarray(0, 48).toString('hex')
    const problem =
      disagreement(result, seen) ??
      (JSON.stringify(result) === JSON.stringify(whole) ? undefined : `read in chunks ${JSON.stringify(result)}, at once ${JSON.stringify(whole)}`) ??
      (c.expect === undefined || (result.kind === 'hello' && (result.sni ?? null) === c.expect && (seen.name ?? seen.servername ?? null) === c.expect)
        ? undefined
        : `a well-formed hello for ${String(c.expect)}: proxy-gate ${JSON.stringify(result)}, the server ${JSON.stringify(seen)}`)
    if (problem !== undefined) problems.push(`${c.what}: ${problem} [${hex}...]`)
  }
  // a few dozen connections at a time
  let next = 0
  await Promise.all(
    Array.from({ length: 24 }, async () => {
      while (next < cases.length) await check(cases[next++] as Case)
    }),
  )
  t.comment(`cases by kind and proxy-gate's reading: ${JSON.stringify(counts)}`)
  t.strictSame(problems.slice(0, 10), [], `${problems.length} of ${cases.length} cases disagree (seed ${SEED})`)
  t.ok((counts['well-formed hello'] ?? 0) === 1500, 'every well-formed hello was read')
})
