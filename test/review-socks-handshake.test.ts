// Review of the SOCKS5 handshake against CONNECT: a login is asked for by the rules in force when
// the request is read, as a CONNECT's Proxy-Authorization is checked when its head is complete.
import t from 'tap'
import { rawSession, startCanary } from './helpers/net.js'
import { logLine, startProxy } from './helpers/proxy.js'
import { credentials, greeting, request, socksSession } from './helpers/socks.js'
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

t.test('a reload that removes the user a SOCKS client logged in as, before its request: refused, as a CONNECT with that login is', async (t) => {
  const canary = await startCanary('127.0.0.1')
  t.teardown(() => canary.close())
  const users = { alice: await hashPassword('pw-of-alice'), bob: await hashPassword('pw-of-bob') }
  const rules = { socks: { listen: '127.0.0.1:0' }, allow: [`127.0.0.1:${canary.port}`], auth: { users } }
  const proxy = await startProxy(rules)
  t.teardown(() => proxy.close())
  const socksPort = proxy.proxy.socksAddress()?.port ?? 0

  const socks = await socksSession(socksPort)
  socks.socket.write(greeting([2]))
  t.same([...((await socks.read(2)) ?? [])], [5, 2], 'a login is asked for')
  socks.socket.write(credentials('alice', 'pw-of-alice'))
  t.same([...((await socks.read(2)) ?? [])], [1, 0], 'alice is logged in')

  proxy.reload({ ...rules, auth: { users: { bob: users.bob } } })

  const connect = await rawSession(proxy.port)
  const basic = Buffer.from('alice:pw-of-alice').toString('base64')
  await connect.send(`CONNECT 127.0.0.1:${canary.port} HTTP/1.1\r\nHost: 127.0.0.1:${canary.port}\r\nProxy-Authorization: Basic ${basic}\r\n\r\n`)
  t.match(await connect.waitFor((text) => text.includes('\r\n\r\n')), /^HTTP\/1\.1 407 /, 'CONNECT: alice is no user any more')
  socks.socket.write(request('127.0.0.1', canary.port))
  t.equal((await socks.read(10))?.[1], 0x02, 'SOCKS: the request read after the reload is refused (not allowed)')
  t.equal(canary.connections(), 0, 'the canary saw no connection')
  t.match(await logLine(proxy, (l) => l.message === 'decision' && l.status === 407 && l.listener === 'socks' && /no longer accepted/.test(String(l.detail)), 'refusal'), { detail: /no longer accepted/ })
  socks.socket.destroy()
  connect.destroy()
})

t.test('a SOCKS client whose login still holds after a reload is routed as before', async (t) => {
  const canary = await startCanary('127.0.0.1')
  t.teardown(() => canary.close())
  const rules = { socks: { listen: '127.0.0.1:0' }, allow: [`127.0.0.1:${canary.port}`], auth: { users: { alice: await hashPassword('pw-of-alice') } } }
  const proxy = await startProxy(rules)
  t.teardown(() => proxy.close())
  const socks = await socksSession(proxy.proxy.socksAddress()?.port ?? 0)
  socks.socket.write(greeting([2]))
  await socks.read(2)
  socks.socket.write(credentials('alice', 'pw-of-alice'))
  t.same([...((await socks.read(2)) ?? [])], [1, 0])
  proxy.reload({ ...rules, deny: ['example.invalid'] })
  socks.socket.write(request('127.0.0.1', canary.port))
  t.equal((await socks.read(10))?.[1], 0x00, 'succeeded')
  t.equal(canary.connections(), 1, 'the tunnel reached the canary (dialled before the success reply)')
  socks.socket.destroy()
})
