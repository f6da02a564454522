// The "done when", end to end: curl through the proxy over CONNECT and plain HTTP,
// an allowed local server reached, a denied one refused with Proxy-Status and never dialled,
// and a name that resolves to a private address refused with no connection made.
import t from 'tap'
import { curl } from './helpers/curl.js'
import { startDns } from './helpers/dns.js'
import { NETNS_SKIP, rawExchange, startCanary, startHttpUpstream, statusOf } from './helpers/net.js'
import { startProxy } from './helpers/proxy.js'

t.test('curl reaches an allowed server and is refused a denied one, over CONNECT and plain HTTP', async (t) => {
  const allowed = await startHttpUpstream()
  const forbidden = await startCanary('127.0.0.1')
  const proxy = await startProxy({ allow: [`127.0.0.1:${allowed.port}`] })
  t.teardown(async () => {
    await proxy.close()
    await allowed.close()
    await forbidden.close()
  })
  for (const tunnel of [[], ['--proxytunnel']]) {
    const ok = await curl(['-x', proxy.url, ...tunnel, `http://127.0.0.1:${allowed.port}/hi`])
    t.equal(ok.status, 200, `allowed ${tunnel.join('') || 'plain'}`)
    t.equal(ok.body, 'hello GET /hi')
    const denied = await curl(['-x', proxy.url, ...tunnel, `http://127.0.0.1:${forbidden.port}/`])
    t.equal(denied.status, 403, `denied ${tunnel.join('') || 'plain'}`)
    t.match(denied.headers, /Proxy-Status: proxy-gate; error=destination_ip_prohibited; details="127\.0\.0\.1:\d+, a loopback address/)
  }
  t.equal(forbidden.connections(), 0, 'the denied server saw no connection')
  t.equal(allowed.requests.length, 2)
})

t.test('a name that resolves to a private address is refused before any connection', { skip: NETNS_SKIP }, async (t) => {
  const sink = await startCanary('10.0.0.1', 443)
  const dns = await startDns({ 'internal.example.com': { A: ['10.0.0.1'] } })
  const proxy = await startProxy({ allow: ['internal.example.com:443'], dns: { servers: [dns.server], timeoutMs: 2000 } })
  t.teardown(async () => {
    await proxy.close()
    await sink.close()
    await dns.close()
  })
  const res = await curl(['-x', proxy.url, '--proxytunnel', 'http://internal.example.com:443/'])
  t.equal(res.status, 403)
  t.match(res.headers, /error=destination_ip_prohibited/)
  t.ok(dns.queries('internal.example.com') > 0, 'the allowed name was resolved')
  t.equal(sink.connections(), 0, 'nothing reached 10.0.0.1')
})

t.test('credentials in a rejected URL never reach the log', async (t) => {
  const proxy = await startProxy({ allow: [] })
  t.teardown(() => proxy.close())
  const res = await rawExchange(proxy.port, 'GET http://user:s3cret@127.0.0.1:9/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic c2VjcmV0\r\n\r\n', { until: (text) => text.includes('\r\n\r\n') })
  t.equal(statusOf(res.text), 400)
  t.match(res.text, /Proxy-Status: proxy-gate; error=http_request_error; details="bad request-target: URL contains userinfo/)
  const line = await proxy.waitForLog((l) => l.message === 'decision')
  t.equal(line.target, '[redacted]@127.0.0.1:9', 'the authority only, its userinfo redacted')
  const all = JSON.stringify(proxy.logs())
  t.notMatch(all, /s3cret/)
  t.notMatch(all, /c2VjcmV0/)
})

t.test('a malformed request pipelined behind one still being decided is answered after it', async (t) => {
  const proxy = await startProxy({ allow: [] })
  t.teardown(() => proxy.close())
  const res = await rawExchange(proxy.port, 'GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\nPAYLOAD\r\n\r\n')
  t.same(res.text.match(/HTTP\/1\.1 \d{3}/g), ['HTTP/1.1 403', 'HTTP/1.1 400'], 'responses keep the order of the requests')
  t.ok(res.closed)
})
