// The CONNECT fast path (lib/proxy/connect-head.ts, proxy-port.ts) against node:http plus today's
// checks: every request head goes to two proxies with the same rules, one with the fast path and one
// without (connectFastPath: false), and both must answer alike: the same status line, Proxy-Status
// and body, the same bytes reaching the recording upstream (echoed back to the client), and the
// connection closed alike. The heads: the raw heads of the rest of the suite, the CONNECT cases of
// the adversarial corpus, and thousands of seeded mutations of valid CONNECT and GET heads, sent in
// random TCP chunks. The seed is printed: HEAD_SEED repeats a run.
import { randomInt } from 'node:crypto'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import t from 'tap'
import { Random } from './helpers/client-hello.js'
import { startProxy, type TestProxy } from './helpers/proxy.js'
import { hashPassword } from '../lib/proxy/auth.js'

const SEED = process.env.HEAD_SEED === undefined ? randomInt(2 ** 31) : Number(process.env.HEAD_SEED)
const CASES = 2_500
const LIMITS = { maxHeaderBytes: 1_024, maxHeaderCount: 12 }

/**
 * The upstream: answers an HTTP request (a forwarded one) with a short 200, and tunnel bytes, once
 * the client's end comes through, with everything it received: what reached it is in the client's text.
 */
async function startRecorder(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    let got = Buffer.alloc(0)
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d])
      if (/^[A-Z]+ \//.test(got.toString('latin1')) && got.includes('\r\n\r\n')) socket.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok')
    })
    socket.on('end', () => socket.end(`[upstream got ${got.length}: ${got.toString('latin1')}]`))
    socket.on('error', () => socket.destroy())
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}

/** Sends the chunks one by one (each after the previous one was written and a timer turn, so that they tend to arrive apart), then ends; collects the answer. */
function exchange(port: number, chunks: readonly Buffer[]): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, noDelay: true })
    let text = ''
    let done = false
    const finish = (closed: boolean): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ text, closed })
    }
    const timer = setTimeout(() => finish(false), 10_000) // a safety net: every case ends with the client's end
    socket.on('data', (d: Buffer) => (text += d.toString('latin1')))
    socket.on('close', () => finish(true))
    socket.on('error', () => finish(true))
    const send = (i: number): void => {
      if (socket.destroyed) return
      const chunk = chunks[i]
      if (chunk === undefined) return void socket.end()
      socket.write(chunk, () => setTimeout(() => send(i + 1), 1))
    }
    socket.once('connect', () => send(0))
  })
}

/** What must match: every response line but Date (node:http writes the time into its own answers). */
function outcome(r: { text: string; closed: boolean }): string {
  return `${r.text.replace(/^Date: [^\r\n]*\r\n/gim, '')}\n[closed: ${String(r.closed)}]`
}

/** Splits `bytes` at random points into 1-4 chunks (most often one, as real clients send a head). */
function split(rng: Random, bytes: Buffer): Buffer[] {
  if (bytes.length < 2 || rng.chance(0.5)) return [bytes]
  const cuts = [...new Set(Array.from({ length: rng.int(1, 3) }, () => rng.int(1, bytes.length - 1)))].sort((a, b) => a - b)
  return [0, ...cuts].map((from, i) => bytes.subarray(from, cuts[i] ?? bytes.length))
}

interface Pair {
  readonly fast: TestProxy
  readonly http: TestProxy
}

async function startPair(rules: Record<string, unknown>): Promise<Pair> {
  return { fast: await startProxy(rules), http: await startProxy(rules, { connectFastPath: false }) }
}

async function compare(pair: Pair, chunks: readonly Buffer[]): Promise<{ fast: string; http: string }> {
  const [fast, http] = await Promise.all([exchange(pair.fast.port, chunks), exchange(pair.http.port, chunks)])
  return { fast: outcome(fast), http: outcome(http) }
}

// ---- the heads ----------------------------------------------------------------------------------

/** Raw heads of the rest of the suite (connect, forward, guard, upgrade, intercept-head-checks, ...), T the allowed upstream. */
const SUITE = (T: string): string[] => [
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\n\r\nhello`,
  `CONNECT ${T} HTTP/1.1\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost: x\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\nContent-Length: 5\r\n\r\nhello`,
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\nContent-Length: 0\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\nHost: evil.test:443\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
  `CONNECT ${T} HTTP/2.0\r\nHost: ${T}\r\n\r\n`,
  `CONNECT ${T} HTTP/1.0\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\n\r\nGET /in-tunnel HTTP/1.1\r\nHost: x\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost: evil.test\r\nX-Extra: 1\r\n\r\nping`,
  'CONNECT  evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n',
  'CONNECT api.allowed.test HTTP/1.1\r\nHost: x\r\n\r\n',
  'CONNECT api.allowed.test: 443 HTTP/1.1\r\nHost: x\r\n\r\n',
  'CONNECT denied.example.test:443 HTTP/1.1\r\nHost: x\r\n\r\n',
  'CONNECT\tapi.allowed.test:443 HTTP/1.1\r\nHost: api.allowed.test:443\r\n\r\n',
  'connect api.allowed.test:443 HTTP/1.1\r\nHost: api.allowed.test:443\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: api.allowed.test\r\nHost: evil.test\r\n\r\n',
  'GET / HTTP/1.1\r\n\r\n',
  'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n',
  'GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\nPAYLOAD\r\n\r\n',
  '\r\n\r\nGET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n',
  'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
  `GET http://${T}/ HTTP/1.1\r\nHost : ${T}\r\n\r\n`,
  `GET http://${T}/ HTTP/1.1\r\nHost: ${T}\r\nX-A: a\r\n b\r\n\r\n`,
  `GET http://${T}/ HTTP/1.1\r\nHost: ${T}\r\n\rX`,
  `GET http://${T}/slow HTTP/1.1\r\nHost: ${T}\r\nX-Partial: `,
  `POST http://${T}/ HTTP/1.0\r\nHost: ${T}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
  `GET http://${T}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
]

/** The adversarial corpus, sections E and I, as CONNECTs (cases 50-62, bare LF, obs-fold, NUL, framing). */
const CORPUS = (T: string): string[] => [
  'CONNECT 2130706433:443 HTTP/1.1\r\nHost: 2130706433:443\r\n\r\n',
  'CONNECT 0177.0.0.1:80 HTTP/1.1\r\n\r\n',
  'CONNECT [::1]:443 HTTP/1.1\r\n\r\n',
  'CONNECT [fe80::1%25eth0]:80 HTTP/1.1\r\n\r\n',
  'CONNECT www.example.com..:443 HTTP/1.1\r\n\r\n',
  'CONNECT *.example.com:443 HTTP/1.1\r\n\r\n',
  'CONNECT evil.test%00.example.com:443 HTTP/1.1\r\n\r\n',
  'CONNECT a_b.example.com:443 HTTP/1.1\r\n\r\n',
  `CONNECT ${'a'.repeat(900)}.test:443 HTTP/1.1\r\n\r\n`,
  `CONNECT ${'a'.repeat(2_000)}.test:443 HTTP/1.1\r\n\r\n`,
  ...[':99999', ':65536', ':-1', ':443abc', ':', ':0x1bb', ':+443', ':4.43e2', ': 443', ':007'].map((p) => `CONNECT www.example.com${p} HTTP/1.1\r\n\r\n`),
  'CONNECT http://evil.test:443/ HTTP/1.1\r\n\r\n',
  `CONNECT ${T}@evil.test:443 HTTP/1.1\r\n\r\n`,
  'CONNECT evil.test\x00.example.com:443 HTTP/1.1\r\n\r\n',
  'CONNECT api\xe3\x80\x82allowed\xe3\x80\x82test:443 HTTP/1.1\r\n\r\n',
  'CONNECT www.example.com:443\r\n\r\n',
  'CONNECT www.example.com:443 HTTP/2.0\r\n\r\n',
  'CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\nGET http://evil2.test/ HTTP/1.1\r\nHost: evil2.test\r\n\r\n',
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\n\r\n\x16\x03\x01\x00\x05hello`,
  `CONNECT ${T} HTTP/1.1\r\nX-Upstream-Https-Proxy: https://evil-proxy.test:8443\r\nX-Forwarded-Host: evil.test\r\nForwarded: host=evil.test;for=127.0.0.1\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\nHost: ${T}\n\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\nX-A: a\r\n b\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\nX-A: a\x00b\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\nX-A: a\x7fb\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\nX-A: caf\xe9\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello`,
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\nContent-Length: abc\r\n\r\n`,
  `CONNECT ${T} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T} \r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost:${T}\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nHost:\t ${T}\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\n: empty name\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nNo-Colon\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nX-Many: ${'v'.repeat(1_100)}\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\n${Array.from({ length: 13 }, (_, i) => `X-${i}: ${i}\r\n`).join('')}\r\n`,
  `CONNECT ${T} HTTP/1.1\r\n${Array.from({ length: 12 }, (_, i) => `X-${i}: ${i}\r\n`).join('')}\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nConnection: close\r\nUpgrade: websocket\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\nExpect: 100-continue\r\n\r\n`,
  `CONNECT ${T} HTTP/1.1 \r\n\r\n`,
  `CONNECT ${T} HTTP/1.1\r\r\n\r\n`,
  `CONNECT ${T} http/1.1\r\n\r\n`,
  `CONNECT ${T} HTTP/1.2\r\n\r\n`,
  `CONNECT ${T} HTTP/0.9\r\n\r\n`,
  `CONNECT ${T} HTTP/11.1\r\n\r\n`,
  `CONNECT /${T} HTTP/1.1\r\n\r\n`,
  `TRACE http://${T}/ HTTP/1.1\r\nHost: ${T}\r\n\r\n`,
  `CONNECTX ${T} HTTP/1.1\r\n\r\n`,
  `CONNEC ${T} HTTP/1.1\r\n\r\n`,
  '',
  'C',
  `CONNECT ${T} HTTP/1.1\r\nHost: ${T}\r\n`,
]

// ---- the generator -------------------------------------------------------------------------------

const NAMES = ['Host', 'host', 'HOST', 'Proxy-Authorization', 'User-Agent', 'Content-Length', 'Transfer-Encoding', 'Connection', 'Upgrade', 'X-A', 'Expect', 'Proxy-Connection']
const VALUES = ['x', '0', '5', 'chunked', 'close', 'keep-alive', 'websocket', 'curl/8.0', 'Basic YWxpY2U6eA==', '', 'a b', '100-continue']
const ODD = ['\x00', '\x01', '\x7f', '\x80', '\xff', '\t', ' ', '\r', '\n', '\r\n', '\r\n ', ':', '@', '%', '/', '"', '\x0b', '\x0c']

function targets(T: string): string[] {
  return [T, T, T, T, T, T, 'denied.test:443', '127.0.0.1:1', '[::1]:443', 'denied.test', 'a:b:c', `${T}/`, `http://${T}`, '', ' ', T.toUpperCase()]
}

/** A valid head to start from: mostly CONNECT, some GET (node:http's path, handed over by the fast path). */
function base(rng: Random, T: string): string {
  const version = rng.pick(['HTTP/1.1', 'HTTP/1.1', 'HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/1.2'])
  const headers = Array.from({ length: rng.int(0, rng.chance(0.1) ? 16 : 4) }, () => `${rng.pick(NAMES)}:${rng.pick(['', ' ', '  ', '\t'])}${rng.pick(VALUES)}${rng.chance(0.1) ? ' ' : ''}\r\n`).join('')
  const tail = rng.chance(0.3) ? rng.pick(['ping', 'hello world', '\x16\x03\x01\x00\x02ab', 'GET http://denied.test/ HTTP/1.1\r\nHost: x\r\n\r\n']) : ''
  if (rng.chance(0.15)) return `${rng.pick(['GET', 'POST', 'get', 'OPTIONS'])} http://${rng.pick(['denied.test', T])}/ ${version}\r\nHost: ${T}\r\n${headers}\r\n${tail}`
  return `${rng.chance(0.95) ? 'CONNECT' : rng.pick(['connect', 'Connect', 'CONNECT '])} ${rng.pick(targets(T))} ${version}\r\n${headers}\r\n${tail}`
}

/** Zero to three edits: insert an odd byte, delete or duplicate a span, swap CRLF for LF, lengthen a line. */
function mutate(rng: Random, head: string): string {
  let s = head
  for (let n = rng.int(-1, 3); n > 0; n--) {
    const at = rng.int(0, s.length)
    const kind = rng.int(0, 5)
    if (kind === 0) s = s.slice(0, at) + rng.pick(ODD) + s.slice(at)
    else if (kind === 1) s = s.slice(0, at) + s.slice(Math.min(s.length, at + rng.int(1, 4)))
    else if (kind === 2) s = s.slice(0, at) + s.slice(at, at + rng.int(1, 20)) + s.slice(at)
    else if (kind === 3) s = s.replace(rng.chance(0.5) ? '\r\n' : /\r\n/g, '\n')
    else if (kind === 4) s = s.slice(0, at) + 'x'.repeat(rng.int(100, 1_200)) + s.slice(at)
    else s = s.slice(0, at) + s.slice(at).replace(/[a-z]/, (c) => c.toUpperCase())
  }
  return s
}

// ---- the tests ------------------------------------------------------------------------------------

t.test(`fast path and node:http answer every head alike (seed ${SEED})`, async (t) => {
  const upstream = await startRecorder()
  const T = `127.0.0.1:${upstream.port}`
  const pair = await startPair({ allow: [T], limits: LIMITS })
  t.teardown(async () => {
    await Promise.all([pair.fast.close(), pair.http.close()])
    await upstream.close()
  })
  const rng = new Random(SEED)
  const fixed = [...SUITE(T), ...CORPUS(T)].map((head) => Buffer.from(head, 'latin1'))
  const generated = Array.from({ length: CASES }, () => Buffer.from(mutate(rng, base(rng, T)), 'latin1'))
  const cases = [...fixed.map((bytes) => [bytes]), ...fixed.map((bytes) => split(rng, bytes)), ...generated.map((bytes) => split(rng, bytes))]
  let differ = 0
  let fastAnswered = 0
  const next = { i: 0 }
  const worker = async (): Promise<void> => {
    for (let i = next.i++; i < cases.length; i = next.i++) {
      const chunks = cases[i] ?? []
      const { fast, http } = await compare(pair, chunks)
      if (fast.startsWith('HTTP/1.1 200 Connection established')) fastAnswered++
      if (fast === http) continue
      if (++differ <= 5) t.equal(fast, http, `the same answer to ${JSON.stringify(Buffer.concat(chunks).toString('latin1'))} in ${chunks.length} chunk(s)`)
    }
  }
  await Promise.all(Array.from({ length: 12 }, worker))
  t.equal(differ, 0, `${cases.length} heads (${fixed.length} from the suite and the corpus, whole and split, ${CASES} generated): none answered differently`)
  t.ok(fastAnswered > 100, `tunnels were opened (${fastAnswered}): the generated heads reach the upstream`)
})

t.test('with proxy authentication: 407, the right password, a wrong one and the lockout alike', async (t) => {
  const upstream = await startRecorder()
  const T = `127.0.0.1:${upstream.port}`
  const pair = await startPair({ allow: [T], auth: { users: { alice: await hashPassword('right') } } })
  t.teardown(async () => {
    await Promise.all([pair.fast.close(), pair.http.close()])
    await upstream.close()
  })
  const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
  const heads = [
    `CONNECT ${T} HTTP/1.1\r\n\r\n`,
    `CONNECT ${T} HTTP/1.1\r\nProxy-Authorization: ${basic('alice', 'right')}\r\n\r\nping`,
    `CONNECT ${T} HTTP/1.1\r\nproxy-authorization:${basic('alice', 'right')}\r\n\r\n`,
    `CONNECT ${T} HTTP/1.1\r\nProxy-Authorization: ${basic('alice', 'right')}\r\nProxy-Authorization: ${basic('alice', 'wrong')}\r\n\r\n`,
    `CONNECT ${T} HTTP/1.1\r\nProxy-Authorization: ${basic('alice', 'wrong')}\r\nProxy-Authorization: ${basic('alice', 'right')}\r\n\r\n`,
    `CONNECT ${T} HTTP/1.1\r\nProxy-Authorization: ${basic('alice', 'right')} \r\n\r\n`,
    `CONNECT ${T} HTTP/1.1\r\nProxy-Authorization: basic ${basic('alice', 'right').slice(6)}\r\n\r\n`,
    `CONNECT ${T} HTTP/1.1\r\nProxy-Authorization: Bearer x\r\n\r\n`,
    `CONNECT ${T} HTTP/1.1\r\nProxy-Authorization: ${basic('bob', 'right')}\r\n\r\n`,
    ...Array.from({ length: 12 }, (_, i) => `CONNECT ${T} HTTP/1.1\r\nProxy-Authorization: ${basic('alice', `guess ${i}`)}\r\n\r\n`),
    `CONNECT ${T} HTTP/1.1\r\nProxy-Authorization: ${basic('alice', 'right')}\r\n\r\n`,
  ]
  // one at a time, in the same order on both: the lockout counts failures
  for (const head of heads) {
    const { fast, http } = await compare(pair, [Buffer.from(head, 'latin1')])
    t.equal(fast, http, `the same answer to ${JSON.stringify(head)}`)
  }
})

t.test('a connection that sends nothing gets node:http\'s 408 at the header timeout, on the fast path too', async (t) => {
  const pair = await startPair({ allow: ['127.0.0.1:1'], limits: { headerTimeoutMs: 200, requestTimeoutMs: 400 } })
  t.teardown(() => Promise.all([pair.fast.close(), pair.http.close()]))
  const silent = (port: number): Promise<string> =>
    new Promise((resolve) => {
      const socket = connect({ host: '127.0.0.1', port })
      let text = ''
      socket.on('data', (d: Buffer) => (text += d.toString('latin1')))
      socket.on('close', () => resolve(text))
      socket.on('error', () => socket.destroy())
    })
  const [fast, http] = await Promise.all([silent(pair.fast.port), silent(pair.http.port)])
  t.match(http, /^HTTP\/1\.1 408 /, 'node:http answers 408')
  t.equal(fast, http, 'the fast path answers the same')
})

t.test('a client that resets before its first byte: no answer, and the proxy serves the next one', async (t) => {
  const upstream = await startRecorder()
  const T = `127.0.0.1:${upstream.port}`
  const pair = await startPair({ allow: [T] })
  t.teardown(async () => {
    await Promise.all([pair.fast.close(), pair.http.close()])
    await upstream.close()
  })
  const reset = (port: number): Promise<void> =>
    new Promise((resolve) => {
      const socket = connect({ host: '127.0.0.1', port }, () => socket.resetAndDestroy())
      socket.on('close', () => resolve())
    })
  await Promise.all([reset(pair.fast.port), reset(pair.http.port)])
  const { fast, http } = await compare(pair, [Buffer.from(`CONNECT ${T} HTTP/1.1\r\n\r\nping`, 'latin1')])
  t.match(fast, /^HTTP\/1\.1 200 Connection established\r\n\r\n\[upstream got 4: ping\]/, 'the next CONNECT is served')
  t.equal(fast, http, 'as node:http serves it')
})
