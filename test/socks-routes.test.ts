// SOCKS tunnels where CONNECT's path branches: rules that limit methods and paths open the tunnel
// (the interceptor decides each request inside), and a parent proxy ("upstream") is asked for the
// name, as it is for a CONNECT.
import { createServer, type AddressInfo, type Socket } from 'node:net'
import t from 'tap'
import { createCa } from '../lib/certs/ca.js'
import { curl } from './helpers/curl.js'
import { startDns } from './helpers/dns.js'
import { NETNS_SKIP, startHttpUpstream } from './helpers/net.js'
import { logLine, startProxy } from './helpers/proxy.js'
import { socksConnect } from './helpers/socks.js'

t.test('rules with methods/paths: a SOCKS tunnel is opened and each request in it decided, as over CONNECT', { skip: NETNS_SKIP }, async (t) => {
  const upstream = await startHttpUpstream('11.22.33.44')
  const dns = await startDns({ 'api.allowed.test': { A: ['11.22.33.44'] } })
  const rule = { host: 'api.allowed.test', ports: [upstream.port], methods: ['GET'], paths: ['/meta'] }
  const proxy = await startProxy({ socks: { listen: '127.0.0.1:0' }, allow: [rule], dns: { servers: [dns.server], timeoutMs: 2000 } }, { ca: await createCa() })
  t.teardown(async () => {
    await proxy.close()
    await upstream.close()
    await dns.close()
  })
  const socks = `127.0.0.1:${proxy.proxy.socksAddress()?.port ?? 0}`
  const ok = await curl(['--socks5-hostname', socks, `http://api.allowed.test:${upstream.port}/meta`])
  t.equal(ok.status, 200, 'the allowed path reaches the upstream')
  t.equal(ok.body, 'hello GET /meta')
  const refused = await curl(['--socks5-hostname', socks, `http://api.allowed.test:${upstream.port}/secret`])
  t.equal(refused.status, 403, 'a path the rule does not name is refused inside the tunnel')
  t.same(upstream.requests.map((r) => r.url), ['/meta'], 'only the allowed request reached the upstream')
  t.match(await logLine(proxy, (l) => l.message === 'decision' && l.path === '/secret', 'inner denial'), { decision: 'deny', intercepted: true })
})

t.test('with "upstream": a SOCKS tunnel goes through the parent proxy, which is sent the name', { skip: NETNS_SKIP }, async (t) => {
  const heads: string[] = []
  const parent = createServer((socket: Socket) => {
    socket.once('data', (d: Buffer) => {
      heads.push(d.toString('latin1').split('\r\n')[0] ?? '')
      socket.write('HTTP/1.1 200 Connection established\r\n\r\nfrom the parent\n')
    })
    socket.on('error', () => socket.destroy())
  })
  await new Promise<void>((resolve) => parent.listen(0, '127.0.0.1', resolve))
  const dns = await startDns({ 'git.allowed.test': { A: ['11.22.33.44'] } })
  const proxy = await startProxy({
    socks: { listen: '127.0.0.1:0' },
    allow: ['git.allowed.test:22'],
    upstream: `http://127.0.0.1:${(parent.address() as AddressInfo).port}`,
    dns: { servers: [dns.server], timeoutMs: 2000 },
  })
  t.teardown(async () => {
    await proxy.close()
    await dns.close()
    await new Promise((resolve) => parent.close(resolve))
  })
  const opened = await socksConnect(proxy.proxy.socksAddress()?.port ?? 0, 'git.allowed.test', 22)
  t.equal(opened.code, 0x00)
  t.equal((await opened.session.read(16))?.toString(), 'from the parent\n', 'the tunnel runs through the parent')
  t.same(heads, ['CONNECT git.allowed.test:22 HTTP/1.1'], 'the parent was asked for the name')
  opened.session.socket.destroy()
  t.match(await logLine(proxy, (l) => l.message === 'closed', 'closed'), { via: /^127\.0\.0\.1:\d+$/, listener: 'socks' })
})
