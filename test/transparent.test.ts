// Transparent listeners (sandbox): clients that know no proxy connect straight to proxy-gate's
// address. Real clients (curl --resolve, openssl s_client, Node TLS, ws) and raw sockets against
// HTTP and TLS ports on 127.80.0.x; origins on stand-in public addresses, canaries on the private
// and metadata ones (a refused connection must never reach them).
import { execFile } from 'node:child_process'
import { connect as netConnect } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { createCa } from '../lib/certs/ca.js'
import { curl } from './helpers/curl.js'
import { startDns, type TestDns } from './helpers/dns.js'
import { parseResponse, proxyStatus } from './helpers/http.js'
import { closedPort, NETNS_SKIP, rawExchange, rawSession, startCanary, startHttpsUpstream, startHttpUpstream, startWsUpstream, type Canary, type Upstream } from './helpers/net.js'
import { OPENSSL_SKIP, sClient } from './helpers/openssl.js'
import { logLine, startProxy, type LogLine, type TestProxy } from './helpers/proxy.js'

const run = promisify(execFile)
const SANDBOX = '127.80.0.1'

interface Fixture {
  readonly proxy: TestProxy
  readonly dns: TestDns
  readonly http: Upstream
  readonly https: Upstream & { tls: { cert: string } }
  readonly ws: Upstream
  readonly metadata: Canary
  readonly inside: Canary
}

async function fixture(t: Test, address = SANDBOX): Promise<Fixture> {
  const http = await startHttpUpstream('11.22.33.44')
  const https = await startHttpsUpstream('11.22.33.44', ['api.allowed.test', 'evil.test'])
  const ws = await startWsUpstream('11.22.33.45')
  // the stand-ins an allowed name may resolve to but must never be dialled at, on every port in play
  const metadata = await startCanary('169.254.169.254', http.port)
  const inside = await startCanary('10.0.0.1', https.port)
  const dns = await startDns({
    'api.allowed.test': { A: ['11.22.33.44'] },
    'limited.allowed.test': { A: ['11.22.33.44'] },
    'ws.allowed.test': { A: ['11.22.33.45'] },
    'meta.allowed.test': { A: ['169.254.169.254'] },
    'inside.allowed.test': { A: ['10.0.0.1'] },
    'self.allowed.test': { A: [address] },
    'evil.test': { A: ['11.22.33.44'] },
    'denied.test': { A: ['11.22.33.44'] },
  })
  const proxy = await startProxy(rulesFor(http, https, ws, dns, address))
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([http.close(), https.close(), ws.close(), metadata.close(), inside.close(), dns.close()])
  })
  return { proxy, dns, http, https, ws, metadata, inside }
}

function rulesFor(http: Upstream, https: Upstream, ws: Upstream, dns: TestDns, address: string): Record<string, unknown> {
  return {
    allow: [
      `api.allowed.test:${http.port},${https.port}`,
      { host: 'limited.allowed.test', ports: [http.port], methods: ['GET'], paths: ['/ok/**'] },
      `ws.allowed.test:${ws.port}`,
      'meta.allowed.test:*',
      'inside.allowed.test:*',
      'self.allowed.test:*',
    ],
    dns: { servers: [dns.server], timeoutMs: 2000 },
    sandbox: { socks: false, address, dns: false, http: [http.port, ws.port], tls: [https.port] },
  }
}

const decision = (proxy: TestProxy, match: (l: LogLine) => boolean, what: string) => logLine(proxy, (l) => l.message === 'decision' && match(l), what)
const resolveTo = (name: string, port: number, address = SANDBOX) => ['--resolve', `${name}:${port}:${address}`]

/** curl over HTTPS to a transparent TLS port, trusting `ca`: its exit code, the status and the body. */
async function curlTls(url: string, port: number, ca: string, address = SANDBOX): Promise<{ code: number; status: number; body: string }> {
  const host = new URL(url).hostname
  const args = ['-c', `curl -s --max-time 10 -w '\\n%{http_code}' --cacert <(printf '%s' "$CA") --resolve ${host}:${port}:${address} ${url}`]
  const { code, stdout } = await run('bash', args, { env: { ...process.env, CA: ca } })
    .then(({ stdout }) => ({ code: 0, stdout }))
    .catch((e: unknown) => e as { code: number; stdout: string })
  const end = stdout.lastIndexOf('\n')
  return { code, status: Number(stdout.slice(end + 1)), body: stdout.slice(0, end) }
}

/** A TLS handshake with a transparent TLS port: 'ok' with the socket open, or 'closed' when proxy-gate cut it. */
function handshake(port: number, servername: string | undefined, ca: string, address = SANDBOX): Promise<{ result: 'ok' | 'closed'; socket: TLSSocket }> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: address, port, ca, ...(servername === undefined ? {} : { servername }) })
    socket.once('secureConnect', () => resolve({ result: 'ok', socket }))
    socket.once('error', () => resolve({ result: 'closed', socket }))
    socket.once('close', () => resolve({ result: 'closed', socket }))
  })
}

/** One raw HTTP request to a transparent HTTP port; the answer split up. */
async function raw(port: number, request: string) {
  const res = await rawExchange(port, request, { host: SANDBOX })
  const parsed = parseResponse(res.text)
  return { ...parsed, proxyStatus: proxyStatus(parsed), closed: res.closed }
}

t.test('HTTP ports: origin-form requests are decided by their Host on the listener port', { skip: NETNS_SKIP }, async (t) => {
  const { proxy, dns, http, metadata } = await fixture(t)
  const port = http.port

  const ok = await curl([...resolveTo('api.allowed.test', port), `http://api.allowed.test:${port}/hello?x=1`])
  t.equal(ok.status, 200)
  t.equal(ok.body, 'hello GET /hello?x=1', 'the origin at the checked address answered')
  t.equal(http.requests.at(-1)?.headers.host, `api.allowed.test:${port}`, 'the origin saw the Host the client asked for')
  const allowed = await decision(proxy, (l) => l.target === `api.allowed.test:${port}`, 'the allow decision')
  t.match(allowed, { method: 'GET', decision: 'allow', listener: 'transparent', resolved: ['11.22.33.44'], chosen: '11.22.33.44', reason: 'allow-rule' })
  await logLine(proxy, (l) => l.message === 'closed' && l.id === allowed.id && l.status === 200, 'the closed line')

  const denied = await curl([...resolveTo('denied.test', port), `http://denied.test:${port}/`])
  t.equal(denied.status, 403)
  t.match(denied.headers, /Proxy-Status: proxy-gate; error=http_request_denied/)
  t.match(denied.body, new RegExp(`"denied\\.test:${port}"`), 'the body names the rules.json line')
  t.equal(dns.queries('denied.test'), 0, 'a name no rule allows is never resolved')
  t.match(await decision(proxy, (l) => l.target === `denied.test:${port}`, 'the denial'), { decision: 'deny', reason: 'no-rule', listener: 'transparent' })

  const guarded = await curl([...resolveTo('meta.allowed.test', port), `http://meta.allowed.test:${port}/latest/meta-data/`])
  t.equal(guarded.status, 403)
  t.match(guarded.headers, /error=destination_ip_prohibited/)
  t.equal(metadata.connections(), 0, 'the metadata stand-in was never dialled')

  const self = await curl([...resolveTo('self.allowed.test', port), `http://self.allowed.test:${port}/`])
  t.equal(self.status, 403)
  t.match(await decision(proxy, (l) => l.target === `self.allowed.test:${port}`, 'the self denial'), { reason: 'self-connection' }, 'the listener is proxy-gate itself')

  const limited = await curl([...resolveTo('limited.allowed.test', port), `http://limited.allowed.test:${port}/ok/1`])
  t.equal(limited.body, 'hello GET /ok/1', 'methods/paths rules apply: an allowed path')
  const refused = await curl([...resolveTo('limited.allowed.test', port), `http://limited.allowed.test:${port}/admin`])
  t.equal(refused.status, 403)
  t.match(await decision(proxy, (l) => l.path === '/admin', 'the path denial'), { reason: 'request-not-allowed', listener: 'transparent' })

  const byIp = await raw(port, `GET / HTTP/1.1\r\nHost: 11.22.33.44:${port}\r\n\r\n`)
  t.equal(byIp.status, 403, 'an IP-literal Host is decided as an IP target')
  t.match(await decision(proxy, (l) => l.target === `11.22.33.44:${port}`, 'the IP denial'), { reason: 'no-rule' })
  t.equal(http.requests.length, 2, 'only the two allowed requests reached the origin')
})

t.test('HTTP ports: malformed and misdirected requests get 400 (or 405) with Proxy-Status, and the listener stays up', { skip: NETNS_SKIP }, async (t) => {
  const { proxy, http } = await fixture(t)
  const port = http.port
  const cases: Array<[string, string, number, RegExp]> = [
    ['no Host', 'GET / HTTP/1.1\r\n\r\n', 400, /no Host header/],
    ['two Hosts', 'GET / HTTP/1.1\r\nHost: api.allowed.test\r\nHost: evil.test\r\n\r\n', 400, /more than one Host/],
    ['another port', `GET / HTTP/1.1\r\nHost: api.allowed.test:${port + 1}\r\n\r\n`, 400, new RegExp(`names port ${port + 1}, but the request came in on port ${port}`)],
    ['userinfo in Host', 'GET / HTTP/1.1\r\nHost: user:pw@api.allowed.test\r\n\r\n', 400, /bad Host header/],
    ['absolute-form', `GET http://api.allowed.test:${port}/ HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n`, 400, /is not origin-form/],
    ['CONNECT', `CONNECT api.allowed.test:443 HTTP/1.1\r\nHost: api.allowed.test:443\r\n\r\n`, 405, /CONNECT is not accepted on a transparent listener/],
    ['garbage', '\x16\x03\x01\x00\x05hello\r\n\r\n', 400, /malformed request/],
  ]
  for (const [what, request, status, details] of cases) {
    const res = await raw(port, request)
    t.equal(res.status, status, `${what}: ${status}`)
    t.equal(res.proxyStatus.error, 'http_request_error', `${what}: Proxy-Status error type`)
    t.match(res.proxyStatus.details ?? '', details, `${what}: Proxy-Status details`)
    t.ok(res.closed, `${what}: connection closed`)
  }
  t.equal(http.requests.length, 0, 'none of them reached the origin')
  t.match(await decision(proxy, (l) => l.method === 'CONNECT', 'the CONNECT refusal'), { listener: 'transparent', status: 405 })
  const after = await curl([...resolveTo('api.allowed.test', port), `http://api.allowed.test:${port}/still-up`])
  t.equal(after.body, 'hello GET /still-up', 'the listener still serves')
})

t.test('HTTP ports: a plain ws:// WebSocket reaches the allowed origin', { skip: NETNS_SKIP }, async (t) => {
  const { proxy, ws } = await fixture(t)
  const client = new WebSocket(`ws://ws.allowed.test:${ws.port}/chat`, { createConnection: () => netConnect(ws.port, SANDBOX) })
  t.teardown(() => client.terminate())
  const echoed = await new Promise<string>((resolve, reject) => {
    client.once('open', () => client.send('hi'))
    client.once('message', (data: Buffer) => resolve(data.toString()))
    client.once('error', reject)
  })
  t.equal(echoed, 'echo: hi')
  t.equal(ws.requests[0]?.headers.host, `ws.allowed.test:${ws.port}`)
  t.match(await decision(proxy, (l) => l.target === `ws.allowed.test:${ws.port}`, 'the upgrade decision'), { method: 'GET', decision: 'allow', listener: 'transparent', chosen: '11.22.33.45' })
})

t.test('TLS ports: the ClientHello server name decides, and proxy-gate dials its checked address', { skip: NETNS_SKIP || OPENSSL_SKIP }, async (t) => {
  const { proxy, dns, https, inside } = await fixture(t)
  const port = https.port
  const ca = https.tls.cert

  const ok = await curlTls(`https://api.allowed.test:${port}/secure`, port, ca)
  t.same(ok, { code: 0, status: 200, body: 'hello GET /secure' }, 'curl reached the origin through proxy-gate')
  t.equal(https.requests.at(-1)?.headers.host, `api.allowed.test:${port}`)
  const allowed = await decision(proxy, (l) => l.method === 'TLS' && l.decision === 'allow', 'the allow decision')
  t.match(allowed, { target: `api.allowed.test:${port}`, sni: 'api.allowed.test', listener: 'transparent', chosen: '11.22.33.44', rule: /^allow\[0\] api\.allowed\.test:/ })
  const closed = await logLine(proxy, (l) => l.message === 'closed' && l.id === allowed.id, 'the closed line')
  t.ok(Number(closed.bytesFromClient) > 0 && Number(closed.bytesToClient) > 0, 'the closed line counts the bytes, ClientHello included')
  const before = https.connections()

  const fronted = await sClient(['-connect', `${SANDBOX}:${port}`, '-servername', 'evil.test'])
  t.equal(fronted.code, 1, 'openssl s_client -servername evil.test fails', { output: fronted.output })
  t.notMatch(fronted.output, /CONNECTION ESTABLISHED/, 'no handshake completed')
  t.match(await decision(proxy, (l) => l.sni === 'evil.test', 'the fronting denial'), { decision: 'deny', reason: 'no-rule', target: `evil.test:${port}`, listener: 'transparent' })
  t.equal(dns.queries('evil.test'), 0, 'the server name no rule allows was never resolved')

  const anonymous = await handshake(port, undefined, ca)
  t.equal(anonymous.result, 'closed', 'no SNI (an IP-address host sends none)')
  t.match(await decision(proxy, (l) => l.reason === 'sni-missing', 'the sni-missing denial'), { method: 'TLS', target: `${SANDBOX}:${port}`, listener: 'transparent' })

  const plain = await rawExchange(port, 'GET / HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n', { host: SANDBOX })
  t.ok(plain.closed, 'non-TLS bytes: closed')
  t.equal(plain.text, '', 'without an answer')
  t.match(await decision(proxy, (l) => l.reason === 'not-tls', 'the not-tls denial'), { detail: /non-TLS bytes to 127\.80\.0\.1/ })

  const guarded = await handshake(port, 'inside.allowed.test', ca)
  t.equal(guarded.result, 'closed', 'a name that resolves to a private address')
  t.match(await decision(proxy, (l) => l.sni === 'inside.allowed.test', 'the guard denial'), { reason: 'address-prohibited', resolved: ['10.0.0.1'] })
  t.equal(inside.connections(), 0, 'the private stand-in was never dialled')
  t.equal(https.connections(), before, 'no refused connection reached the origin')
})

t.test('TLS ports: rules with methods/paths open the connection with the local CA, as for a CONNECT', { skip: NETNS_SKIP }, async (t) => {
  const ca = await createCa()
  const https = await startHttpsUpstream('11.22.33.46', ['limited.allowed.test'])
  const dns = await startDns({ 'limited.allowed.test': { A: ['11.22.33.46'] } })
  const rules = {
    allow: [{ host: 'limited.allowed.test', ports: [https.port], methods: ['GET'], paths: ['/ok/**'] }],
    dns: { servers: [dns.server] },
    sandbox: { socks: false, address: '127.80.0.4', dns: false, http: [], tls: [https.port] },
  }
  const proxy = await startProxy(rules, { ca, upstreamCa: [https.tls.cert] })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([https.close(), dns.close()])
  })
  const ok = await curlTls(`https://limited.allowed.test:${https.port}/ok/1`, https.port, ca.certPem, '127.80.0.4')
  t.same(ok, { code: 0, status: 200, body: 'hello GET /ok/1' }, 'an allowed path, with a leaf from the local CA')
  t.match(await decision(proxy, (l) => l.intercepted === true && l.path === '/ok/1', 'the inner allow'), { decision: 'allow', chosen: '11.22.33.46' })
  const refused = await curlTls(`https://limited.allowed.test:${https.port}/admin`, https.port, ca.certPem, '127.80.0.4')
  t.equal(refused.status, 403, 'another path: 403 inside the connection')
  t.match(refused.body, /denied GET limited\.allowed\.test:\d+\/admin/)
  t.equal(https.requests.length, 1, 'only the allowed request reached the origin')
})

t.test('TLS ports: a bad or late ClientHello is refused', { skip: NETNS_SKIP }, async (t) => {
  const { proxy, https } = await fixture(t)
  const malformed = await rawExchange(https.port, Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00]), { host: SANDBOX })
  t.ok(malformed.closed)
  t.match(await decision(proxy, (l) => l.reason === 'bad-client-hello', 'the malformed denial'), { detail: /malformed TLS ClientHello on 127\.80\.0\.1/ })
  t.equal(https.connections(), 0)

  const port = await closedPort()
  const slow = await startProxy({ tls: { helloTimeoutMs: 200 }, sandbox: { socks: false, address: '127.80.0.5', dns: false, http: [], tls: [port] } })
  t.teardown(() => slow.close())
  const silent = await rawSession(port, '127.80.0.5')
  await silent.closed
  t.match(await decision(slow, (l) => l.reason === 'bad-client-hello', 'the late denial'), { detail: /no TLS ClientHello within 200 ms on 127\.80\.0\.5/ })
})

t.test('reload: open transparent connections the new rules deny are revoked; new listeners need a restart', { skip: NETNS_SKIP }, async (t) => {
  const { proxy, dns, http, https, ws } = await fixture(t, '127.80.0.2')
  const open = await handshake(https.port, 'api.allowed.test', https.tls.cert, '127.80.0.2')
  t.equal(open.result, 'ok')
  const gone = new Promise<void>((resolve) => open.socket.once('close', () => resolve()))
  const rules = rulesFor(http, https, ws, dns, '127.80.0.2')
  const outcome = proxy.reload({ ...rules, allow: [`ws.allowed.test:${ws.port}`] })
  t.equal(outcome.closed, 1, 'one open connection closed')
  await gone
  t.match(await logLine(proxy, (l) => l.message === 'revoked', 'the revoked line'), { kind: 'tunnel', target: `api.allowed.test:${https.port}`, reason: 'no-rule' })
  const refused = await handshake(https.port, 'api.allowed.test', https.tls.cert, '127.80.0.2')
  t.equal(refused.result, 'closed', 'new connections follow the new rules')

  proxy.reload({ ...rules, sandbox: { socks: false, address: '127.80.0.2', dns: false, http: [http.port], tls: [https.port] } })
  t.match(await logLine(proxy, (l) => l.message === '"sandbox" listeners changed (address, http or tls ports): restart proxy-gate to apply it', 'the warning'), { level: 'warn' })
})

t.test('lifecycle: a taken port fails listen() naming it; ready while listening; shutdown closes the listeners', async (t) => {
  const taken = await startCanary('127.80.0.3')
  t.teardown(() => taken.close())
  await t.rejects(startProxy({ sandbox: { socks: false, address: '127.80.0.3', dns: false, http: [taken.port], tls: [] } }), { message: new RegExp(`transparent listener 127\\.80\\.0\\.3:${taken.port} \\(sandbox\\.http\\): .*EADDRINUSE`) })

  const proxy = await startProxy({ sandbox: { socks: false, address: '127.80.0.3', dns: false, http: [], tls: [taken.port + 1] } })
  t.ok(proxy.proxy.ready(), 'ready once every listener is bound')
  const closed = proxy.close()
  t.notOk(proxy.proxy.ready(), 'not ready while shutting down')
  await closed
  const refused = await new Promise<string>((resolve) => netConnect(taken.port + 1, '127.80.0.3').once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? '')).once('connect', () => resolve('connected')))
  t.equal(refused, 'ECONNREFUSED', 'the transparent listener is gone')
})
