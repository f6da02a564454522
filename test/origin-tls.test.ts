// TLS to the origin of an opened tunnel, for its requests and its WebSocket upgrades alike: over a
// connection to the checked address, with the name as SNI and the certificate checked for the name
// (not for the address dialled), against the configured roots.
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import t, { type Test } from 'tap'
import { WebSocketServer } from 'ws'
import { createCa, type Ca } from '../lib/certs/ca.js'
import { startDns } from './helpers/dns.js'
import { parseResponse, proxyStatus } from './helpers/http.js'
import { selfSigned, type TlsMaterial } from './helpers/net.js'
import { logLine, startProxy, type TestProxy } from './helpers/proxy.js'
import { exchange, tunnel, upgradeHead, wsExchange } from './helpers/ws-raw.js'

const NAME = 'api.allowed.test'

interface Origin {
  readonly port: number
  /** the SNI of each TLS connection accepted */
  readonly servernames: (string | false | null)[]
  /** request paths, and upgrade paths as `ws PATH` */
  readonly seen: string[]
}

/** An HTTPS and WebSocket (wss) origin on 127.0.0.1 with `tls` as its certificate. */
async function startOrigin(t: Test, tls: TlsMaterial): Promise<Origin> {
  const servernames: (string | false | null)[] = []
  const seen: string[] = []
  const server = createHttpsServer(tls, (req, res) => {
    seen.push(req.url ?? '')
    res.end(`origin ${req.url ?? ''}`)
  })
  server.on('secureConnection', (socket: TLSSocket) => servernames.push(socket.servername))
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws, req) => {
    seen.push(`ws ${req.url ?? ''}`)
    ws.on('message', (data) => ws.send(`echo: ${(data as Buffer).toString()}`))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate()
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  )
  return { port: (server.address() as AddressInfo).port, servernames, seen }
}

/** proxy-gate opening TLS tunnels to NAME on the origin's port, NAME resolving to 127.0.0.1, origins verified against `trusted`. */
async function gate(t: Test, ca: Ca, origin: Origin, trusted: readonly string[]): Promise<TestProxy> {
  const dns = await startDns({ [NAME]: { A: ['127.0.0.1'] } })
  t.teardown(() => dns.close())
  const proxy = await startProxy(
    {
      allow: [{ host: NAME, ports: [origin.port], methods: ['GET'], paths: ['/**'] }, `127.0.0.1:${origin.port}`],
      dns: { servers: [dns.server] },
      tls: { ports: [origin.port] },
    },
    { ca, upstreamCa: trusted },
  )
  t.teardown(() => proxy.close())
  return proxy
}

/** A request and a WebSocket upgrade, each in its own opened TLS tunnel: the raw answers, the tunnels then closed. */
async function both(ca: Ca, proxy: TestProxy, origin: Origin): Promise<{ request: string; upgrade: string }> {
  const sockets: Socket[] = []
  const track = (s: Socket): void => void sockets.push(s)
  const target = `${NAME}:${origin.port}`
  const tls = { servername: NAME, ca: ca.certPem }
  try {
    const request = await exchange(await tunnel(proxy.port, target, track, tls), `GET /request HTTP/1.1\r\nHost: ${target}\r\n\r\n`)
    const upgrade = await wsExchange(await tunnel(proxy.port, target, track, tls), upgradeHead('/socket', target))
    return { request, upgrade }
  } finally {
    for (const s of sockets) s.destroy()
  }
}

t.test('the origin gets the name as SNI and a certificate for the name passes', async (t) => {
  const ca = await createCa()
  const material = selfSigned([NAME])
  const origin = await startOrigin(t, material)
  const proxy = await gate(t, ca, origin, [material.cert])
  const { request, upgrade } = await both(ca, proxy, origin)
  t.match(request, /^HTTP\/1\.1 200 [^]*origin \/request$/)
  t.match(upgrade, /^HTTP\/1\.1 101 [^]*echo: through/)
  t.same(origin.seen, ['/request', 'ws /socket'])
  t.same(origin.servernames, [NAME, NAME], 'both connections asked for the name')
  t.match(await logLine(proxy, (l) => l.message === 'closed' && l.kind === 'upgrade', 'closed upgrade'), { intercepted: true, chosen: '127.0.0.1' })
})

t.test('a certificate for the address dialled but not for the name is refused: 502 tls_certificate_error, nothing sent', async (t) => {
  const ca = await createCa()
  const material = selfSigned(['other.test'], ['127.0.0.1'])
  const origin = await startOrigin(t, material)
  const proxy = await gate(t, ca, origin, [material.cert])
  const { request, upgrade } = await both(ca, proxy, origin)
  for (const [what, text] of [['request', request], ['upgrade', upgrade]] as const) {
    const answer = parseResponse(text)
    t.equal(answer.status, 502, `${what}: 502`)
    t.same(proxyStatus(answer), { error: 'tls_certificate_error', details: `127.0.0.1:${origin.port} presented a certificate that does not verify (ERR_TLS_CERT_ALTNAME_INVALID)` }, `${what}: says why`)
  }
  t.same(origin.seen, [], 'no request or upgrade reached the origin')
})

t.test('a certificate from roots not configured is refused the same way', async (t) => {
  const ca = await createCa()
  const origin = await startOrigin(t, selfSigned([NAME]))
  const proxy = await gate(t, ca, origin, [])
  const { request, upgrade } = await both(ca, proxy, origin)
  for (const [what, text] of [['request', request], ['upgrade', upgrade]] as const) {
    const answer = parseResponse(text)
    t.equal(answer.status, 502, `${what}: 502`)
    t.equal(proxyStatus(answer).error, 'tls_certificate_error', `${what}: tls_certificate_error`)
  }
  t.same(origin.seen, [], 'no request or upgrade reached the origin')
})
