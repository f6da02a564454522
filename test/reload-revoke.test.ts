// A reload reaches every connection the rules it replaces admitted: tunnels from the moment they are
// admitted (still waiting for their first bytes, a ClientHello or a dial), tunnels relayed unseen to
// a host that now limits methods or paths, requests in flight, and admissions that were waiting for
// DNS when the reload came. Nothing the new rules deny is served once the reload has been logged.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { createCa } from '../lib/certs/ca.js'
import { redecide } from '../lib/net/gate.js'
import { startDns } from './helpers/dns.js'
import { connectHead } from './helpers/http.js'
import { rawSession, startHttpUpstream, startHttpsUpstream, type RawSession, type Upstream } from './helpers/net.js'
import { configFrom, logLine, startProxy, type TestProxy } from './helpers/proxy.js'
import { DEFAULT_POLICY } from '../lib/policy/clients.js'

const HOST = 'vm.test'
/** the origins listen on loopback, which the guard refuses unless an IP rule names it */
const LOOPBACK = (port: number): string => `127.0.0.1:${port}`

async function origin(t: Test): Promise<Upstream> {
  const http = await startHttpUpstream('127.0.0.1')
  t.teardown(() => http.close())
  return http
}

async function proxyWith(t: Test, rules: Record<string, unknown>, withCa = false): Promise<TestProxy> {
  const dns = await startDns({ [HOST]: { A: ['127.0.0.1'] } })
  const ca = withCa ? await createCa() : undefined
  const proxy = await startProxy({ dns: { servers: [dns.server] }, ...rules }, ca ? { ca } : {})
  t.teardown(async () => {
    await proxy.close()
    await dns.close()
  })
  return proxy
}

/** CONNECT, answered 200, nothing sent through it yet. */
async function openTunnel(t: Test, proxy: TestProxy, target: string): Promise<RawSession> {
  const session = await rawSession(proxy.port)
  t.teardown(() => session.destroy())
  await session.send(connectHead(target))
  const answer = await session.waitFor((text) => text.includes('\r\n\r\n'))
  t.match(answer, /^HTTP\/1\.1 200 /, `CONNECT ${target} answered 200`)
  return session
}

const secret = (port: number): string => `DELETE /secret HTTP/1.1\r\nHost: ${HOST}:${port}\r\nContent-Length: 0\r\n\r\n`

t.test('an opened tunnel still waiting for its first bytes is closed by a reload that removes its host', async (t) => {
  const http = await origin(t)
  const limited = { host: HOST, ports: [http.port], methods: ['GET'], paths: ['/ok'] }
  const proxy = await proxyWith(t, { allow: [limited, `127.0.0.1:${http.port}`] }, true)
  const session = await openTunnel(t, proxy, `${HOST}:${http.port}`)
  const outcome = proxy.reload({ allow: [`127.0.0.1:${http.port}`] })
  t.same(outcome, { closed: 1, kept: 0 }, 'the admitted tunnel was in the registry')
  await session.closed
  await session.send(secret(http.port)).catch(() => undefined)
  t.same(http.requests, [], 'the origin never got a request')
  const revoked = await logLine(proxy, (l) => l.message === 'revoked', 'revoked line')
  t.match(revoked, { kind: 'tunnel', target: `${HOST}:${http.port}`, reason: 'no-rule' })
  const fresh = await rawSession(proxy.port)
  t.teardown(() => fresh.destroy())
  await fresh.send(connectHead(`${HOST}:${http.port}`))
  t.match(await fresh.waitFor((text) => text.includes('\r\n\r\n')), /^HTTP\/1\.1 403 /, 'a new CONNECT is refused')
})

t.test('a relayed tunnel to a host whose rules now limit methods or paths is closed: its requests would pass unseen', async (t) => {
  const http = await origin(t)
  const proxy = await proxyWith(t, { allow: [`${HOST}:${http.port}`, LOOPBACK(http.port)] }, true)
  const session = await openTunnel(t, proxy, `${HOST}:${http.port}`)
  await session.send(`GET /first HTTP/1.1\r\nHost: ${HOST}:${http.port}\r\n\r\n`)
  t.match(await session.waitFor((text) => text.includes('hello GET /first')), /hello GET \/first/, 'relayed before the reload')
  const outcome = proxy.reload({ allow: [{ host: HOST, ports: [http.port], methods: ['GET'], paths: ['/ok'] }, LOOPBACK(http.port)] })
  t.same(outcome, { closed: 1, kept: 0 })
  await session.closed
  t.same(http.requests.map((r) => `${r.method} ${r.url}`), ['GET /first'], 'nothing after the reload reached the origin')
  t.match(await logLine(proxy, (l) => l.message === 'revoked', 'revoked line'), { reason: 'request-not-allowed' })
})

t.test('a tunnel on a TLS port waiting for its ClientHello is closed by a reload that removes its host', async (t) => {
  const https = await startHttpsUpstream('127.0.0.1', [HOST])
  t.teardown(() => https.close())
  const proxy = await proxyWith(t, { allow: [`${HOST}:${https.port}`, LOOPBACK(https.port)], tls: { ports: [https.port] } })
  const session = await openTunnel(t, proxy, `${HOST}:${https.port}`)
  t.same(proxy.reload({ allow: [LOOPBACK(https.port)] }), { closed: 1, kept: 0 })
  await session.closed
  t.equal(https.connections(), 0, 'never dialled')
})

t.test('a reload while the CONNECT waits for DNS decides it under the new rules', async (t) => {
  const http = await origin(t)
  const dns = await startDns({ [HOST]: { A: ['127.0.0.1'] } })
  const proxy = await startProxy({ dns: { servers: [dns.server] }, allow: [`${HOST}:${http.port}`, LOOPBACK(http.port)] })
  t.teardown(async () => {
    await proxy.close()
    await dns.close()
  })
  const held = dns.hold(HOST)
  const session = await rawSession(proxy.port)
  t.teardown(() => session.destroy())
  await session.send(connectHead(`${HOST}:${http.port}`))
  await dns.asked(HOST, 1)
  t.same(proxy.reload({ allow: [LOOPBACK(http.port)] }), { closed: 0, kept: 0 }, 'nothing admitted yet')
  held.release()
  t.match(await session.waitFor((text) => text.includes('\r\n\r\n')), /^HTTP\/1\.1 403 /, 'refused under the rules in force when DNS answered')
  t.equal(http.connections(), 0)
  t.match(await logLine(proxy, (l) => l.message === 'decision', 'decision'), { decision: 'deny', reason: 'no-rule' })
})

t.test('a forwarded request in flight whose path the new rules no longer allow is stopped', async (t) => {
  let answer: ServerResponse | undefined
  let arrived!: () => void
  const started = new Promise<void>((resolve) => (arrived = resolve))
  const slow = createServer((_req: IncomingMessage, res: ServerResponse) => {
    answer = res
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('part one;')
    arrived()
  })
  await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    slow.closeAllConnections()
    slow.close()
  })
  const port = (slow.address() as AddressInfo).port
  const proxy = await proxyWith(t, { allow: [{ host: HOST, ports: [port], methods: ['GET'], paths: ['/slow', '/other'] }, LOOPBACK(port)] })
  const session = await rawSession(proxy.port)
  t.teardown(() => session.destroy())
  await session.send(`GET http://${HOST}:${port}/slow HTTP/1.1\r\nHost: ${HOST}:${port}\r\n\r\n`)
  await started
  t.match(await session.waitFor((text) => text.includes('part one;')), /part one;/, 'the answer started')
  t.same(proxy.reload({ allow: [{ host: HOST, ports: [port], methods: ['GET'], paths: ['/other'] }, LOOPBACK(port)] }), { closed: 1, kept: 0 })
  await session.closed
  answer?.end('part two')
  t.notMatch(session.text(), /part two/, 'the rest was never served')
})

t.test('a request no rule allows is denied even where the host-level decision was made under older rules', (t) => {
  const config = configFrom({ allow: [{ host: 'other.test', ports: [80], methods: ['GET'], paths: ['/x'] }] })
  const gate = { policy: config.policy, policyName: DEFAULT_POLICY, policies: config.policies, ctx: { mode: config.mode, self: [], tls: config.tls }, lookup: () => Promise.resolve([]), generation: 1 }
  const target = { host: { kind: 'name' as const, name: HOST }, port: 80 }
  const decision = redecide(gate, { target, resolved: [{ family: 4, value: 0x7f000001n }], request: { method: 'DELETE', path: '/secret' } })
  t.match(decision, { verdict: 'deny', reason: 'no-rule' })
  t.end()
})
