// Review finding: plain-HTTP requests and WebSocket upgrades through the proxy port are decided under
// the gate in force when they arrived, even when a reload replaced it while their name was being
// resolved (absolute-form.ts decideHttp awaits admit() on the gate it took first; CONNECT uses
// underCurrent, these do not). Registered after the reload, they are never re-decided: the origin is
// served a request the rules in force deny.
//   client --GET http://vm.test:PORT/secret--> decideHttp (gate 1) -> DNS held ... reload removes vm.test ... DNS answers -> allowed -> origin
import t from 'tap'
import { startDns } from './helpers/dns.js'
import { rawSession, startHttpUpstream, startWsUpstream } from './helpers/net.js'
import { upgradeHead } from './helpers/ws-raw.js'
import { logLine, startProxy } from './helpers/proxy.js'

const HOST = 'vm.test'

t.test('a forwarded request whose DNS answer comes after a reload that removed its host is refused', async (t) => {
  const http = await startHttpUpstream('127.0.0.1')
  const dns = await startDns({ [HOST]: { A: ['127.0.0.1'] } })
  const proxy = await startProxy({ dns: { servers: [dns.server] }, allow: [`${HOST}:${http.port}`, `127.0.0.1:${http.port}`] })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([dns.close(), http.close()])
  })
  const held = dns.hold(HOST)
  const session = await rawSession(proxy.port)
  t.teardown(() => session.destroy())
  await session.send(`GET http://${HOST}:${http.port}/secret HTTP/1.1\r\nHost: ${HOST}:${http.port}\r\nConnection: close\r\n\r\n`)
  await dns.asked(HOST, 1)
  t.same(proxy.reload({ allow: [`127.0.0.1:${http.port}`] }), { closed: 0, kept: 0 }, 'the reload: nothing admitted yet')
  held.release()
  const answer = await session.waitFor((text) => text.includes('\r\n\r\n'))
  t.match(answer, /^HTTP\/1\.1 403 /, 'refused under the rules in force when DNS answered')
  t.same(http.requests.map((r) => `${r.method} ${r.url}`), [], 'the origin was served nothing after the reload')
  t.match(await logLine(proxy, (l) => l.message === 'decision', 'decision'), { decision: 'deny' })
})

t.test('a WebSocket upgrade whose DNS answer comes after a reload that removed its host is refused', async (t) => {
  const ws = await startWsUpstream('127.0.0.1')
  const dns = await startDns({ [HOST]: { A: ['127.0.0.1'] } })
  const proxy = await startProxy({ dns: { servers: [dns.server] }, allow: [`${HOST}:${ws.port}`, `127.0.0.1:${ws.port}`] })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([dns.close(), ws.close()])
  })
  const held = dns.hold(HOST)
  const session = await rawSession(proxy.port)
  t.teardown(() => session.destroy())
  await session.send(upgradeHead(`http://${HOST}:${ws.port}/ws`, `${HOST}:${ws.port}`))
  await dns.asked(HOST, 1)
  t.same(proxy.reload({ allow: [`127.0.0.1:${ws.port}`] }), { closed: 0, kept: 0 }, 'the reload: nothing admitted yet')
  held.release()
  t.match(await session.waitFor((text) => text.includes('\r\n\r\n')), /^HTTP\/1\.1 403 /, 'refused under the rules in force when DNS answered')
  t.same(ws.requests.map((r) => r.url), [], 'the origin accepted no WebSocket after the reload')
})
