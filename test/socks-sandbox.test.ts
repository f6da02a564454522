// The sandbox's SOCKS5 listener (sandbox.socks, on the sandbox address): what `sandbox run` points
// ALL_PROXY at. It asks for no login even when the rules have proxy users (ALL_PROXY carries none,
// as transparent clients send none), and decides by the same rules as the proxy port.
import t from 'tap'
import { curl } from './helpers/curl.js'
import { startCanary, startHttpUpstream } from './helpers/net.js'
import { logLine, startProxy } from './helpers/proxy.js'
import { greeting, socksSession } from './helpers/socks.js'
import { hashPassword } from '../lib/proxy/auth.js'

const SANDBOX = '127.80.0.21'

t.test('sandbox.socks: a SOCKS5 listener on the sandbox address, no login, the same rules', async (t) => {
  const upstream = await startHttpUpstream('127.0.0.1')
  const canary = await startCanary('127.0.0.1')
  t.teardown(async () => {
    await upstream.close()
    await canary.close()
  })
  const socks = 18080
  const proxy = await startProxy({
    allow: [`127.0.0.1:${upstream.port}`],
    auth: { users: { alice: await hashPassword('s3cret-pw') } },
    sandbox: { address: SANDBOX, dns: false, http: [], tls: [], socks },
  })
  t.teardown(() => proxy.close())
  const session = await socksSession(socks, SANDBOX)
  session.socket.write(greeting([0x00, 0x02]))
  t.same([...((await session.read(2)) ?? [])], [0x05, 0x00], 'no authentication is chosen, though the rules have users')
  session.socket.destroy()
  const ok = await curl(['--socks5', `${SANDBOX}:${socks}`, `http://127.0.0.1:${upstream.port}/from-the-sandbox`])
  t.equal(ok.status, 200)
  t.equal(ok.body, 'hello GET /from-the-sandbox')
  const denied = await curl(['--socks5', `${SANDBOX}:${socks}`, `http://127.0.0.1:${canary.port}/`])
  t.equal(denied.status, 0, 'a port no rule allows gets no response')
  const line = await logLine(proxy, (l) => l.message === 'decision' && l.target === `127.0.0.1:${canary.port}`, 'denial')
  t.match(line, { decision: 'deny', listener: 'socks' })
  t.equal(canary.connections(), 0, 'the canary saw nothing')
})

t.test('sandbox.socks false: no SOCKS listener on the sandbox address', async (t) => {
  const proxy = await startProxy({ allow: [], sandbox: { address: SANDBOX, dns: false, http: [], tls: [], socks: false } })
  t.teardown(() => proxy.close())
  await t.rejects(socksSession(1080, SANDBOX), 'nothing listens on 1080')
})
