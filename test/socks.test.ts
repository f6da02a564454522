// The SOCKS5 listener over real sockets: curl (--socks5-hostname, --socks5, socks5h:// with a
// login) and a client of our own (helpers/socks.ts) for every reply code, the login and its
// lockout, the commands and address types it refuses, what is no SOCKS5 at all, and a handshake
// that never completes. Every denial is checked at a canary: it never saw a connection.
import t, { type Test } from 'tap'
import { curl } from './helpers/curl.js'
import { startDns } from './helpers/dns.js'
import { closedPort, NETNS_SKIP, PYTHON, startBannerUpstream, startBlackhole, startCanary, startHttpUpstream } from './helpers/net.js'
import { logLine, startProxy, type LogLine, type TestProxy } from './helpers/proxy.js'
import { credentials, greeting, request, socksConnect, socksSession } from './helpers/socks.js'
import { hashPassword } from '../lib/proxy/auth.js'

interface SocksProxy extends TestProxy {
  readonly socks: number
}

async function startSocks(t: Test, rules: Record<string, unknown>): Promise<SocksProxy> {
  const proxy = await startProxy({ socks: { listen: '127.0.0.1:0' }, ...rules })
  t.teardown(() => proxy.close())
  const socks = proxy.proxy.socksAddress()?.port
  if (socks === undefined) throw new Error('no SOCKS listener')
  return { ...proxy, socks }
}

const decisionFor = (target: string) => (l: LogLine) => l.message === 'decision' && l.target === target

t.test('curl --socks5-hostname reaches an allowed name, resolved by proxy-gate; decision and closed lines say listener socks', { skip: NETNS_SKIP }, async (t) => {
  const upstream = await startHttpUpstream('11.22.33.44')
  const dns = await startDns({ 'app.allowed.test': { A: ['11.22.33.44'] } })
  t.teardown(async () => {
    await upstream.close()
    await dns.close()
  })
  const proxy = await startSocks(t, { allow: [`app.allowed.test:${upstream.port}`], dns: { servers: [dns.server], timeoutMs: 2000 } })
  const target = `app.allowed.test:${upstream.port}`
  const res = await curl(['--socks5-hostname', `127.0.0.1:${proxy.socks}`, `http://${target}/via-socks`])
  t.equal(res.status, 200, 'the upstream answered through the SOCKS tunnel')
  t.equal(res.body, 'hello GET /via-socks')
  const decision = await logLine(proxy, decisionFor(target), 'decision')
  t.match(decision, { method: 'CONNECT', decision: 'allow', rule: `allow[0] ${target}`, resolved: ['11.22.33.44'], chosen: '11.22.33.44', listener: 'socks' })
  t.equal(dns.queries('app.allowed.test'), 2, 'proxy-gate resolved the name (one A, one AAAA question)')
  const closed = await logLine(proxy, (l) => l.message === 'closed' && l.id === decision.id, 'closed')
  t.match(closed, { kind: 'tunnel', chosen: '11.22.33.44', listener: 'socks' })
  t.ok(Number(closed.bytesToClient) > 0, 'bytes were counted')
})

t.test('curl --socks5 sends an IP literal: decided by IP rules, as an IP-literal CONNECT is', async (t) => {
  const upstream = await startHttpUpstream('127.0.0.1')
  const canary = await startCanary('127.0.0.1')
  t.teardown(async () => {
    await upstream.close()
    await canary.close()
  })
  const proxy = await startSocks(t, { allow: [`127.0.0.1:${upstream.port}`] })
  const ok = await curl(['--socks5', `127.0.0.1:${proxy.socks}`, `http://127.0.0.1:${upstream.port}/literal`])
  t.equal(ok.status, 200)
  t.equal(ok.body, 'hello GET /literal')
  const denied = await curl(['--socks5', `127.0.0.1:${proxy.socks}`, `http://127.0.0.1:${canary.port}/`])
  t.equal(denied.status, 0, 'curl got no response for a port no rule allows')
  const line = await logLine(proxy, decisionFor(`127.0.0.1:${canary.port}`), 'denial')
  t.match(line, { decision: 'deny', reason: String, suggestion: `"127.0.0.1:${canary.port}"`, listener: 'socks' })
  t.equal(canary.connections(), 0, 'the denied port never saw a connection')
})

t.test('a denied name and a denied IP literal get reply 0x02 and a logged reason; no canary is reached, no DNS is asked', async (t) => {
  const canary = await startCanary('127.0.0.1')
  const dns = await startDns({ 'denied.test': { A: ['127.0.0.1'] }, 'blocked.allowed.test': { A: ['127.0.0.1'] } })
  t.teardown(async () => {
    await canary.close()
    await dns.close()
  })
  const proxy = await startSocks(t, { allow: [`*.allowed.test:${canary.port}`], deny: ['blocked.allowed.test'], dns: { servers: [dns.server], timeoutMs: 2000 } })
  const byName = await socksConnect(proxy.socks, 'denied.test', canary.port)
  t.equal(byName.code, 0x02, 'a name no rule allows: connection not allowed by ruleset')
  await byName.session.closed
  t.match(await logLine(proxy, decisionFor(`denied.test:${canary.port}`), 'name denial'), { decision: 'deny', reason: 'no-rule', suggestion: `"denied.test:${canary.port}"`, listener: 'socks' })
  const denyWins = await socksConnect(proxy.socks, 'blocked.allowed.test', canary.port)
  t.equal(denyWins.code, 0x02, 'deny wins over a matching allow')
  t.match(await logLine(proxy, decisionFor(`blocked.allowed.test:${canary.port}`), 'deny rule'), { decision: 'deny', reason: 'deny-rule' })
  const literal = await socksConnect(proxy.socks, '127.0.0.1', canary.port)
  t.equal(literal.code, 0x02, 'an IP literal no IP rule allows')
  t.match(await logLine(proxy, decisionFor(`127.0.0.1:${canary.port}`), 'literal denial'), { decision: 'deny', listener: 'socks' })
  t.equal(canary.connections(), 0, 'nothing reached the canary')
  t.equal(dns.totalQueries(), 0, 'names no rule allows are never resolved')
})

t.test('the address guard: an allowed name that resolves to a private or metadata address gets 0x02', { skip: NETNS_SKIP }, async (t) => {
  const priv = await startCanary('10.1.2.3')
  const meta = await startCanary('169.254.169.254', priv.port)
  const dns = await startDns({ 'inside.allowed.test': { A: ['10.1.2.3'] }, 'meta.allowed.test': { A: ['169.254.169.254'] } })
  t.teardown(async () => {
    await priv.close()
    await meta.close()
    await dns.close()
  })
  const proxy = await startSocks(t, { allow: [`*.allowed.test:${priv.port}`], dns: { servers: [dns.server], timeoutMs: 2000 } })
  for (const name of ['inside.allowed.test', 'meta.allowed.test']) {
    const r = await socksConnect(proxy.socks, name, priv.port)
    t.equal(r.code, 0x02, `${name}: refused`)
    t.match(await logLine(proxy, decisionFor(`${name}:${priv.port}`), name), { decision: 'deny', reason: 'address-prohibited', listener: 'socks' })
  }
  const literal = await socksConnect(proxy.socks, '169.254.169.254', priv.port)
  t.equal(literal.code, 0x02, 'the metadata address as a literal')
  t.equal(priv.connections() + meta.connections(), 0, 'no canary saw a connection')
})

t.test('reply codes: 0x04 DNS failure, 0x05 refused, 0x01 other failures, 0x00 and a relayed server-first protocol', { skip: NETNS_SKIP }, async (t) => {
  const refusedPort = await closedPort()
  const banner = await startBannerUpstream('11.22.33.44', 'SSH-2.0-test\r\n')
  const dns = await startDns({ 'gone.allowed.test': { rcode: 'NXDOMAIN' }, 'ssh.allowed.test': { A: ['11.22.33.44'] } })
  t.teardown(async () => {
    await banner.close()
    await dns.close()
  })
  const proxy = await startSocks(t, { allow: ['*.allowed.test:22', `ssh.allowed.test:${banner.port}`, `127.0.0.1:${refusedPort}`], dns: { servers: [dns.server], timeoutMs: 2000 } })
  t.equal((await socksConnect(proxy.socks, 'gone.allowed.test', 22)).code, 0x04, 'NXDOMAIN: host unreachable')
  t.match(await logLine(proxy, decisionFor('gone.allowed.test:22'), 'dns'), { decision: 'error', reason: 'dns_error', listener: 'socks' })
  t.equal((await socksConnect(proxy.socks, '127.0.0.1', refusedPort)).code, 0x05, 'a refused connection: connection refused')
  t.equal((await socksConnect(proxy.socks, 'bad_-.allowed..test', 22)).code, 0x01, 'a name that is no host name: general failure')
  t.match(await logLine(proxy, (l) => l.message === 'decision' && l.reason === 'http_request_error' && /bad SOCKS destination/.test(String(l.detail)), 'bad name'), { listener: 'socks' })
  const ok = await socksConnect(proxy.socks, 'ssh.allowed.test', banner.port)
  t.equal(ok.code, 0x00, 'an allowed name: succeeded')
  t.equal((await ok.session.read(14))?.toString(), 'SSH-2.0-test\r\n', 'the server spoke first and its banner came through')
  ok.session.socket.write('hello')
  t.equal((await ok.session.read(10))?.toString(), 'got: hello', 'and the client was heard')
  ok.session.socket.destroy()
})

t.test('reply 0x06 for a connect timeout', { skip: PYTHON ? false : 'needs python3 for a listener that never accepts' }, async (t) => {
  const hole = await startBlackhole()
  t.teardown(() => hole.close())
  const proxy = await startSocks(t, { allow: [`127.0.0.1:${hole.port}`], limits: { connectTimeoutMs: 300 } })
  t.equal((await socksConnect(proxy.socks, '127.0.0.1', hole.port)).code, 0x06, 'TTL expired, the code clients read as a timeout')
})

t.test('BIND and UDP ASSOCIATE get 0x07 and a log line; an unknown address type gets 0x08', async (t) => {
  const canary = await startCanary('127.0.0.1')
  t.teardown(() => canary.close())
  const proxy = await startSocks(t, { allow: [`127.0.0.1:${canary.port}`] })
  for (const [command, name] of [[2, 'BIND'], [3, 'UDP ASSOCIATE']] as const) {
    const session = await socksSession(proxy.socks)
    session.socket.write(Buffer.concat([greeting([0]), request('127.0.0.1', canary.port, command)]))
    t.same([...((await session.read(2)) ?? [])], [5, 0], `${name}: no authentication chosen`)
    t.equal((await session.read(10))?.[1], 0x07, `${name}: command not supported`)
    await session.closed
    t.match(await logLine(proxy, (l) => l.message === 'decision' && l.method === name, name), { decision: 'error', detail: /only CONNECT/, listener: 'socks' })
  }
  const session = await socksSession(proxy.socks)
  session.socket.write(Buffer.concat([greeting([0]), Buffer.from([5, 1, 0, 9, 1, 2, 3, 4, 0, 80])]))
  await session.read(2)
  t.equal((await session.read(10))?.[1], 0x08, 'address type not supported')
  await session.closed
  t.equal(canary.connections(), 0, 'nothing was dialled')
})

t.test('with "auth": username/password only, checked as proxy Basic auth, with its lockout; the password is never logged', async (t) => {
  const upstream = await startHttpUpstream('127.0.0.1')
  t.teardown(() => upstream.close())
  const proxy = await startSocks(t, { allow: [`127.0.0.1:${upstream.port}`], auth: { users: { alice: await hashPassword('s3cret-pw') } } })
  const viaCurl = await curl(['--proxy', `socks5h://alice:s3cret-pw@127.0.0.1:${proxy.socks}`, `http://127.0.0.1:${upstream.port}/login`])
  t.equal(viaCurl.status, 200, 'curl logs in and gets through')
  t.equal((await socksConnect(proxy.socks, '127.0.0.1', upstream.port, { user: 'alice', password: 's3cret-pw' })).code, 0x00, 'our client too')

  const anonymous = await socksSession(proxy.socks)
  anonymous.socket.write(greeting([0]))
  t.same([...((await anonymous.read(2)) ?? [])], [5, 0xff], 'no authentication offered: no acceptable method')
  await anonymous.closed

  const wrong = await socksSession(proxy.socks)
  wrong.socket.write(Buffer.concat([greeting([0, 2]), credentials('alice', 'wrong-pw')]))
  t.same([...((await wrong.read(2)) ?? [])], [5, 2], 'username/password chosen')
  t.same([...((await wrong.read(2)) ?? [])], [1, 1], 'wrong password: status 1')
  await wrong.closed
  t.match(await logLine(proxy, (l) => l.message === 'decision' && l.status === 407, 'refused login'), { decision: 'error', listener: 'socks' })

  for (let i = 0; i < 10; i++) {
    const s = await socksSession(proxy.socks)
    s.socket.write(Buffer.concat([greeting([2]), credentials('alice', `guess-${i}`)]))
    await s.closed
  }
  const locked = await socksSession(proxy.socks)
  locked.socket.write(Buffer.concat([greeting([2]), credentials('alice', 's3cret-pw')]))
  await locked.read(2)
  t.same([...((await locked.read(2)) ?? [])], [1, 1], 'after too many failures even the right password is refused (lockout)')
  t.match(await logLine(proxy, (l) => l.message === 'decision' && l.status === 429, 'lockout'), { detail: /too many failed proxy logins/, listener: 'socks' })
  const text = JSON.stringify(proxy.logs())
  t.notOk(text.includes('s3cret-pw') || text.includes('guess-3') || text.includes('wrong-pw'), 'no password in the log')
})

t.test('SOCKS4 and what is no SOCKS5 greeting are closed at once, logged once per client', async (t) => {
  const proxy = await startSocks(t, { allow: [] })
  for (const bytes of [Buffer.from([4, 1, 0, 80, 127, 0, 0, 1, 0]), Buffer.from([4, 1, 0, 80, 0, 0, 0, 1, 0, 0x61, 0x2e, 0x74, 0]), Buffer.from('GET / HTTP/1.1\r\n\r\n')]) {
    const session = await socksSession(proxy.socks)
    session.socket.write(bytes)
    await session.closed
    t.equal(session.pending().length, 0, 'closed without a byte of answer')
  }
  const warned = proxy.logs().filter((l) => l.message.startsWith('not a SOCKS5 client'))
  t.equal(warned.length, 1, 'one line for the client, however often it comes')
  t.match(warned[0], { client: '127.0.0.1', reason: /SOCKS4/ })
})

t.test('truncated, oversized and slow handshakes are closed; the listener keeps serving', async (t) => {
  const banner = await startBannerUpstream('127.0.0.1', 'hi\n')
  t.teardown(() => banner.close())
  const proxy = await startSocks(t, { allow: [`127.0.0.1:${banner.port}`], limits: { headerTimeoutMs: 300 }, auth: { users: { bob: await hashPassword('pw-for-bob') } } })
  const truncated = await socksSession(proxy.socks)
  truncated.socket.end(Buffer.from([5, 3, 0]))
  await truncated.closed
  t.equal(truncated.pending().length, 0, 'a greeting cut short gets no answer')

  // 2,000 bytes behind the login are held while it is checked (they could be a request and a large ClientHello), then read: no request
  const oversized = await socksSession(proxy.socks)
  oversized.socket.write(Buffer.concat([greeting([2]), credentials('bob', 'pw-for-bob'), Buffer.alloc(2_000, 0x41)]))
  await oversized.closed
  t.match(await logLine(proxy, (l) => l.message === 'decision' && /bad SOCKS5 request: request version 65/.test(String(l.detail)), 'oversized'), { listener: 'socks' })

  const slow = await socksSession(proxy.socks)
  const started = Date.now()
  slow.socket.write(Buffer.from([5]))
  await slow.closed
  const elapsed = Date.now() - started
  t.ok(elapsed >= 250 && elapsed < 3_000, `a slowloris greeting is closed at the handshake timeout (${elapsed} ms)`)
  t.match(await logLine(proxy, (l) => l.message === 'decision' && l.status === 408, 'timeout'), { detail: /headerTimeoutMs/, listener: 'socks' })

  const max = await socksSession(proxy.socks)
  max.socket.write(greeting([...Array<number>(254).fill(0x80), 2]))
  t.same([...((await max.read(2)) ?? [])], [5, 2], 'the longest greeting there is (255 methods) is read')
  max.socket.destroy()
  const ok = await socksConnect(proxy.socks, '127.0.0.1', banner.port, { user: 'bob', password: 'pw-for-bob' })
  t.equal(ok.code, 0x00, 'still serving')
  ok.session.socket.destroy()
})

t.test('IPv6 literals (address type 4) are decided by IP rules; an IPv4-mapped one is read as the IPv4 address', { skip: NETNS_SKIP }, async (t) => {
  const canary = await startCanary('2600:1f00::10')
  const loop = await startCanary('127.0.0.1', canary.port)
  t.teardown(async () => {
    await canary.close()
    await loop.close()
  })
  const proxy = await startSocks(t, { allow: [`[2600:1f00::10]:${canary.port}`] })
  const v6 = await socksConnect(proxy.socks, '2600:1f00::10', canary.port)
  t.equal(v6.code, 0x00, 'an allowed IPv6 literal')
  v6.session.socket.destroy()
  t.match(await logLine(proxy, decisionFor(`[2600:1f00::10]:${canary.port}`), 'v6'), { decision: 'allow', chosen: '2600:1f00::10', listener: 'socks' })
  const mapped = await socksConnect(proxy.socks, '::ffff:127.0.0.1', canary.port)
  t.equal(mapped.code, 0x02, '::ffff:127.0.0.1 is 127.0.0.1, which no rule allows')
  t.match(await logLine(proxy, decisionFor(`127.0.0.1:${canary.port}`), 'mapped'), { decision: 'deny', listener: 'socks' })
  t.equal(loop.connections(), 0, 'the loopback canary never saw a connection')
})
