// Review finding: a WebSocket upgraded inside an opened tunnel (rules with methods/paths) is not
// re-decided by a reload. The plain-proxy upgrade registers its request (method, path) for reloads
// (route-upgrade.ts); the opened tunnel's upgrade (intercept.ts) registers nothing, and the tunnel's
// own entry is re-decided on its host alone. A reload that no longer allows GET /ws keeps the
// WebSocket open, and the client's messages keep reaching the origin after the reload is logged.
//   client --CONNECT vm.test:PORT--> opened tunnel --GET /ws Upgrade--> allowed -> 101 -> ws relay
//   reload: vm.test allows GET /other only -> { closed: 0 } -> the client's next message reaches the origin
import t from 'tap'
import { createCa } from '../lib/certs/ca.js'
import { startDns } from './helpers/dns.js'
import { connectHead } from './helpers/http.js'
import { rawSession, startWsUpstream } from './helpers/net.js'
import { upgradeHead } from './helpers/ws-raw.js'
import { startProxy } from './helpers/proxy.js'

const HOST = 'vm.test'

/** A client's masked text frame. */
function maskedTextFrame(text: string): Buffer {
  const mask = Buffer.from([1, 2, 3, 4])
  const payload = Buffer.from(text).map((b, i) => b ^ (mask[i % 4] as number))
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload])
}

t.test('a reload that no longer allows the WebSocket path closes a WebSocket upgraded inside an opened tunnel', async (t) => {
  const ws = await startWsUpstream('127.0.0.1')
  const dns = await startDns({ [HOST]: { A: ['127.0.0.1'] } })
  const rule = (paths: string[]): Record<string, unknown> => ({ allow: [{ host: HOST, ports: [ws.port], methods: ['GET'], paths }, `127.0.0.1:${ws.port}`], dns: { servers: [dns.server] } })
  const proxy = await startProxy(rule(['/ws', '/other']), { ca: await createCa() })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([ws.close(), dns.close()])
  })

  const session = await rawSession(proxy.port)
  t.teardown(() => session.destroy())
  await session.send(connectHead(`${HOST}:${ws.port}`))
  t.match(await session.waitFor((text) => text.includes('\r\n\r\n')), /^HTTP\/1\.1 200 /, 'the tunnel opened')
  const before = session.text().length
  await session.send(upgradeHead('/ws', `${HOST}:${ws.port}`))
  await session.send(maskedTextFrame('before'))
  t.match(await session.waitFor((text) => text.includes('echo: before')), /HTTP\/1\.1 101 [^]*echo: before/, 'upgraded inside the opened tunnel, a message echoed')

  const outcome = proxy.reload(rule(['/other']))
  t.equal(outcome.closed, 1, 'the reload closed the WebSocket GET /ws no longer allowed')
  const seen = session.text().length
  await session.send(maskedTextFrame('after'))
  await session.waitFor((text) => text.length > seen && text.includes('echo: after'), 2_000)
  t.notMatch(session.text().slice(before), /echo: after/, 'no message sent after the reload reached the origin and came back')
})
