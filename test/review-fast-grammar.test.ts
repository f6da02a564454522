// Review of the CONNECT fast path: the heads it reads itself are the only ones where it and node:http
// could disagree (every other head goes to node:http on both paths). So heads are generated from
// inside its plain form, at its edges (every token character in names, every visible character and
// inner tabs in values, leading blanks, empty values, brackets and tildes in the target, HTTP/1.0,
// header names that look like framing ones, bytes after the head), and each must be read by the
// fast path and by a node:http server with the proxy's parser settings to the same target, version,
// raw header lines and tunnel bytes. The seed is printed: GRAMMAR_SEED repeats a run.
import { randomInt } from 'node:crypto'
import { createServer, type IncomingMessage } from 'node:http'
import { connect, Socket, type AddressInfo } from 'node:net'
import t from 'tap'
import { readConnectHead } from '../lib/proxy/connect-head.js'
import { Random } from './helpers/client-hello.js'

const SEED = process.env.GRAMMAR_SEED === undefined ? randomInt(2 ** 31) : Number(process.env.GRAMMAR_SEED)
const CASES = 1_000
const MAX_HEADER_BYTES = 16_384

const TCHAR = Array.from("!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-")
const VISIBLE = Array.from({ length: 0x7e - 0x20 }, (_, i) => String.fromCharCode(0x21 + i))
const AUTHORITY = Array.from('az09AZ.-_~:[]')
const NAMES = ['Host', 'host', 'Proxy-Authorization', 'proxy-authorization', 'Connection', 'Upgrade', 'Expect', 'Content-Lengthy', 'X-Content-Length', 'Transfer-Encodings', 'TE', 'Keep-Alive']

function text(rng: Random, alphabet: readonly string[], min: number, max: number): string {
  let out = ''
  for (let n = rng.int(min, max); n > 0; n--) out += rng.pick(alphabet)
  return out
}

function value(rng: Random): string {
  if (rng.chance(0.1)) return ''
  const inner = rng.chance(0.7) ? text(rng, [...VISIBLE, ' ', '\t'], 0, 12) + rng.pick(VISIBLE) : ''
  return rng.pick(VISIBLE) + inner
}

function head(rng: Random): string {
  const target = rng.chance(0.7) ? `${text(rng, Array.from('abc019.-'), 1, 12)}:${rng.int(0, 70_000)}` : text(rng, AUTHORITY, 1, 20)
  const lines = Array.from({ length: rng.int(0, 8) }, () => `${rng.chance(0.4) ? rng.pick(NAMES) : text(rng, TCHAR, 1, 10)}:${rng.pick(['', ' ', '\t', '  ', ' \t'])}${value(rng)}\r\n`)
  const tail = rng.pick(['', '', 'ping', '\x16\x03\x01\x00\x05hello', 'GET http://denied.test/ HTTP/1.1\r\nHost: x\r\n\r\n', '\r\n'])
  return `CONNECT ${target} HTTP/1.${rng.pick(['0', '1'])}\r\n${lines.join('')}\r\n${tail}`
}

interface Read {
  readonly url: string | undefined
  readonly version: string
  readonly rawHeaders: readonly string[]
  readonly rest: string
}

/** A node:http server parsing as the proxy port does; `read` sends bytes and resolves with what its 'connect' saw, or the parse error. */
async function nodeReader(): Promise<{ read(bytes: Buffer): Promise<Read | string>; close(): Promise<void> }> {
  const server = createServer({ insecureHTTPParser: false, requireHostHeader: false, maxHeaderSize: MAX_HEADER_BYTES })
  server.maxHeadersCount = 0
  let answer: ((r: Read | string) => void) | undefined
  server.on('connect', (req: IncomingMessage, socket: Socket, rest: Buffer) => {
    answer?.({ url: req.url, version: req.httpVersion, rawHeaders: req.rawHeaders, rest: rest.toString('latin1') })
    socket.destroy()
  })
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
    answer?.(`clientError ${error.code ?? ''}`)
    socket.destroy()
  })
  server.on('request', (_req: IncomingMessage, res) => {
    answer?.('read as a request, not a CONNECT')
    res.socket?.destroy()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    read: (bytes) =>
      new Promise((resolve) => {
        answer = resolve
        const client = connect({ host: '127.0.0.1', port }, () => client.end(bytes))
        client.on('error', () => client.destroy())
        client.on('close', () => setImmediate(() => resolve('closed without an event')))
      }),
    close: () => new Promise((resolve) => server.close(() => resolve())),
  }
}

t.test(`node:http reads every head the fast path reads alike (seed ${SEED})`, async (t) => {
  const reader = await nodeReader()
  t.teardown(() => reader.close())
  const rng = new Random(SEED)
  const unused = new Socket() // the head keeps its socket; nothing reads it here
  let read = 0
  let differ = 0
  for (let i = 0; i < CASES; i++) {
    const bytes = Buffer.from(head(rng), 'latin1')
    const fast = readConnectHead(bytes, MAX_HEADER_BYTES, unused)
    if (fast === undefined) continue
    read++
    const mine: Read = { url: fast.url, version: fast.httpVersion, rawHeaders: fast.rawHeaders, rest: bytes.subarray(fast.end).toString('latin1') }
    const theirs = await reader.read(bytes)
    if (JSON.stringify(mine) === JSON.stringify(theirs)) continue
    if (++differ <= 5) t.same(mine, theirs, `read alike: ${JSON.stringify(bytes.toString('latin1'))}`)
  }
  t.equal(read, CASES, 'every generated head is in the plain form the fast path reads (the generator stays where the paths could differ)')
  t.equal(differ, 0, `${read} heads read by the fast path: node:http read each the same`)
})
