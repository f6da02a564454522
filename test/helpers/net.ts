// Real sockets for tests: recording HTTP/HTTPS/WebSocket upstreams, TCP canaries that count
// every connection (a forbidden sink must see zero), and a raw client for malformed input.
import { spawn, spawnSync } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { connect, createServer as createTcpServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { createInterface } from 'node:readline'
import forge from 'node-forge'
import { WebSocketServer } from 'ws'

export interface Recorded {
  readonly method: string
  readonly url: string
  readonly headers: IncomingHttpHeaders
  readonly rawHeaders: readonly string[]
  readonly body: string
}

export interface Upstream {
  readonly host: string
  readonly port: number
  readonly requests: Recorded[]
  /** TCP connections accepted */
  connections(): number
  close(): Promise<void>
}

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void

const defaultHandler: Handler = (req, res) => {
  res.setHeader('Content-Type', 'text/plain')
  res.end(`hello ${req.method ?? ''} ${req.url ?? ''}`)
}

function listen(server: Server, host: string, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port))
  })
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve())
    ;(server as Server & { closeAllConnections?: () => void }).closeAllConnections?.()
  })
}

function track(server: Server): { count: () => number; sockets: Set<Socket> } {
  const sockets = new Set<Socket>()
  let count = 0
  server.on('connection', (s: Socket) => {
    count++
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  return { count: () => count, sockets }
}

function recordingListener(requests: Recorded[], handler: Handler) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body })
      handler(req, res, body)
    })
  }
}

/** A plain HTTP origin that records every request. */
export async function startHttpUpstream(host = '127.0.0.1', handler: Handler = defaultHandler, port = 0): Promise<Upstream> {
  const requests: Recorded[] = []
  const server = createHttpServer(recordingListener(requests, handler))
  const t = track(server)
  const bound = await listen(server, host, port)
  return { host, port: bound, requests, connections: t.count, close: () => closeServer(server) }
}

export interface TlsMaterial {
  readonly cert: string
  readonly key: string
}

/** A self-signed certificate for the given DNS names and IPs (it is its own CA for tests). */
export function selfSigned(names: readonly string[], ips: readonly string[] = []): TlsMaterial {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  const cert = forge.pki.createCertificate()
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }).toString())
  cert.serialNumber = '01' + forge.util.bytesToHex(forge.random.getBytesSync(8))
  cert.validity.notBefore = new Date(Date.now() - 3_600_000)
  cert.validity.notAfter = new Date(Date.now() + 86_400_000)
  const attrs = [{ name: 'commonName', value: names[0] ?? 'localhost' }]
  cert.setSubject(attrs)
  cert.setIssuer(attrs)
  cert.setExtensions([
    { name: 'basicConstraints', cA: true },
    { name: 'subjectAltName', altNames: [...names.map((value) => ({ type: 2, value })), ...ips.map((ip) => ({ type: 7, ip }))] },
  ])
  cert.sign(forge.pki.privateKeyFromPem(keyPem), forge.md.sha256.create())
  return { cert: forge.pki.certificateToPem(cert), key: keyPem }
}

/** An HTTPS origin with a self-signed certificate; `tls.cert` is what a client should trust. */
export async function startHttpsUpstream(host = '127.0.0.1', names: readonly string[] = ['localhost'], handler: Handler = defaultHandler, port = 0): Promise<Upstream & { tls: TlsMaterial }> {
  const tls = selfSigned(names, [host])
  const requests: Recorded[] = []
  const server = createHttpsServer({ cert: tls.cert, key: tls.key }, recordingListener(requests, handler))
  const t = track(server)
  const bound = await listen(server, host, port)
  return { host, port: bound, requests, connections: t.count, close: () => closeServer(server), tls }
}

/** A WebSocket echo origin (the `ws` library), recording the upgrade requests it accepted. */
export async function startWsUpstream(host = '127.0.0.1'): Promise<Upstream> {
  const requests: Recorded[] = []
  const server = createHttpServer((_req, res) => res.writeHead(426).end('upgrade required'))
  const t = track(server)
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws, req) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body: '' })
    ws.on('message', (data, isBinary) => ws.send(isBinary ? data : `echo: ${(data as Buffer).toString()}`))
  })
  const port = await listen(server, host)
  return {
    host,
    port,
    requests,
    connections: t.count,
    close: async () => {
      for (const c of wss.clients) c.terminate()
      wss.close()
      await closeServer(server)
    },
  }
}

/** A loopback port nothing listens on: bound once, then released. */
export async function closedPort(): Promise<number> {
  const server = createTcpServer()
  const port = await listen(server, '127.0.0.1')
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

export interface Canary {
  readonly host: string
  readonly port: number
  /** connections accepted so far */
  connections(): number
  /** bytes received, all connections together */
  received(): string
  close(): Promise<void>
}

/** A TCP listener that only counts: any connection to it from a denied request is a failure. */
export async function startCanary(host: string, port = 0, onSocket?: (s: Socket) => void): Promise<Canary> {
  let data = ''
  const server = createTcpServer((socket) => {
    socket.on('data', (d) => (data += d.toString('latin1')))
    socket.on('error', () => socket.destroy())
    onSocket?.(socket)
  })
  const t = track(server)
  const bound = await listen(server, host, port)
  return {
    host,
    port: bound,
    connections: t.count,
    received: () => data,
    close: async () => {
      for (const s of t.sockets) s.destroy()
      await closeServer(server)
    },
  }
}

/**
 * A server-first origin, like SSH or SMTP: it sends `banner` as soon as a connection is accepted,
 * before the client says anything, then answers each chunk with `got: ` and what came.
 */
export async function startBannerUpstream(host: string, banner: string): Promise<Canary> {
  return startCanary(host, 0, (socket) => {
    socket.write(banner)
    socket.on('data', (d: Buffer) => socket.write(`got: ${d.toString('latin1')}`))
  })
}

export interface RawResult {
  /** everything the proxy sent, latin1 */
  readonly text: string
  /** true when the proxy closed the connection (false when `until` matched or the wait ran out) */
  readonly closed: boolean
}

export interface RawOptions {
  readonly host?: string
  /** stop reading once this holds for the text received so far */
  readonly until?: (text: string) => boolean
  /** upper bound on the wait, a safety net only (default 5000 ms) */
  readonly timeoutMs?: number
}

/** Sends bytes exactly as given (no client normalisation) and collects the answer. */
export function rawExchange(port: number, bytes: string | Buffer, options: RawOptions = {}): Promise<RawResult> {
  return new Promise((resolve) => {
    const socket = connect({ host: options.host ?? '127.0.0.1', port })
    let text = ''
    let done = false
    const finish = (closed: boolean): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ text, closed })
    }
    const timer = setTimeout(() => finish(false), options.timeoutMs ?? 5_000)
    socket.on('data', (d) => {
      text += d.toString('latin1')
      if (options.until?.(text)) finish(false)
    })
    socket.on('end', () => finish(true))
    socket.on('close', () => finish(true))
    socket.on('error', () => finish(true))
    socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes)
  })
}

/** The status code of the first (or nth) HTTP response in raw text. */
export function statusOf(text: string, nth = 0): number | undefined {
  const all = [...text.matchAll(/HTTP\/1\.[01] (\d{3})/g)]
  const m = all[nth]
  return m ? Number(m[1]) : undefined
}

/** True when the netns created by test/run.sh is in place (stand-in addresses exist on lo). */
const IN_NETNS = process.env.PROXY_GATE_NETNS === '1'
export const NETNS_SKIP = IN_NETNS ? false : 'needs the loopback-only network namespace that test/run.sh creates (run "npm test" as root)'

export interface RawResponse {
  readonly status: number
  /** the head as sent, status line included, without the blank line */
  readonly head: string
  /** header values by lower-case name, in order */
  readonly headers: Record<string, string[]>
  readonly body: string
  /** false when the body is close-delimited or still arriving */
  readonly complete: boolean
}

function decodeChunked(text: string): { body: string; used: number } | undefined {
  let pos = 0
  let body = ''
  for (;;) {
    const eol = text.indexOf('\r\n', pos)
    if (eol < 0) return undefined
    const size = parseInt(text.slice(pos, eol).split(';')[0] ?? '', 16)
    if (Number.isNaN(size)) return undefined
    pos = eol + 2
    if (size === 0) {
      const end = text.indexOf('\r\n\r\n', pos - 2)
      return end < 0 ? undefined : { body, used: end + 4 }
    }
    if (text.length < pos + size + 2) return undefined
    body += text.slice(pos, pos + size)
    pos += size + 2
  }
}

/** Splits raw proxy output (latin1) into the HTTP/1.x responses it holds, 1xx included. */
export function parseResponses(text: string): RawResponse[] {
  const out: RawResponse[] = []
  let pos = 0
  while (pos < text.length) {
    const end = text.indexOf('\r\n\r\n', pos)
    if (end < 0) break
    const head = text.slice(pos, end)
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? NaN)
    if (Number.isNaN(status)) break
    const headers: Record<string, string[]> = Object.create(null) as Record<string, string[]>
    for (const line of head.split('\r\n').slice(1)) {
      const colon = line.indexOf(':')
      const name = line.slice(0, colon).trim().toLowerCase()
      ;(headers[name] ??= []).push(line.slice(colon + 1).trim())
    }
    const rest = text.slice(end + 4)
    const length = headers['content-length']?.[0]
    if (status < 200 || status === 204 || status === 304) {
      out.push({ status, head, headers, body: '', complete: true })
      pos = end + 4
    } else if (length !== undefined) {
      const n = Number(length)
      out.push({ status, head, headers, body: rest.slice(0, n), complete: rest.length >= n })
      pos = end + 4 + n
    } else if (headers['transfer-encoding']?.some((v) => /chunked/i.test(v))) {
      const decoded = decodeChunked(rest)
      out.push({ status, head, headers, body: decoded?.body ?? '', complete: decoded !== undefined })
      if (!decoded) break
      pos = end + 4 + decoded.used
    } else {
      out.push({ status, head, headers, body: rest, complete: false })
      break
    }
  }
  return out
}

/** How many final (non-1xx) responses in the text are complete. */
export function completeResponses(text: string): number {
  return parseResponses(text).filter((r) => r.complete && r.status >= 200).length
}

export interface RawSession {
  readonly socket: Socket
  /** everything received so far, latin1 */
  text(): string
  send(bytes: string | Buffer): Promise<void>
  /** resolves with the text once `until` holds, the peer closes, or the safety timeout passes */
  waitFor(until: (text: string) => boolean, timeoutMs?: number): Promise<string>
  isClosed(): boolean
  /** resolves when the connection is closed */
  readonly closed: Promise<void>
  destroy(): void
}

/** A raw client connection for conversations (send, wait for an answer, send more). */
export function rawSession(port: number, host = '127.0.0.1'): Promise<RawSession> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port })
    let text = ''
    let isClosed = false
    const watchers = new Set<() => void>()
    const closed = new Promise<void>((done) =>
      socket.once('close', () => {
        isClosed = true
        for (const w of [...watchers]) w()
        done()
      }),
    )
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1')
      for (const w of [...watchers]) w()
    })
    socket.on('error', () => socket.destroy())
    socket.once('connect', () => {
      socket.removeListener('error', reject)
      resolve({
        socket,
        text: () => text,
        send: (bytes) => new Promise((done) => socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes, () => done())),
        waitFor: (until, timeoutMs = 5_000) =>
          new Promise((done) => {
            const check = (): void => {
              if (!until(text) && !isClosed) return
              watchers.delete(check)
              clearTimeout(timer)
              done(text)
            }
            const timer = setTimeout(() => {
              watchers.delete(check)
              done(text)
            }, timeoutMs)
            watchers.add(check)
            check()
          }),
        isClosed: () => isClosed,
        closed,
        destroy: () => socket.destroy(),
      })
    })
    socket.once('error', reject)
  })
}

export const PYTHON = spawnSync('python3', ['-c', 'pass']).status === 0

/**
 * An address whose SYNs are dropped: a listener with backlog 0 that never accepts, its accept
 * queue filled by one connection. (No iptables/nft in the namespace.)
 */
export async function startBlackhole(): Promise<{ port: number; close(): Promise<void> }> {
  const script = [
    'import socket, sys',
    's = socket.socket()',
    "s.bind(('127.0.0.1', 0))",
    's.listen(0)',
    'print(s.getsockname()[1], flush=True)',
    'sys.stdin.read()',
  ].join('\n')
  const child = spawn('python3', ['-c', script], { stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = createInterface({ input: child.stdout })
  const port = await new Promise<number>((resolve, reject) => {
    lines.once('line', (line) => resolve(Number(line)))
    child.once('exit', (code) => reject(new Error(`python3 exited ${String(code)}`)))
  })
  const fillers = [connect({ host: '127.0.0.1', port }), connect({ host: '127.0.0.1', port })]
  for (const f of fillers) f.on('error', () => undefined)
  await new Promise<void>((resolve) => fillers[0]?.once('connect', () => resolve()))
  return {
    port,
    close: async () => {
      for (const f of fillers) f.destroy()
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
      child.kill()
      await exited
    },
  }
}
