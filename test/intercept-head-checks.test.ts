// Requests inside opened tunnels get the proxy port's request-head checks (header count and size,
// duplicate or missing Host, framing, TRACE, what the parser refuses; Upgrade requests too), with the same answers:
// each malformed request is sent to the proxy port and inside a tunnel (TLS, and plain HTTP), and
// the two answers compared. None reaches the origin.
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import type { Duplex } from 'node:stream'
import t from 'tap'
import { createCa } from '../lib/certs/ca.js'
import { startDns } from './helpers/dns.js'
import { connectHead } from './helpers/http.js'
import { completeResponses, parseResponses, rawExchange, startHttpUpstream, startHttpsUpstream } from './helpers/net.js'
import { startProxy, type TestProxy } from './helpers/proxy.js'

const HOST = 'api.allowed.test'
const MAX_HEADER_COUNT = 10
const MAX_HEADER_BYTES = 2_048

interface Case {
  readonly name: string
  /** the request line's method and version, around the path */
  readonly method: string
  readonly version: string
  /** header lines after Host (which `host` replaces when set) */
  readonly headers: readonly string[]
  readonly host?: readonly string[]
  readonly body?: string
  readonly status: number
}

const CASES: readonly Case[] = [
  { name: 'more header lines than maxHeaderCount', method: 'GET', version: '1.1', headers: Array.from({ length: MAX_HEADER_COUNT }, (_, i) => `X-Line-${i}: ${i}`), status: 431 },
  { name: 'a head larger than maxHeaderBytes', method: 'GET', version: '1.1', headers: [`X-Big: ${'a'.repeat(MAX_HEADER_BYTES + 100)}`], status: 431 },
  { name: 'two Host headers', method: 'GET', version: '1.1', headers: [], host: ['HOST', 'HOST'], status: 400 },
  { name: 'no Host in HTTP/1.1', method: 'GET', version: '1.1', headers: [], host: [], status: 400 },
  { name: 'Transfer-Encoding in HTTP/1.0', method: 'POST', version: '1.0', headers: ['Transfer-Encoding: chunked'], body: '0\r\n\r\n', status: 400 },
  { name: 'TRACE', method: 'TRACE', version: '1.1', headers: [], status: 405 },
  { name: 'an Upgrade request with two Host headers', method: 'GET', version: '1.1', headers: ['Connection: Upgrade', 'Upgrade: websocket'], host: ['HOST', 'HOST'], status: 400 },
  { name: 'a header name the parser refuses', method: 'GET', version: '1.1', headers: ['Bad Name: x'], status: 400 },
]

/** The request as raw text: `target` is the absolute URL on the proxy port, the path inside a tunnel. */
function requestText(c: Case, target: string, authority: string): string {
  const hosts = (c.host ?? ['HOST']).map(() => `Host: ${authority}`)
  return `${c.method} ${target} HTTP/${c.version}\r\n${[...hosts, ...c.headers].map((l) => `${l}\r\n`).join('')}\r\n${c.body ?? ''}`
}

/** Writes `text` on `stream` and collects what comes back until a whole response is in, or the stream ends. */
function exchange(stream: Duplex, text: string): Promise<string> {
  return new Promise((resolve) => {
    let got = ''
    const guard = setTimeout(() => done(), 5_000)
    function done(): void {
      clearTimeout(guard)
      stream.destroy()
      resolve(got)
    }
    stream.on('data', (d: Buffer) => {
      got += d.toString('latin1')
      if (completeResponses(got) >= 1) done()
    })
    stream.on('close', done)
    stream.on('error', () => undefined)
    stream.write(text, 'latin1')
  })
}

/** CONNECT to `target`; resolves with the tunnel's socket (TLS to the minted leaf, or the plain socket) once it is open. */
function openTunnel(proxy: TestProxy, target: string, tls: false | string): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const raw: Socket = netConnect({ host: '127.0.0.1', port: proxy.port })
    raw.once('error', reject)
    raw.once('data', (d: Buffer) => {
      if (!d.toString('latin1').startsWith('HTTP/1.1 200')) return reject(new Error(d.toString('latin1')))
      if (tls === false) return resolve(raw)
      const secure = tlsConnect({ socket: raw, servername: HOST, ca: tls })
      secure.once('secureConnect', () => resolve(secure))
      secure.once('error', reject)
    })
    raw.write(connectHead(target))
  })
}

/** What must match between the two answers: status line, Proxy-Status, Connection and body. */
function answerOf(text: string): Record<string, unknown> {
  const [response] = parseResponses(text)
  if (!response) return { raw: text }
  return { status: response.status, statusLine: response.head.split('\r\n')[0], proxyStatus: response.headers['proxy-status'], connection: response.headers.connection, body: response.body }
}

t.test('inside opened tunnels, a request head the proxy port refuses is refused with the same answer, and never reaches the origin', async (t) => {
  const ca = await createCa()
  const https = await startHttpsUpstream('127.0.0.1', [HOST])
  const http = await startHttpUpstream('127.0.0.1')
  const dns = await startDns({ [HOST]: { A: ['127.0.0.1'] } })
  const rule = (port: number): Record<string, unknown> => ({ host: HOST, ports: [port], methods: ['GET', 'POST', 'TRACE'], paths: ['/meta'] })
  const proxy = await startProxy(
    {
      allow: [rule(https.port), rule(http.port), `127.0.0.1:${https.port}`, `127.0.0.1:${http.port}`],
      dns: { servers: [dns.server] },
      tls: { ports: [https.port] },
      limits: { maxHeaderCount: MAX_HEADER_COUNT, maxHeaderBytes: MAX_HEADER_BYTES },
    },
    { ca, upstreamCa: [https.tls.cert] },
  )
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([https.close(), http.close(), dns.close()])
  })
  const tunnels = [
    { kind: 'TLS', target: `${HOST}:${https.port}`, tls: ca.certPem, origin: https },
    { kind: 'plain HTTP', target: `${HOST}:${http.port}`, tls: false as const, origin: http },
  ]

  for (const tunnel of tunnels) {
    const good = await exchange(await openTunnel(proxy, tunnel.target, tunnel.tls), `GET /meta HTTP/1.1\r\nHost: ${tunnel.target}\r\n\r\n`)
    t.equal(parseResponses(good)[0]?.status, 200, `${tunnel.kind}: a well-formed request inside the tunnel is relayed`)
  }
  const relayed = tunnels.map((tunnel) => tunnel.origin.requests.length)

  for (const c of CASES) {
    const onPort = await rawExchange(proxy.port, requestText(c, `http://${HOST}:${http.port}/meta`, `${HOST}:${http.port}`), { until: (text) => completeResponses(text) >= 1 })
    const expected = answerOf(onPort.text)
    t.equal(expected.status, c.status, `${c.name}: ${c.status} on the proxy port`)
    for (const tunnel of tunnels) {
      const inside = await exchange(await openTunnel(proxy, tunnel.target, tunnel.tls), requestText(c, '/meta', tunnel.target))
      t.same(answerOf(inside), expected, `${c.name}, inside a ${tunnel.kind} tunnel: the proxy port's answer`)
    }
  }
  t.same(tunnels.map((tunnel) => tunnel.origin.requests.length), relayed, 'no refused request reached an origin')
  const lines = proxy.logs().filter((l) => l.message === 'decision' && l.intercepted === true && l.decision === 'error')
  t.equal(lines.length, CASES.length * tunnels.length, 'each refusal inside a tunnel is logged as an error decision')
  t.match(lines.find((l) => l.status === 405), { method: 'TRACE', target: `${HOST}:${https.port}`, path: '/meta', reason: 'http_request_error' })
})
