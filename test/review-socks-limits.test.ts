// Review of the SOCKS5 listener's limits: limits.maxConnections is one budget for the proxy port and
// the SOCKS listener, whichever of them the connections came in on.
import t from 'tap'
import { rawSession, startCanary } from './helpers/net.js'
import { startProxy } from './helpers/proxy.js'
import { greeting, socksSession } from './helpers/socks.js'

t.test('maxConnections held by SOCKS clients: the proxy port takes no more until they are gone', async (t) => {
  const canary = await startCanary('127.0.0.1')
  t.teardown(() => canary.close())
  const proxy = await startProxy({ socks: { listen: '127.0.0.1:0' }, allow: [`127.0.0.1:${canary.port}`], limits: { maxConnections: 2 } })
  t.teardown(() => proxy.close())
  const socksPort = proxy.proxy.socksAddress()?.port ?? 0

  const held = [await socksSession(socksPort), await socksSession(socksPort)]
  for (const session of held) {
    session.socket.write(greeting([0]))
    t.same([...((await session.read(2)) ?? [])], [5, 0], 'a SOCKS client holds a connection')
  }
  const connect = await rawSession(proxy.port)
  await connect.send(`CONNECT 127.0.0.1:${canary.port} HTTP/1.1\r\nHost: 127.0.0.1:${canary.port}\r\n\r\n`)
  t.equal(await connect.waitFor((x) => x.includes('\r\n\r\n')), '', 'the proxy port closed the connection past the limit without an answer')
  t.ok(connect.isClosed(), 'closed')
  connect.destroy()
  t.equal(canary.connections(), 0, 'the canary saw no connection')

  for (const session of held) session.socket.destroy()
  await Promise.all(held.map((s) => s.closed))
  // the budget comes back once they are gone (the proxy sees the closes after the client does: retried until it has)
  let again = await rawSession(proxy.port)
  for (let i = 0; i < 50; i++) {
    await again.send(`CONNECT 127.0.0.1:${canary.port} HTTP/1.1\r\nHost: 127.0.0.1:${canary.port}\r\n\r\n`)
    const text = await again.waitFor((x) => x.includes('\r\n\r\n'))
    if (text !== '') break
    again = await rawSession(proxy.port)
  }
  t.match(again.text(), /^HTTP\/1\.1 200 /, 'with the SOCKS clients gone, the proxy port tunnels again')
  again.destroy()
})

t.test('maxConnections partly held by a SOCKS client: the proxy port takes only what is left', async (t) => {
  const canary = await startCanary('127.0.0.1')
  t.teardown(() => canary.close())
  const proxy = await startProxy({ socks: { listen: '127.0.0.1:0' }, allow: [`127.0.0.1:${canary.port}`], limits: { maxConnections: 2 } })
  t.teardown(() => proxy.close())
  const held = await socksSession(proxy.proxy.socksAddress()?.port ?? 0)
  held.socket.write(greeting([0]))
  t.same([...((await held.read(2)) ?? [])], [5, 0], 'a SOCKS client holds one connection')
  const ask = `CONNECT 127.0.0.1:${canary.port} HTTP/1.1\r\nHost: 127.0.0.1:${canary.port}\r\n\r\n`
  const first = await rawSession(proxy.port)
  await first.send(ask)
  t.match(await first.waitFor((x) => x.includes('\r\n\r\n')), /^HTTP\/1\.1 200 /, 'the proxy port takes the one left')
  const second = await rawSession(proxy.port)
  await second.send(ask)
  t.equal(await second.waitFor((x) => x.includes('\r\n\r\n')), '', 'and no more: closed without an answer')
  t.equal(canary.connections(), 1, 'only the first reached the canary')
  for (const s of [first, second]) s.destroy()
  held.socket.destroy()
})
