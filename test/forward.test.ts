// Plain HTTP forwarding (absolute-form requests): real clients (undici ProxyAgent without a
// tunnel, curl -x) and raw sockets for malformed input, against recording upstreams on loopback,
// a loopback DNS server for names and canaries that must never see a connection.
// Corpus cases covered here: D 41, 43, 44, 46, 47, 49; F 64, 65, 67 (plain-HTTP side); I 82, 83,
// 85, 86, 88, 89, 91; J 94, 95, 98; K 99/100 (slow heads and bodies), 104, 106. Not here: I 92
// (the parent proxy holding back optimistic tunnel payload: test/upstream.test.ts),
// J 97 (test/upgrade.test.ts), K 101 and 103 (CONNECT tunnel idle/half-close and connect timeouts:
// CONNECT tests; a connect timeout needs a black-holed address, which loopback cannot provide).
import { createServer, type AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import { connect as tlsConnect } from 'node:tls'
import t from 'tap'
import { ProxyAgent, request } from 'undici'
import { curl } from './helpers/curl.js'
import { startDns, type TestDns } from './helpers/dns.js'
import {
  closedPort,
  completeResponses,
  NETNS_SKIP,
  parseResponses,
  rawExchange,
  rawSession,
  startCanary,
  startHttpUpstream,
  statusOf,
  type Canary,
  type Upstream,
} from './helpers/net.js'
import { startProxy, type LogLine, type TestProxy } from './helpers/proxy.js'

process.on('unhandledRejection', (error) => t.fail(`unhandled rejection: ${String(error)}`))
process.on('uncaughtException', (error) => t.fail(`uncaught exception: ${String(error)}`))

interface Teardown {
  teardown(fn: () => unknown): void
}

type Handler = Parameters<typeof startHttpUpstream>[1]

interface Fixture {
  readonly proxy: TestProxy
  readonly up: Upstream
  readonly canary: Canary
  readonly dns: TestDns
  /** api.allowed.test:PORT, allowed, resolving to the upstream on 127.0.0.1 */
  readonly api: string
  /** evil.test:PORT, not allowed; its port is the canary's */
  readonly evil: string
}

/** An allowed upstream (by name and IP), a forbidden canary, a loopback DNS server, a proxy. */
async function fixture(t: Teardown, options: { handler?: Handler; limits?: Record<string, number>; allow?: string[] } = {}): Promise<Fixture> {
  const up = await startHttpUpstream('127.0.0.1', options.handler)
  const canary = await startCanary('127.0.0.1')
  const dns = await startDns({
    'api.allowed.test': { A: ['127.0.0.1'] },
    'evil.test': { A: ['127.0.0.1'] },
    'self.example.com': { A: ['127.0.0.1'] },
  })
  const proxy = await startProxy({
    allow: [`api.allowed.test:${up.port}`, `127.0.0.1:${up.port}`, ...(options.allow ?? [])],
    dns: { servers: [dns.server], timeoutMs: 2000 },
    ...(options.limits ? { limits: options.limits } : {}),
  })
  t.teardown(async () => {
    await proxy.close()
    await up.close()
    await canary.close()
    await dns.close()
  })
  return { proxy, up, canary, dns, api: `api.allowed.test:${up.port}`, evil: `evil.test:${canary.port}` }
}

function head(lines: readonly string[]): string {
  return `${lines.join('\r\n')}\r\n\r\n`
}

function decisions(proxy: TestProxy): LogLine[] {
  return proxy.logs().filter((l) => l.message === 'decision')
}

/** Waits until at least `n` decision lines were logged (winston writes asynchronously), then returns them all. */
async function decisionsAtLeast(proxy: TestProxy, n: number): Promise<LogLine[]> {
  await proxy.waitForLog(() => decisions(proxy).length >= n)
  return decisions(proxy)
}

function decisionFor(proxy: TestProxy, method: string, target: string): Promise<LogLine> {
  return proxy.waitForLog((l) => l.message === 'decision' && l.method === method && l.target === target)
}

function plainAgent(t: Teardown, proxy: TestProxy, token?: string): ProxyAgent {
  const agent = new ProxyAgent({ uri: proxy.url, proxyTunnel: false, ...(token ? { token } : {}) })
  t.teardown(() => agent.close())
  return agent
}

/** The bytes of a real TLS ClientHello, captured from node:tls on a loopback listener. */
function captureClientHello(): Promise<Buffer> {
  return new Promise((resolve) => {
    const server = createServer((s) => {
      s.once('data', (d: Buffer) => {
        resolve(d)
        s.destroy()
        server.close()
      })
    })
    server.listen(0, '127.0.0.1', () => {
      const client = tlsConnect({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, servername: 'api.allowed.test' })
      client.on('error', () => client.destroy())
    })
  })
}

/** Status of a fresh request on a new connection: 200 when the proxy stayed up (implicit assertion d). */
async function freshStatus(f: Fixture): Promise<number | undefined> {
  const r = await rawExchange(f.proxy.port, head([`GET http://${f.api}/alive HTTP/1.1`, `Host: ${f.api}`]), { until: (s) => completeResponses(s) >= 1 })
  return statusOf(r.text)
}

t.test('undici ProxyAgent (absolute-form, no tunnel) forwards by name and by IP; Host comes from the URL', async (t) => {
  const f = await fixture(t)
  const agent = plainAgent(t, f.proxy)
  const byName = await request(`http://${f.api}/path/x?q=1&r=%20`, { dispatcher: agent, headers: { host: 'evil.test', 'x-client': 'one' } })
  t.equal(byName.statusCode, 200)
  t.equal(await byName.body.text(), 'hello GET /path/x?q=1&r=%20')
  const byIp = await request(`http://127.0.0.1:${f.up.port}/ip`, { dispatcher: agent })
  t.equal(byIp.statusCode, 200)
  t.equal(await byIp.body.text(), 'hello GET /ip')
  t.equal(f.up.requests.length, 2)
  t.equal(f.up.requests[0]?.url, '/path/x?q=1&r=%20', 'origin-form path and query upstream')
  t.equal(f.up.requests[0]?.headers.host, f.api, 'a disagreeing Host header is rewritten from the URL')
  t.equal(f.up.requests[0]?.headers['x-client'], 'one', 'end-to-end headers pass')
  t.equal(f.up.requests[1]?.headers.host, `127.0.0.1:${f.up.port}`)
  t.equal(f.dns.queries('evil.test'), 0, 'the Host header was never looked up')

  const named = await decisionFor(f.proxy, 'GET', f.api)
  t.match(named, { decision: 'allow', reason: 'allow-rule', rule: `allow[0] ${f.api}`, resolved: ['127.0.0.1'], chosen: '127.0.0.1', mode: 'enforce', wouldDeny: false })
  t.match(named.client, /^127\.0\.0\.1:\d+$/)
  t.type(named.id, 'string')
  const literal = await decisionFor(f.proxy, 'GET', `127.0.0.1:${f.up.port}`)
  t.match(literal, { decision: 'allow', rule: `allow[1] 127.0.0.1:${f.up.port}`, chosen: '127.0.0.1' })
  t.not(literal.id, named.id, 'each request has its own id')
  const closed = await f.proxy.waitForLog((l) => l.message === 'closed' && l.id === named.id)
  t.match(closed, { kind: 'forward', chosen: '127.0.0.1', status: 200 })
})

t.test('undici ProxyAgent: a denied name is 403 with Proxy-Status, never resolved, never dialled', async (t) => {
  const f = await fixture(t)
  const agent = plainAgent(t, f.proxy)
  const res = await request(`http://${f.evil}/secret`, { dispatcher: agent, headers: { host: f.api } })
  t.equal(res.statusCode, 403)
  t.match(res.headers['proxy-status'], new RegExp(`^proxy-gate; error=http_request_denied; details="no allow rule matches ${f.evil}`))
  const body = await res.body.text()
  t.match(body, `denied GET ${f.evil}`)
  t.match(body, `"${f.evil}"`, 'the body names the rules.json entry that would allow it')
  t.equal(f.canary.connections(), 0)
  t.equal(f.dns.queries('evil.test'), 0, 'denied before DNS')
  t.equal(f.up.requests.length, 0, 'an allowed Host header does not route')
  t.match(await decisionFor(f.proxy, 'GET', f.evil), { decision: 'deny', reason: 'no-rule' })
})

t.test('request bodies are forwarded intact: Content-Length and chunked', async (t) => {
  const f = await fixture(t)
  const agent = plainAgent(t, f.proxy)
  const big = Array.from({ length: 20_000 }, (_, i) => `line ${i};`).join('')
  const fixed = await request(`http://${f.api}/upload`, { dispatcher: agent, method: 'POST', body: big })
  t.equal(fixed.statusCode, 200)
  await fixed.body.text()
  const streamed = await request(`http://${f.api}/stream`, { dispatcher: agent, method: 'PUT', body: Readable.from(['part-1 ', 'part-2 ', 'part-3']) })
  t.equal(streamed.statusCode, 200)
  await streamed.body.text()
  t.equal(f.up.requests[0]?.body, big, 'Content-Length body')
  t.equal(f.up.requests[0]?.headers['content-length'], String(big.length))
  t.equal(f.up.requests[1]?.body, 'part-1 part-2 part-3', 'streamed body')

  const raw = await rawExchange(
    f.proxy.port,
    `${head([`POST http://${f.api}/chunked HTTP/1.1`, `Host: ${f.api}`, 'Transfer-Encoding: chunked'])}5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n`,
    { until: (s) => completeResponses(s) >= 1 },
  )
  t.equal(statusOf(raw.text), 200)
  const chunked = f.up.requests[2]
  t.equal(chunked?.body, 'hello world', 'chunked body from a raw client')
  t.notOk(chunked?.headers['content-length'] !== undefined && chunked.headers['transfer-encoding'] !== undefined, 'one framing upstream, not both')
})

t.test('curl -x: plain HTTP through the proxy, allowed and denied', async (t) => {
  const f = await fixture(t)
  const ok = await curl(['-x', f.proxy.url, `http://${f.api}/curl?x=1`])
  t.equal(ok.status, 200)
  t.equal(ok.body, 'hello GET /curl?x=1')
  const post = await curl(['-x', f.proxy.url, '--data-binary', 'curl body', '-H', 'Host: evil.test', `http://${f.api}/post`])
  t.equal(post.status, 200)
  t.equal(f.up.requests[1]?.body, 'curl body')
  t.equal(f.up.requests[1]?.headers.host, f.api, "curl's custom Host header is rewritten")
  const denied = await curl(['-x', f.proxy.url, `http://${f.evil}/`])
  t.equal(denied.status, 403)
  t.match(denied.headers, /Proxy-Status: proxy-gate; error=http_request_denied; details="/)
  t.match(denied.body, `"${f.evil}"`)
  t.equal(f.canary.connections(), 0)
  t.equal(f.dns.queries('evil.test'), 0)
})

t.test('case 64: a forbidden URI with an allowed Host header is 403', async (t) => {
  const f = await fixture(t)
  const r = await rawExchange(f.proxy.port, head([`GET http://${f.evil}/ HTTP/1.1`, `Host: ${f.api}`]), { until: (s) => completeResponses(s) >= 1 })
  t.equal(statusOf(r.text), 403)
  t.match(r.text, /Proxy-Status: proxy-gate; error=http_request_denied/)
  t.equal(f.up.connections(), 0, 'the allowed Host was not dialled')
  t.equal(f.canary.connections(), 0, 'the forbidden URI was not dialled')
  t.equal(f.dns.queries('evil.test'), 0)
})

t.test('case 65 and 86: duplicate Host, "Host : x" -> 400, nothing forwarded', async (t) => {
  const f = await fixture(t)
  const dup = await rawExchange(f.proxy.port, head([`GET http://${f.api}/ HTTP/1.1`, `Host: ${f.api}`, `Host: ${f.evil}`]))
  t.equal(statusOf(dup.text), 400)
  t.match(dup.text, /more than one Host header/)
  t.ok(dup.closed, 'closed after the 400')
  const spaced = await rawExchange(f.proxy.port, head([`GET http://${f.api}/ HTTP/1.1`, 'Host : evil.test']))
  t.equal(statusOf(spaced.text), 400)
  t.ok(spaced.closed)
  t.equal(f.up.connections(), 0)
  t.equal(f.canary.connections(), 0)
  t.equal(f.dns.totalQueries(), 0)
  t.equal(await freshStatus(f), 200, 'a fresh request afterwards is served')
})

t.test('corpus D: absolute-form parser differentials are 400 and dial nothing', async (t) => {
  const f = await fixture(t)
  const port = f.up.port
  const cases: Array<{ name: string; target: string; body?: RegExp }> = [
    { name: '41 userinfo', target: `http://api.allowed.test:${port}@evil.test/`, body: /userinfo/ },
    { name: '41 userinfo with a password', target: `http://user:hunter2@api.allowed.test:${port}/`, body: /userinfo/ },
    { name: '41 userinfo with an "@" in the password', target: `http://user:pa@ssw0rd@api.allowed.test:${port}/`, body: /userinfo/ },
    { name: '43 backslash', target: `http://api.allowed.test:${port}\\@evil.test/` },
    { name: '43 fragment', target: `http://evil.test#@api.allowed.test:${port}/` },
    { name: '44 http:host', target: `http:api.allowed.test:${port}/` },
    { name: '44 http:/host', target: `http:/api.allowed.test:${port}/` },
    { name: '44 http:\\\\host', target: `http:\\\\api.allowed.test:${port}/` },
    { name: '46 https:// absolute-form', target: `https://api.allowed.test:${port}/`, body: /use CONNECT/ },
    { name: 'ftp scheme', target: `ftp://api.allowed.test:${port}/`, body: /unsupported scheme/ },
    { name: '% in the host', target: `http://api%2eallowed.test:${port}/`, body: /percent-encoding/ },
    { name: '47 port 0', target: 'http://api.allowed.test:0/', body: /port "0"/ },
    { name: '47 port 99999', target: 'http://api.allowed.test:99999/', body: /port "99999"/ },
    { name: '47 port +80', target: 'http://api.allowed.test:+80/', body: /port "\+80"/ },
    { name: '47 port :80:80', target: 'http://api.allowed.test:80:80/' },
    { name: '47 port 080 (leading zero)', target: 'http://api.allowed.test:080/', body: /port "080"/ },
    { name: '47 empty port', target: 'http://api.allowed.test:/' },
    { name: 'lenient IPv4 2130706433', target: 'http://2130706433/', body: /not a canonical IPv4/ },
    { name: 'lenient IPv4 0x7f.1', target: 'http://0x7f.1/', body: /not a canonical IPv4/ },
    { name: 'IPv6 without brackets', target: 'http://::1:80/' },
    { name: 'IPv6 zone id', target: 'http://[fe80::1%25lo]:80/' },
    { name: 'empty host', target: 'http:///path' },
  ]
  for (const c of cases) {
    const r = await rawExchange(f.proxy.port, head([`GET ${c.target} HTTP/1.1`, 'Host: api.allowed.test']))
    t.equal(statusOf(r.text), 400, `${c.name}: 400`)
    t.ok(r.closed, `${c.name}: connection closed`)
    if (c.body) t.match(r.text, c.body, `${c.name}: says why`)
    t.match(r.text, /Proxy-Status: proxy-gate; error=http_request_error/, `${c.name}: Proxy-Status`)
  }
  const logged = await decisionsAtLeast(f.proxy, cases.length)
  t.equal(logged.length, cases.length, 'one decision line per rejected request')
  t.ok(
    logged.every((l) => l.decision === 'error' && l.status === 400),
    'each logged as an error with its status',
  )
  t.equal(f.up.connections(), 0, 'nothing reached the upstream')
  t.equal(f.canary.connections(), 0)
  t.equal(f.dns.totalQueries(), 0, 'no name was resolved')
  const logs = JSON.stringify(f.proxy.logs())
  t.notMatch(logs, /hunter2|ssw0rd/, 'URL credentials are not logged')
  t.equal(await freshStatus(f), 200, 'a fresh request afterwards is served')
})

t.test('case 46 pin: plain http:// to port 443 is checked (and would be dialled) as port 443', async (t) => {
  const f = await fixture(t)
  const r = await rawExchange(f.proxy.port, head(['GET http://api.allowed.test:443/ HTTP/1.1', 'Host: api.allowed.test']), { until: (s) => completeResponses(s) >= 1 })
  t.equal(statusOf(r.text), 403)
  t.match(r.text, /no allow rule matches api\.allowed\.test:443/)
  t.equal(f.dns.totalQueries(), 0)
})

t.test('case 49: the proxy as its own target is 403, even when an IP rule covers loopback on every port', async (t) => {
  const f = await fixture(t, { allow: ['127.0.0.0/8:*', 'self.example.com:*'] })
  const self = `127.0.0.1:${f.proxy.port}`
  const before = decisions(f.proxy).length
  const r = await rawExchange(f.proxy.port, head([`GET http://${self}/healthz HTTP/1.1`, `Host: ${self}`]), { until: (s) => completeResponses(s) >= 1 })
  t.equal(statusOf(r.text), 403)
  t.match(r.text, /Proxy-Status: proxy-gate; error=destination_ip_prohibited; details="127\.0\.0\.1:\d+ is proxy-gate's own listener"/)
  const byName = await rawExchange(f.proxy.port, head([`GET http://self.example.com:${f.proxy.port}/ HTTP/1.1`, 'Host: self.example.com']), {
    until: (s) => completeResponses(s) >= 1,
  })
  t.equal(statusOf(byName.text), 403, 'a name resolving to the proxy itself')
  t.match(byName.text, /error=destination_ip_prohibited/)
  t.equal((await decisionsAtLeast(f.proxy, before + 2)).length, before + 2, 'one decision per request: no recursive request reached the proxy')
  t.match(await decisionFor(f.proxy, 'GET', self), { decision: 'deny', reason: 'self-connection' })
  const other = await rawExchange(f.proxy.port, head([`GET http://127.0.0.1:${f.up.port}/ HTTP/1.1`, 'Host: x']), { until: (s) => completeResponses(s) >= 1 })
  t.equal(statusOf(other.text), 200, 'the loopback rule itself works')
})

t.test('case 49: a proxy listening on all addresses refuses its own non-loopback address', { skip: NETNS_SKIP }, async (t) => {
  const proxy = await startProxy({ listen: '0.0.0.0:0', allow: ['11.22.33.44/32:*'] })
  t.teardown(() => proxy.close())
  const target = `11.22.33.44:${proxy.port}`
  const r = await rawExchange(proxy.port, head([`GET http://${target}/ HTTP/1.1`, `Host: ${target}`]), { until: (s) => completeResponses(s) >= 1 })
  t.equal(statusOf(r.text), 403)
  t.match(r.text, /own listener/)
  t.match(await decisionFor(proxy, 'GET', target), { decision: 'deny', reason: 'self-connection' })
  t.equal((await decisionsAtLeast(proxy, 1)).length, 1, 'no recursive request')
})

t.test('cases 67, 94, 95: hop-by-hop, Connection-listed, proxy and routing headers are not forwarded', async (t) => {
  const f = await fixture(t)
  const secret = Buffer.from('alice:pr0xy-s3cret').toString('base64')
  const r = await rawExchange(
    f.proxy.port,
    head([
      `GET http://${f.api}/hop HTTP/1.1`,
      'Host: evil.test',
      'Proxy-Connection: keep-alive',
      'Keep-Alive: timeout=5',
      'TE: trailers',
      'Trailer: x-trail',
      'Upgrade: foo',
      'Connection: close, X-Api-Key',
      'X-Api-Key: k-123',
      `Proxy-Authorization: Basic ${secret}`,
      'Proxy-Custom: p',
      'Forwarded: host=evil.test;for=127.0.0.1',
      'X-Forwarded-For: 10.0.0.1',
      'X-Forwarded-Host: evil.test',
      'X-Forwarded-Proto: https',
      'X-Forwarded-Port: 443',
      'X-Real-IP: 10.0.0.1',
      'X-Keep-Me: yes',
      '__proto__: x',
    ]),
  )
  t.equal(statusOf(r.text), 200)
  t.ok(r.closed, 'Connection: close from the client is honoured on its own hop')
  const got = f.up.requests[0]
  const names = (got?.rawHeaders ?? []).filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase())
  for (const gone of [
    'proxy-connection',
    'keep-alive',
    'te',
    'trailer',
    'upgrade',
    'x-api-key',
    'proxy-authorization',
    'proxy-custom',
    'forwarded',
    'x-forwarded-for',
    'x-forwarded-host',
    'x-forwarded-proto',
    'x-forwarded-port',
    'x-real-ip',
  ]) {
    t.notOk(names.includes(gone), `${gone} is not forwarded`)
  }
  t.notMatch(got?.headers.connection ?? '', /x-api-key/i)
  t.equal(got?.headers.host, f.api)
  t.equal(got?.headers['x-keep-me'], 'yes', 'end-to-end headers still pass')
  t.ok(names.includes('__proto__'), 'a __proto__ header is an ordinary header (case 106)')
  t.equal(names.filter((n) => n === 'host').length, 1)
  t.notMatch(JSON.stringify(f.proxy.logs()), secret, 'Proxy-Authorization is not logged')
})

t.test('case 95: Connection cannot remove Host or framing; odd Connection values do not crash', async (t) => {
  const f = await fixture(t)
  const ask = (lines: string[], body: string): Promise<{ text: string }> =>
    rawExchange(f.proxy.port, head(lines) + body, { until: (s) => completeResponses(s) >= 1 })
  const a = await ask([`POST http://${f.api}/a HTTP/1.1`, `Host: ${f.api}`, 'Connection: Host, Content-Length', 'Content-Length: 5'], 'hello')
  t.equal(statusOf(a.text), 200)
  t.equal(f.up.requests[0]?.headers.host, f.api, 'Host kept')
  t.equal(f.up.requests[0]?.headers['content-length'], '5', 'Content-Length kept')
  t.equal(f.up.requests[0]?.body, 'hello')
  const b = await ask([`POST http://${f.api}/b HTTP/1.1`, `Host: ${f.api}`, 'Connection: Transfer-Encoding', 'Transfer-Encoding: chunked'], '3\r\nabc\r\n0\r\n\r\n')
  t.equal(statusOf(b.text), 200)
  t.equal(f.up.requests[1]?.body, 'abc', 'chunked framing survives "Connection: Transfer-Encoding"')
  const c = await ask([`GET http://${f.api}/c HTTP/1.1`, `Host: ${f.api}`, 'Connection: Connection, Connection, x', 'X: 1'], '')
  t.equal(statusOf(c.text), 200)
  t.equal(f.up.requests[2]?.headers.x, undefined)
  const d = await ask([`GET http://${f.api}/d HTTP/1.1`, `Host: ${f.api}`, 'Connection: Proxy-Authorization', 'Proxy-Authorization: Basic c2VjcmV0'], '')
  t.equal(statusOf(d.text), 200)
  t.equal(f.up.requests[3]?.headers['proxy-authorization'], undefined, 'still stripped')
})

t.test('case 94: response-side hop-by-hop and Connection-listed headers are removed', async (t) => {
  const f = await fixture(t, {
    handler: (_req, res) => {
      res.setHeader('Connection', 'X-Upstream-Private')
      res.setHeader('X-Upstream-Private', 'internal')
      res.setHeader('Keep-Alive', 'timeout=99, max=7')
      res.setHeader('Proxy-Authenticate', 'Basic realm="upstream"')
      res.setHeader('Proxy-Connection', 'keep-alive')
      res.setHeader('X-Visible', 'yes')
      res.end('body')
    },
  })
  const r = await rawExchange(f.proxy.port, head([`GET http://${f.api}/ HTTP/1.1`, `Host: ${f.api}`]), { until: (s) => completeResponses(s) >= 1 })
  const [res] = parseResponses(r.text)
  t.equal(res?.status, 200)
  t.equal(res?.body, 'body')
  t.same(res?.headers['x-visible'], ['yes'])
  t.equal(res?.headers['x-upstream-private'], undefined, 'Connection-listed header removed')
  t.notMatch(res?.head ?? '', /max=7|timeout=99/, "the upstream's Keep-Alive is not passed on")
  t.equal(res?.headers['proxy-authenticate'], undefined)
  t.equal(res?.headers['proxy-connection'], undefined)
  t.notMatch(res?.headers.connection?.join() ?? '', /x-upstream-private/i)
})

t.test('Proxy-Authorization from undici never reaches the origin and never appears in logs', async (t) => {
  const f = await fixture(t)
  const secret = Buffer.from('bob:undici-pa55word').toString('base64')
  const agent = plainAgent(t, f.proxy, `Basic ${secret}`)
  const ok = await request(`http://${f.api}/auth`, { dispatcher: agent })
  t.equal(ok.statusCode, 200)
  await ok.body.text()
  const denied = await request(`http://${f.evil}/auth`, { dispatcher: agent })
  t.equal(denied.statusCode, 403)
  t.notMatch(await denied.body.text(), secret, 'not echoed in the denial')
  t.equal(f.up.requests[0]?.headers['proxy-authorization'], undefined)
  const logs = JSON.stringify(f.proxy.logs())
  t.notMatch(logs, secret)
  t.notMatch(logs, 'undici-pa55word')
})

t.test('corpus I: framing tricks are 400 and nothing is forwarded', async (t) => {
  const f = await fixture(t)
  const start = `POST http://${f.api}/ HTTP/1.1\r\nHost: ${f.api}\r\n`
  const cases: Array<{ name: string; bytes: string; status?: number }> = [
    { name: '82 duplicate Content-Length', bytes: `${start}Content-Length: 0\r\nContent-Length: 5\r\n\r\nhello` },
    { name: '82 list Content-Length', bytes: `${start}Content-Length: 5, 5\r\n\r\nhello` },
    { name: '83 Content-Length +5', bytes: `${start}Content-Length: +5\r\n\r\nhello` },
    { name: '83 Content-Length -1', bytes: `${start}Content-Length: -1\r\n\r\nhello` },
    { name: '83 Content-Length "1 2"', bytes: `${start}Content-Length: 1 2\r\n\r\nhello` },
    { name: '83 overflowing Content-Length', bytes: `${start}Content-Length: 99999999999999999999\r\n\r\nhello` },
    { name: 'Content-Length with Transfer-Encoding', bytes: `${start}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n` },
    { name: '85 HTTP/1.0 with Transfer-Encoding', bytes: `POST http://${f.api}/ HTTP/1.0\r\nHost: ${f.api}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n` },
    { name: '86 bare LF', bytes: `GET http://${f.api}/ HTTP/1.1\nHost: ${f.api}\n\n` },
    { name: '86 CR without LF ending the head', bytes: `GET http://${f.api}/ HTTP/1.1\r\nHost: ${f.api}\r\n\rX` },
    { name: '86 obs-fold', bytes: `GET http://${f.api}/ HTTP/1.1\r\nHost: ${f.api}\r\nX-A: a\r\n b\r\n\r\n` },
    { name: '86 leading space before Content-Length', bytes: `${start} Content-Length: 5\r\n\r\nhello` },
    { name: '86 space before the colon', bytes: `GET http://${f.api}/ HTTP/1.1\r\nHost : ${f.api}\r\n\r\n` },
    {
      name: '89 2,005 headers',
      bytes: `${start}${Array.from({ length: 2005 }, (_, i) => `a${i}:b\r\n`).join('')}Content-Length: 5\r\n\r\nhello`,
      status: 431,
    },
  ]
  for (const c of cases) {
    const r = await rawExchange(f.proxy.port, c.bytes)
    const status = statusOf(r.text)
    t.equal(status, c.status ?? 400, `${c.name}: status`)
    t.ok(r.closed, `${c.name}: connection closed`)
    t.match(r.text, /Proxy-Status: proxy-gate; error=http_request_error/, `${c.name}: Proxy-Status`)
    t.equal(parseResponses(r.text).length, 1, `${c.name}: exactly one response`)
  }
  const logged = await decisionsAtLeast(f.proxy, cases.length)
  t.equal(logged.length, cases.length, 'one decision line per rejected request')
  t.ok(
    logged.every((l) => l.decision === 'error'),
    'each logged as an error',
  )
  t.equal(f.up.connections(), 0, 'nothing reached the upstream')
  t.equal(f.up.requests.length, 0)
  t.equal(await freshStatus(f), 200, 'a fresh request afterwards is served')
})

t.test('case 91: pipelined allowed then forbidden request -> 200 then 403; one regenerated request upstream', async (t) => {
  let received = ''
  const sink = await startCanary('127.0.0.1', 0, (s) => {
    let answered = false
    s.on('data', () => {
      received = sink.received()
      if (answered || !received.includes('\r\n\r\n')) return
      answered = true
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
    })
  })
  const f = await fixture(t, { allow: [`api.allowed.test:${sink.port}`, `127.0.0.1:${sink.port}`] })
  t.teardown(() => sink.close())
  const api = `api.allowed.test:${sink.port}`
  const r = await rawExchange(f.proxy.port, `${head([`GET http://${api}/ HTTP/1.1`, `Host: ${api}`])}${head([`GET http://${f.evil}/ HTTP/1.1`, 'Host: evil.test'])}`, {
    until: (s) => completeResponses(s) >= 2,
  })
  t.same(
    parseResponses(r.text).map((x) => x.status),
    [200, 403],
  )
  t.equal(sink.connections(), 1)
  t.match(received, /^GET \/ HTTP\/1\.1\r\n/, 'origin-form request line, regenerated')
  t.equal(received.match(/HTTP\/1\.1\r\n/g)?.length, 1, 'exactly one request upstream')
  t.notMatch(received, /evil/i, 'no byte of the second request reached the upstream')
  t.equal(f.canary.connections(), 0)
  t.equal(f.dns.queries('evil.test'), 0)
})

t.test("a denied request's body is never read as a request", async (t) => {
  const f = await fixture(t)
  const smuggled = head([`GET http://${f.api}/smuggled HTTP/1.1`, `Host: ${f.api}`])
  const r = await rawExchange(f.proxy.port, head([`POST http://${f.evil}/ HTTP/1.1`, 'Host: evil.test', `Content-Length: ${smuggled.length}`]) + smuggled)
  t.equal(statusOf(r.text), 403)
  t.ok(r.closed, 'closed after a denial that left a body unread')
  t.equal(parseResponses(r.text).length, 1, 'one response only')
  t.equal(f.up.connections(), 0, 'the body was not forwarded or parsed as a request')
  t.equal(f.canary.connections(), 0)
})

t.test('case 98: TRACE is 405 and reflects nothing', async (t) => {
  const f = await fixture(t)
  const r = await rawExchange(
    f.proxy.port,
    head([`TRACE http://${f.api}/ HTTP/1.1`, `Host: ${f.api}`, 'Max-Forwards: 0', 'Proxy-Authorization: Basic c2VjcmV0', 'Cookie: session=abc']),
  )
  t.equal(statusOf(r.text), 405)
  t.match(r.text, /Proxy-Status: proxy-gate; error=http_request_error/)
  t.notMatch(r.text, /c2VjcmV0|session=abc/, 'request headers are not echoed')
  t.equal(f.up.connections(), 0)
  t.notMatch(JSON.stringify(f.proxy.logs()), /c2VjcmV0/)
})

t.test('case 106: Expect: 100-continue to a forbidden host is 403 with no 100 Continue first', async (t) => {
  const f = await fixture(t)
  const s = await rawSession(f.proxy.port)
  t.teardown(() => s.destroy())
  await s.send(head([`POST http://${f.evil}/upload HTTP/1.1`, 'Host: evil.test', 'Content-Length: 5', 'Expect: 100-continue']))
  const text = await s.waitFor((x) => completeResponses(x) >= 1)
  t.notMatch(text, /100 Continue/)
  t.equal(statusOf(text), 403, 'the first status line is the 403')
  t.match(text, /Proxy-Status: proxy-gate; error=http_request_denied/)
  await s.closed
  t.pass('the connection is closed: the unsent body cannot be read as a request')
  t.equal(f.canary.connections(), 0)
})

t.test('Expect: 100-continue to an allowed host: 100 first, then the body is forwarded', async (t) => {
  const f = await fixture(t)
  const s = await rawSession(f.proxy.port)
  t.teardown(() => s.destroy())
  await s.send(head([`POST http://${f.api}/upload HTTP/1.1`, `Host: ${f.api}`, 'Content-Length: 11', 'Expect: 100-continue']))
  const interim = await s.waitFor((x) => /\r\n\r\n/.test(x))
  t.equal(statusOf(interim), 100)
  t.equal(f.up.requests.length, 0, 'nothing complete upstream before the body')
  await s.send('hello world')
  const text = await s.waitFor((x) => completeResponses(x) >= 1)
  t.same(
    parseResponses(text).map((r) => r.status),
    [100, 200],
  )
  t.equal(f.up.requests[0]?.body, 'hello world')
  t.equal(f.up.requests[0]?.headers.expect, undefined, 'Expect is not forwarded')
})

t.test('origin-form requests to the listener: /healthz answers, anything else is 404', async (t) => {
  const f = await fixture(t)
  const health = await rawExchange(f.proxy.port, head(['GET /healthz HTTP/1.1', 'Host: proxy']), { until: (s) => completeResponses(s) >= 1 })
  t.equal(statusOf(health.text), 200)
  t.equal(parseResponses(health.text)[0]?.body, 'ok\n')
  const viaUndici = await request(`${f.proxy.url}/healthz?probe=1`)
  t.equal(viaUndici.statusCode, 200)
  await viaUndici.body.text()
  const other = await rawExchange(f.proxy.port, head(['GET /admin HTTP/1.1', 'Host: proxy']), { until: (s) => completeResponses(s) >= 1 })
  t.equal(statusOf(other.text), 404)
  t.match(other.text, /Proxy-Status: proxy-gate; error=http_request_error/)
  t.match(other.text, /absolute form/)
  t.equal(f.up.connections(), 0)
})

t.test('case 106: TLS, SOCKS5 and HTTP/2 preface bytes are refused and the proxy keeps serving', async (t) => {
  const f = await fixture(t)
  const hello = await captureClientHello()
  t.equal(hello[0], 0x16, 'captured a TLS handshake record')
  const inputs: Array<[string, Buffer, string]> = [
    ['TLS ClientHello', hello, 'HPE_INVALID_METHOD'],
    ['SOCKS5 greeting', Buffer.from([0x05, 0x01, 0x00]), 'HPE_INVALID_METHOD'],
    ['HTTP/2 preface', Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), 'HPE_PAUSED_H2_UPGRADE'],
  ]
  for (const [name, bytes, code] of inputs) {
    const r = await rawExchange(f.proxy.port, bytes)
    t.ok(r.closed, `${name}: connection closed`)
    t.equal(statusOf(r.text), 400, `${name}: 400`)
    t.match(r.text, `Proxy-Status: proxy-gate; error=http_request_error; details="malformed request (${code})"`, `${name}: Proxy-Status`)
    t.equal(parseResponses(r.text).length, 1, `${name}: exactly one response`)
    t.equal(await freshStatus(f), 200, 'a fresh request afterwards is served')
  }
  t.equal(f.up.requests.length, 3, 'only the follow-up requests were forwarded')
})

t.test('bytes that are no request, after one that was answered: the same outcome every time, the 400 after that answer', async (t) => {
  const f = await fixture(t)
  const garbage = '\x16\x03ab'
  const cases: Array<[string, string, number[]]> = [
    // node:http answers an expectation it does not know (417, keep-alive) before the body is read
    ['417 then 400', head([`POST http://${f.api}/ HTTP/1.1`, `Host: ${f.api}`, 'Expect: keep-alive', 'Content-Length: 5']) + 'hello' + garbage, [417, 400]],
    ['forwarded 200 then 400', head([`GET http://${f.api}/ HTTP/1.1`, `Host: ${f.api}`]) + garbage, [200, 400]],
    // a refused request with a body closes the connection: what follows is never read
    // an answer that said Connection: close: what follows is refused by node:http (HPE_CLOSED_CONNECTION) and gets nothing
    ['505 and closed', head([`GET http://${f.api}/ HTTP/2.0`, `Host: ${f.api}`]) + head([`GET http://${f.api}/ HTTP/1.1`, `Host: ${f.api}`]), [505]],
    ['refused 403 and closed', head([`POST http://${f.evil}/ HTTP/1.1`, `Host: ${f.evil}`, 'Content-Length: 5']) + 'hello' + garbage, [403]],
  ]
  for (const [name, bytes, statuses] of cases) {
    const seen = new Map<string, number>()
    for (let i = 0; i < 15; i++) {
      const r = await rawExchange(f.proxy.port, bytes)
      const outcome = `${parseResponses(r.text).map((res) => res.status).join(',')}${r.closed ? ' closed' : ' open'}`
      seen.set(outcome, (seen.get(outcome) ?? 0) + 1)
    }
    t.same([...seen.keys()], [`${statuses.join(',')} closed`], `${name}: 15 of 15 (${JSON.stringify(Object.fromEntries(seen))})`)
  }
  t.equal(await freshStatus(f), 200, 'a fresh request afterwards is served')
})

t.test('an upstream that refuses the connection is 502 connection_refused; a name that does not resolve is 502 dns_error', async (t) => {
  const port = await closedPort()
  const f = await fixture(t, { allow: [`127.0.0.1:${port}`, `nx.allowed.test:${port}`] })
  const agent = plainAgent(t, f.proxy)
  const res = await request(`http://127.0.0.1:${port}/`, { dispatcher: agent })
  t.equal(res.statusCode, 502)
  t.match(res.headers['proxy-status'], new RegExp(`^proxy-gate; error=connection_refused; details="127\\.0\\.0\\.1:${port} refused the connection"`))
  t.match(await res.body.text(), /refused/)
  const decision = await decisionFor(f.proxy, 'GET', `127.0.0.1:${port}`)
  t.match(decision, { decision: 'allow' })
  t.match(await f.proxy.waitForLog((l) => l.message === 'closed' && l.id === decision.id), { error: 'ECONNREFUSED' })

  const nx = await request(`http://nx.allowed.test:${port}/`, { dispatcher: agent })
  t.equal(nx.statusCode, 502, 'an allowed name that does not resolve')
  t.match(nx.headers['proxy-status'], /^proxy-gate; error=dns_error; details="/)
  await nx.body.text()
  t.ok(f.dns.queries('nx.allowed.test') > 0)
})

// ---- several checked addresses ---------------------------------------------------------------

/** A proxy allowing `NAME:PORT` for each name, resolving through a test DNS server with `zone`. */
async function multiAddressProxy(t: Teardown, zone: Record<string, { A: string[] }>, port: number): Promise<TestProxy> {
  const dns = await startDns(zone)
  const proxy = await startProxy({ allow: Object.keys(zone).map((name) => `${name}:${port}`), dns: { servers: [dns.server], timeoutMs: 2000 } })
  t.teardown(async () => {
    await proxy.close()
    await dns.close()
  })
  return proxy
}

t.test('each checked address is tried in order while connecting fails, as CONNECT does: chosen is the one that answered', { skip: NETNS_SKIP }, async (t) => {
  const up = await startHttpUpstream('11.22.33.45') // nothing listens on 11.22.33.44 at this port
  t.teardown(() => up.close())
  const proxy = await multiAddressProxy(t, { 'two.public.test': { A: ['11.22.33.44', '11.22.33.45'] } }, up.port)
  const agent = plainAgent(t, proxy)
  const target = `two.public.test:${up.port}`
  for (const [method, body] of [['GET', undefined], ['POST', 'the body, sent once']] as const) {
    const res = await request(`http://${target}/second`, { method, body, dispatcher: agent })
    t.equal(res.statusCode, 200, `${method}: served by the second address`)
    t.equal(await res.body.text(), `hello ${method} /second`)
    const decision = await proxy.waitForLog((l) => l.message === 'decision' && l.method === method && l.target === target)
    t.same(decision.resolved, ['11.22.33.44', '11.22.33.45'])
    t.match(await proxy.waitForLog((l) => l.message === 'closed' && l.id === decision.id), { chosen: '11.22.33.45', status: 200, error: undefined }, `${method}: chosen names the address that answered`)
  }
  t.same(
    up.requests.map((r) => [r.method, r.headers.host, r.body]),
    [
      ['GET', target, ''],
      ['POST', target, 'the body, sent once'],
    ],
    'each request reached the origin once, Host the checked authority, the body whole',
  )
})

t.test('every checked address refusing is 502 connection_refused naming them all', { skip: NETNS_SKIP }, async (t) => {
  const port = await closedPort() // bound on 127.0.0.1 only: nothing listens on the stand-in addresses either
  const proxy = await multiAddressProxy(t, { 'dead.public.test': { A: ['11.22.33.44', '11.22.33.46'] } }, port)
  const res = await request(`http://dead.public.test:${port}/`, { dispatcher: plainAgent(t, proxy) })
  t.equal(res.statusCode, 502)
  t.equal(res.headers['proxy-status'], `proxy-gate; error=connection_refused; details="11.22.33.44:${port}, 11.22.33.46:${port} refused the connection"`)
  t.match(await res.body.text(), /refused/)
  const decision = await decisionFor(proxy, 'GET', `dead.public.test:${port}`)
  t.match(await proxy.waitForLog((l) => l.message === 'closed' && l.id === decision.id), { error: 'ECONNREFUSED', status: 502, chosen: '11.22.33.46' })
})

t.test('no next address once the request went out: a first address that takes it and hangs up is 502, the second never dialled', { skip: NETNS_SKIP }, async (t) => {
  const first = await startCanary('11.22.33.44', 0, (s) => s.once('data', () => s.destroy()))
  const second = await startCanary('11.22.33.45', first.port)
  t.teardown(async () => {
    await first.close()
    await second.close()
  })
  const proxy = await multiAddressProxy(t, { 'flaky.public.test': { A: ['11.22.33.44', '11.22.33.45'] } }, first.port)
  const res = await request(`http://flaky.public.test:${first.port}/once`, { method: 'POST', body: 'may have been acted on', dispatcher: plainAgent(t, proxy) })
  t.equal(res.statusCode, 502)
  t.match(res.headers['proxy-status'], new RegExp(`^proxy-gate; error=connection_terminated; details="11\\.22\\.33\\.44:${first.port} closed the connection"`))
  await res.body.text()
  t.match(first.received(), /^POST \/once HTTP\/1\.1\r\n/, 'the first address got the request')
  t.equal(second.connections(), 0, 'the request was not sent again elsewhere')
})

t.test('case 104: a 17 KB header is 431, nothing forwarded, proxy keeps serving', async (t) => {
  const f = await fixture(t)
  const r = await rawExchange(f.proxy.port, head([`GET http://${f.api}/ HTTP/1.1`, `Host: ${f.api}`, `X-Big: ${'a'.repeat(17 * 1024)}`]))
  t.equal(statusOf(r.text), 431)
  t.ok(r.closed)
  t.match(r.text, /Proxy-Status: proxy-gate; error=http_request_error/)
  const line = await rawExchange(f.proxy.port, head([`GET http://${f.api}/${'b'.repeat(20 * 1024)} HTTP/1.1`, `Host: ${f.api}`]))
  t.equal(statusOf(line.text), 431, 'a 20 KB request line too')
  t.equal(f.up.connections(), 0)
  t.equal(await freshStatus(f), 200, 'a fresh request afterwards is served')
})

t.test('keep-alive: each request on one client connection is decided on its own', async (t) => {
  const f = await fixture(t)
  const s = await rawSession(f.proxy.port)
  t.teardown(() => s.destroy())
  const steps: Array<[string, number]> = [
    [f.api, 200],
    [f.evil, 403],
    [f.api, 200],
  ]
  for (const [i, [target, status]] of steps.entries()) {
    await s.send(head([`GET http://${target}/ka${i} HTTP/1.1`, `Host: ${f.api}`]))
    const text = await s.waitFor((x) => completeResponses(x) >= i + 1)
    t.equal(parseResponses(text)[i]?.status, status, `request ${i + 1} to ${target}: ${status}`)
  }
  t.notOk(s.isClosed(), 'the connection stayed open across the denial')
  const lines = await decisionsAtLeast(f.proxy, 3)
  t.same(
    lines.map((l) => [l.target, l.decision]),
    [
      [f.api, 'allow'],
      [f.evil, 'deny'],
      [f.api, 'allow'],
    ],
  )
  t.equal(new Set(lines.map((l) => l.client)).size, 1, 'all from one client connection')
  t.equal(new Set(lines.map((l) => l.id)).size, 3, 'three decisions')
  t.equal(f.canary.connections(), 0)
  t.same(
    f.up.requests.map((r) => r.url),
    ['/ka0', '/ka2'],
  )
})

t.test('cases 99/100: slow clients are closed at the header timeout while a fresh request is served', async (t) => {
  const f = await fixture(t, { limits: { headerTimeoutMs: 1000, requestTimeoutMs: 5000 } })
  const started = Date.now()
  const slow = await Promise.all(Array.from({ length: 100 }, () => rawSession(f.proxy.port)))
  t.teardown(() => slow.forEach((s) => s.destroy()))
  await Promise.all(slow.map((s) => s.send(`GET http://${f.api}/slow HTTP/1.1\r\nHost: ${f.api}\r\nX-Partial: `)))
  const fresh = await rawExchange(f.proxy.port, head([`GET http://${f.api}/fresh HTTP/1.1`, `Host: ${f.api}`]), { until: (s) => completeResponses(s) >= 1 })
  t.equal(statusOf(fresh.text), 200, 'a fresh request is served')
  t.equal(slow.filter((s) => s.isClosed()).length, 0, 'while all 100 slow clients are still connected')
  await Promise.all(slow.map((s) => s.closed))
  const elapsed = Date.now() - started
  t.ok(elapsed >= 950, `slow clients were not closed before the header timeout (${elapsed} ms)`)
  t.same(new Set(slow.map((s) => statusOf(s.text()))), new Set([408]), 'each got a 408')
  t.same(
    f.up.requests.map((r) => r.url),
    ['/fresh'],
    'no partial request was forwarded',
  )
})

t.test('cases 88/100: a body that never completes is cut at the request timeout and the upstream released', async (t) => {
  const upstreamClosed: Promise<void>[] = []
  const perSocket: string[] = []
  const sink = await startCanary('127.0.0.1', 0, (s) => {
    const i = perSocket.push('') - 1
    s.on('data', (d: Buffer) => (perSocket[i] = (perSocket[i] ?? '') + d.toString('latin1')))
    upstreamClosed.push(new Promise((resolve) => s.once('close', () => resolve())))
  })
  const f = await fixture(t, { limits: { headerTimeoutMs: 500, requestTimeoutMs: 1500 }, allow: [`127.0.0.1:${sink.port}`] })
  t.teardown(() => sink.close())
  for (const [name, framing, first] of [
    ['slow Content-Length body', 'Content-Length: 1000000', 'x'.repeat(10)],
    ['huge chunk size', 'Transfer-Encoding: chunked', '7fffffffffffffff\r\nAAAA'],
  ] as const) {
    const started = Date.now()
    const r = await rawExchange(f.proxy.port, head([`POST http://127.0.0.1:${sink.port}/ HTTP/1.1`, 'Host: x', framing]) + first, { timeoutMs: 8000 })
    const elapsed = Date.now() - started
    t.ok(r.closed, `${name}: closed by the proxy`)
    t.ok(elapsed >= 1400, `${name}: not before the request timeout (${elapsed} ms)`)
    t.equal(statusOf(r.text), 408, `${name}: 408`)
    t.match(r.text, /Proxy-Status: proxy-gate; error=http_request_error/)
  }
  const used = perSocket.filter((x) => x !== '')
  t.equal(used.length, 2, 'each request had been forwarded (head first) on its own upstream connection')
  t.ok(
    used.every((x) => x.match(/^POST \/ HTTP\/1\.1\r\n/gm)?.length === 1),
    'no upstream connection carried a second request after an unfinished body',
  )
  t.match(used[1] ?? '', /\r\n\r\n4\r\nAAAA/, 'the huge chunk was re-framed as what actually arrived')
  t.notMatch(used[1] ?? '', /7fffffffffffffff/, 'the client\'s chunk size was not relayed')
  await Promise.all(upstreamClosed)
  t.pass('every upstream connection was closed')
  t.match(sink.received(), /^POST \/ HTTP\/1\.1\r\n/, 'the upstream saw an origin-form request')
})

t.test('a request timeout after the response has started closes the connection without a second status line', async (t) => {
  const sink = await startCanary('127.0.0.1', 0, (s) => {
    let answered = false
    s.on('data', () => {
      if (answered || !sink.received().includes('\r\n\r\n')) return
      answered = true
      s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n')
    })
  })
  const f = await fixture(t, { limits: { headerTimeoutMs: 500, requestTimeoutMs: 1000 }, allow: [`127.0.0.1:${sink.port}`] })
  t.teardown(() => sink.close())
  const r = await rawExchange(f.proxy.port, head([`POST http://127.0.0.1:${sink.port}/early HTTP/1.1`, 'Host: x', 'Content-Length: 1000000']) + 'partial', { timeoutMs: 8000 })
  t.ok(r.closed, 'closed at the request timeout')
  t.equal(statusOf(r.text), 200, 'the upstream response started')
  t.match(r.text, /first/)
  t.equal(statusOf(r.text, 1), undefined, 'no 408 written into the middle of the response')
})

t.test('a reload keeps the resolver and its answers unless "dns" changes', async (t) => {
  const up = await startHttpUpstream('127.0.0.1')
  const dns = await startDns({ 'cached.test': { A: ['127.0.0.1'], ttl: 60 } })
  const rules = (timeoutMs: number) => ({ allow: [`cached.test:${up.port}`, `127.0.0.1:${up.port}`], dns: { servers: [dns.server], timeoutMs } })
  const proxy = await startProxy(rules(2000))
  t.teardown(async () => {
    await proxy.close()
    await up.close()
    await dns.close()
  })
  const status = async () => statusOf((await rawExchange(proxy.port, head([`GET http://cached.test:${up.port}/ HTTP/1.1`, `Host: cached.test:${up.port}`]), { until: (s) => completeResponses(s) >= 1 })).text)
  t.equal(await status(), 200)
  const first = dns.queries('cached.test')
  t.ok(first > 0, 'resolved once')
  proxy.reload(rules(2000))
  t.equal(await status(), 200)
  t.equal(dns.queries('cached.test'), first, 'same dns settings: answered from the cache')
  proxy.reload(rules(2500))
  t.equal(await status(), 200)
  t.equal(dns.queries('cached.test'), 2 * first, 'new dns settings: a new resolver asks again')
})
