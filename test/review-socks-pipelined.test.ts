// Review of SOCKS5 pipelining: bytes a client sends behind its request, before any reply, are the
// tunnel's first bytes and get CONNECT's checks: a ClientHello naming another server (domain
// fronting) is refused before anything is dialled, on a TLS port and on any other, whole or split,
// with and without a login in front of it.
import t from 'tap'
import { captureHello } from './helpers/client-hello.js'
import { startDns } from './helpers/dns.js'
import { NETNS_SKIP, rawSession, startCanary } from './helpers/net.js'
import { logLine, startProxy } from './helpers/proxy.js'
import { credentials, greeting, request, socksSession } from './helpers/socks.js'
import { hashPassword } from '../lib/proxy/auth.js'

t.test('a fronted ClientHello pipelined behind the SOCKS request never reaches the origin, as behind a CONNECT', { skip: NETNS_SKIP }, async (t) => {
  const tlsPort = await startCanary('11.22.33.44')
  const otherPort = await startCanary('11.22.33.44')
  const dns = await startDns({ 'api.allowed.test': { A: ['11.22.33.44'] } })
  const proxy = await startProxy({
    socks: { listen: '127.0.0.1:0' },
    allow: [`api.allowed.test:${tlsPort.port}`, `api.allowed.test:${otherPort.port}`],
    auth: { users: { carol: await hashPassword('pw-of-carol') } },
    tls: { ports: [tlsPort.port] },
    dns: { servers: [dns.server], timeoutMs: 2000 },
  })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([tlsPort.close(), otherPort.close(), dns.close()])
  })
  const socksPort = proxy.proxy.socksAddress()?.port ?? 0
  const fronted = await captureHello({ servername: 'evil.test' })
  const login = Buffer.concat([greeting([2]), credentials('carol', 'pw-of-carol')])

  for (const canary of [tlsPort, otherPort]) {
    for (const split of [false, true]) {
      const session = await socksSession(socksPort)
      const all = Buffer.concat([login, request('api.allowed.test', canary.port), fronted])
      const cut = split ? all.length - fronted.length + 3 : all.length
      session.socket.write(all.subarray(0, cut))
      if (split) session.socket.write(all.subarray(cut))
      await session.closed
      t.equal(canary.connections(), 0, `${canary === tlsPort ? 'TLS port' : 'other port'}${split ? ', hello split' : ''}: the origin was never dialled`)
    }
    const connect = await rawSession(proxy.port)
    const auth = Buffer.from('carol:pw-of-carol').toString('base64')
    await connect.send(Buffer.concat([Buffer.from(`CONNECT api.allowed.test:${canary.port} HTTP/1.1\r\nHost: api.allowed.test:${canary.port}\r\nProxy-Authorization: Basic ${auth}\r\n\r\n`), fronted]))
    await connect.closed
    t.equal(canary.connections(), 0, 'over CONNECT the same')
  }
  const refusals = proxy.logs().filter((l) => l.message === 'decision' && l.reason === 'sni-mismatch')
  t.equal(refusals.filter((l) => l.listener === 'socks').length, 4, 'each SOCKS attempt logged as fronting')
  t.equal(refusals.length, 6, 'and each CONNECT one')
  t.match(await logLine(proxy, (l) => l.reason === 'sni-mismatch', 'fronting'), { sni: 'evil.test', decision: 'deny' })
})
