// Review of the SOCKS5 handshake against CONNECT: a login is asked for by the rules in force when
// the request is read, as a CONNECT's Proxy-Authorization is checked when its head is complete.
import t from 'tap'
import { rawSession, startCanary } from './helpers/net.js'
import { logLine, startProxy } from './helpers/proxy.js'
import { greeting, request, socksSession } from './helpers/socks.js'
import { hashPassword } from '../lib/proxy/auth.js'

t.test('a reload that adds "auth" while a SOCKS handshake is under way: the request is refused, as a CONNECT begun before it is', async (t) => {
  const canary = await startCanary('127.0.0.1')
  t.teardown(() => canary.close())
  const rules = { socks: { listen: '127.0.0.1:0' }, allow: [`127.0.0.1:${canary.port}`] }
  const proxy = await startProxy(rules)
  t.teardown(() => proxy.close())
  const socksPort = proxy.proxy.socksAddress()?.port ?? 0

  const socks = await socksSession(socksPort)
  socks.socket.write(greeting([0]))
  t.same([...((await socks.read(2)) ?? [])], [5, 0], 'no login asked for: the rules have no "auth" yet')
  const connect = await rawSession(proxy.port)
  await connect.send(`CONNECT 127.0.0.1:${canary.port} HTTP/1.1\r\n`)

  proxy.reload({ ...rules, auth: { users: { alice: await hashPassword('pw-of-alice') } } })

  await connect.send(`Host: 127.0.0.1:${canary.port}\r\n\r\n`)
  t.match(await connect.waitFor((text) => text.includes('\r\n\r\n')), /^HTTP\/1\.1 407 /, 'CONNECT: the head completed after the reload needs a login')
  socks.socket.write(request('127.0.0.1', canary.port))
  t.equal((await socks.read(10))?.[1], 0x02, 'SOCKS: the request read after the reload is refused (not allowed)')
  t.equal(canary.connections(), 0, 'the canary saw no connection')
  t.match(await logLine(proxy, (l) => l.message === 'decision' && l.status === 407 && l.listener === 'socks', 'refusal'), { detail: /ask for a login/ })
  socks.socket.destroy()
  connect.destroy()
})
