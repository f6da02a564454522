// The address guard and DNS end to end (corpus A, B, G and R): real canaries listen on the
// forbidden addresses inside the test network namespace, a real DNS server on loopback answers
// the fixture names, and every refusal is checked at the sink (zero connections) as well as on
// the wire (status, Proxy-Status, body, close) and in the decision log.
import { randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import { startDns, type Zone } from './helpers/dns.js'
import { connectHead, parseResponse, proxyStatus } from './helpers/http.js'
import { NETNS_SKIP, rawExchange, startCanary, startHttpUpstream, statusOf, type Canary, type RawResult } from './helpers/net.js'
import { logLine, startProxy, type LogLine, type TestProxy } from './helpers/proxy.js'

// Everything here binds or could dial the namespace's stand-in addresses.
const NETNS = { skip: NETNS_SKIP }

// ---- helpers -------------------------------------------------------------------------------

interface Refusal {
  readonly status: number
  readonly error: string
  readonly details?: RegExp
  readonly body?: RegExp
  /** CONNECT refusals close the connection; plain-HTTP ones may keep it */
  readonly closes?: boolean
}

function assertRefused(t: Test, res: RawResult, want: Refusal, what: string): void {
  const parsed = parseResponse(res.text)
  t.equal(parsed.status, want.status, `${what}: ${want.status}`)
  t.equal(statusOf(res.text, 1), undefined, `${what}: exactly one response`)
  const ps = proxyStatus(parsed)
  t.equal(ps.error, want.error, `${what}: Proxy-Status error=${want.error}`)
  if (want.details) t.match(ps.details ?? '', want.details, `${what}: Proxy-Status details`)
  t.match(parsed.body, /^proxy-gate: /, `${what}: text body`)
  if (want.body) t.match(parsed.body, want.body, `${what}: body explains`)
  if (want.closes !== false) {
    t.equal(parsed.headers.get('connection'), 'close', `${what}: Connection: close`)
    t.ok(res.closed, `${what}: connection closed after the response`)
  }
}

/**
 * CONNECT: an allowed tunnel is dropped as soon as its 200 head is in; any other answer is read
 * until the proxy closes the connection (which every CONNECT refusal must do).
 */
function tryConnect(proxy: TestProxy, target: string, after = ''): Promise<RawResult> {
  return rawExchange(proxy.port, connectHead(target) + after, { until: (s) => statusOf(s) === 200 && s.includes('\r\n\r\n') })
}

/** A whole plain-HTTP response (the proxy may keep the connection open after a 403). */
function tryGet(proxy: TestProxy, url: string): Promise<RawResult> {
  return rawExchange(proxy.port, `GET ${url} HTTP/1.1\r\nHost: ${url.replace(/^http:\/\/([^/]*).*$/, '$1')}\r\n\r\n`, {
    until: (s) => {
      const end = s.indexOf('\r\n\r\n')
      const length = Number(/\r\ncontent-length: (\d+)/i.exec(s)?.[1] ?? NaN)
      return end >= 0 && s.length >= end + 4 + length
    },
  })
}

/** The latest decision line for a target (a target may be asked for more than once). */
function lastDecision(proxy: TestProxy, target: string): LogLine | undefined {
  return proxy.logs().findLast((l) => l.message === 'decision' && l.target === target)
}

interface Closable {
  readonly port: number
  close(): Promise<void>
}

/** Starts listeners on one common port (retrying when another listener already holds it). */
async function samePort<T extends readonly Closable[]>(starts: { readonly [K in keyof T]: (port: number) => Promise<T[K]> }): Promise<T> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const started: Closable[] = []
    try {
      for (const start of starts as ReadonlyArray<(port: number) => Promise<Closable>>) started.push(await start(started[0]?.port ?? 0))
      return started as unknown as T
    } catch (error) {
      await Promise.all(started.map((s) => s.close()))
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error
    }
  }
  throw new Error('no port free on every address')
}

/** Canaries on the same port at each of `hosts`, looked up by host. */
async function canaries(hosts: readonly string[]): Promise<{ port: number; at(host: string): Canary; all: readonly Canary[] }> {
  const all = await samePort<Canary[]>(hosts.map((h) => (port: number) => startCanary(h, port)))
  const byHost = new Map(all.map((c) => [c.host, c]))
  return {
    port: all[0]?.port ?? 0,
    all,
    at: (host) => {
      const c = byHost.get(host)
      if (!c) throw new Error(`no canary on ${host}`)
      return c
    },
  }
}

function dnsRules(server: string, timeoutMs = 2_000): Record<string, unknown> {
  return { servers: [server], timeoutMs }
}

// ---- corpus G: names whose answers the guard refuses ----------------------------------------

t.test('allowed names that resolve to special addresses are refused, with no connection anywhere (corpus G 68, 70, 71)', NETNS, async (t) => {
  const sinks = await canaries(['11.22.33.44', '127.0.0.1', '169.254.169.254', '169.254.170.2', '10.0.0.1', '192.168.1.10', '100.100.100.200', 'fd00:ec2::254', 'fd00::10', '::1'])
  const zone: Zone = {
    'good.example.com': { A: ['11.22.33.44'] },
    'evil.example.com': { A: ['169.254.169.254'] },
    'ecs.example.com': { A: ['169.254.170.2'] },
    'mixed.example.com': { A: ['11.22.33.44', '127.0.0.1'] },
    'mixed-reversed.example.com': { A: ['127.0.0.1', '11.22.33.44'] },
    'mixed-family.example.com': { A: ['11.22.33.44'], AAAA: ['::1'] },
    'mapped.example.com': { AAAA: ['::ffff:10.0.0.1'] },
    'mapped-meta.example.com': { AAAA: ['::ffff:169.254.169.254'] },
    'nat64.example.com': { AAAA: ['64:ff9b::a9fe:a9fe'] },
    'sixtofour.example.com': { AAAA: ['2002:a9fe:a9fe::1'] },
    'teredo.example.com': { AAAA: ['2001:0:4136:e378:8000:63bf:56fe:56fe'] },
    'imds6.example.com': { AAAA: ['fd00:ec2::254'] },
    'ula.example.com': { AAAA: ['fd00::10'] },
    'rfc1918.example.com': { A: ['192.168.1.10'] },
    'alibaba.example.com': { A: ['100.100.100.200'] },
    'zero.example.com': { A: ['0.0.0.0'] },
    'linklocal6.example.com': { AAAA: ['fe80::1'] },
  }
  const dns = await startDns(zone)
  const proxy = await startProxy({ allow: ['*.example.com:*'], dns: dnsRules(dns.server) })
  t.teardown(async () => {
    await proxy.close()
    await dns.close()
    for (const c of sinks.all) await c.close()
  })
  const P = sinks.port
  const cases: Array<[name: string, details: RegExp, suggestion: RegExp]> = [
    ['evil.example.com', new RegExp(`^evil\\.example\\.com resolves to 169\\.254\\.169\\.254:${P}, a cloud metadata service address`), new RegExp(`"169\\.254\\.169\\.254:${P}"`)],
    ['ecs.example.com', /169\.254\.170\.2:\d+, a cloud metadata service \(ECS\) address/, /"169\.254\.170\.2:\d+"/],
    ['mixed.example.com', /^mixed\.example\.com resolves to 127\.0\.0\.1:\d+, a loopback address/, /"127\.0\.0\.1:\d+"/],
    ['mixed-reversed.example.com', /resolves to 127\.0\.0\.1:\d+, a loopback address/, /"127\.0\.0\.1:\d+"/],
    ['mixed-family.example.com', /resolves to \[::1\]:\d+, a loopback \(::1\) address/, /"\[::1\]:\d+"/],
    ['mapped.example.com', /resolves to 10\.0\.0\.1:\d+, a private network \(RFC 1918\) address/, new RegExp(`\\{"host":"mapped\\.example\\.com","ports":\\[${P}\\],"private":true\\}`)],
    ['mapped-meta.example.com', /resolves to 169\.254\.169\.254:\d+, a cloud metadata service address/, /"169\.254\.169\.254:\d+"/],
    ['nat64.example.com', /resolves to \[64:ff9b::a9fe:a9fe\]:\d+, a cloud metadata service in NAT64 form \(169\.254\.169\.254\) address/, /"\[64:ff9b::a9fe:a9fe\]:\d+"/],
    ['sixtofour.example.com', /resolves to \[2002:a9fe:a9fe::1\]:\d+, a cloud metadata service in 6to4 form \(169\.254\.169\.254\) address/, /"\[2002:a9fe:a9fe::1\]:\d+"/],
    ['teredo.example.com', /resolves to \[2001:0:4136:e378:8000:63bf:56fe:56fe\]:\d+, a Teredo/, /"\[2001:0:4136:e378:8000:63bf:56fe:56fe\]:\d+"/],
    ['imds6.example.com', /resolves to \[fd00:ec2::254\]:\d+, a cloud metadata service \(AWS IPv6\) address/, /"\[fd00:ec2::254\]:\d+"/],
    ['ula.example.com', /resolves to \[fd00::10\]:\d+, a unique local address/, /"private":true/],
    ['rfc1918.example.com', /resolves to 192\.168\.1\.10:\d+, a private network/, /"private":true/],
    ['alibaba.example.com', /resolves to 100\.100\.100\.200:\d+, a cloud metadata service \(Alibaba\) address/, /"100\.100\.100\.200:\d+"/],
    ['zero.example.com', /resolves to 0\.0\.0\.0:\d+, a "this network"/, /"0\.0\.0\.0:\d+"/],
    ['linklocal6.example.com', /resolves to \[fe80::1\]:\d+, a link-local \(fe80::\/10\) address/, /"\[fe80::1\]:\d+"/],
  ]
  let served = 0
  for (const [name, details, suggestion] of cases) {
    const target = `${name}:${P}`
    const res = await tryConnect(proxy, target, 'tunnel bytes sent early')
    assertRefused(t, res, { status: 403, error: 'destination_ip_prohibited', details, body: suggestion }, name)
    t.equal(dns.queries(name), 2, `${name}: resolved once (A and AAAA)`)
    const line = await logLine(proxy, (l) => l.message === 'decision' && l.target === target, `${name} decision`)
    t.match(line, { method: 'CONNECT', decision: 'deny', reason: 'address-prohibited', resolved: Array, wouldDeny: false }, `${name}: decision line`)
    t.notOk(line.chosen, `${name}: nothing chosen`)
    const ok = await tryConnect(proxy, `good.example.com:${P}`)
    t.equal(statusOf(ok.text), 200, `${name}: the next request is served`)
    served++
  }
  t.same(lastDecision(proxy, `mixed.example.com:${P}`)?.resolved, ['11.22.33.44', '127.0.0.1'], 'every address of the mixed answer was classified')
  t.equal(sinks.at('11.22.33.44').connections(), served, 'the public address saw only the follow-up requests: no "good address" was picked from a mixed answer')
  for (const c of sinks.all) if (c.host !== '11.22.33.44') t.equal(c.connections(), 0, `nothing reached ${c.host}`)
})

t.test("a name resolving to the proxy's own listener is refused even when an IP rule covers 127.0.0.1 on all ports (corpus G 73, D 49)", NETNS, async (t) => {
  const loop = await startCanary('127.0.0.1')
  const dns = await startDns({ 'self.example.com': { A: ['127.0.0.1'] }, 'zero.example.com': { A: ['0.0.0.0'] } })
  // 0.0.0.0 is named too: a connect() to the unspecified address lands on the local host, i.e. this listener
  const proxy = await startProxy({ allow: ['self.example.com:*', 'zero.example.com:*', '127.0.0.1:*', '0.0.0.0:*'], dns: dnsRules(dns.server) })
  t.teardown(async () => {
    await proxy.close()
    await loop.close()
    await dns.close()
  })
  const own = new RegExp(`^(127\\.0\\.0\\.1|0\\.0\\.0\\.0):${proxy.port} is proxy-gate's own listener$`)
  const selfTargets = [`self.example.com:${proxy.port}`, `127.0.0.1:${proxy.port}`, `0.0.0.0:${proxy.port}`, `zero.example.com:${proxy.port}`]
  for (const target of selfTargets) {
    const res = await tryConnect(proxy, target, `CONNECT self.example.com:${proxy.port} HTTP/1.1\r\n\r\n`)
    assertRefused(t, res, { status: 403, error: 'destination_ip_prohibited', details: own, body: /this destination cannot be allowed\n$/ }, target)
    const line = await logLine(proxy, (l) => l.message === 'decision' && l.target === target, target)
    t.equal(line.reason, 'self-connection', `${target}: reason self-connection`)
    t.notOk(proxy.logs().some((l) => l.id === line.id && l.message !== 'decision'), `${target}: never dialled`)
  }
  const viaRule = await tryConnect(proxy, `self.example.com:${loop.port}`)
  t.equal(statusOf(viaRule.text), 200, 'the same name on another loopback port is allowed by the IP rule')
  t.equal(loop.connections(), 1)
  const decisions = proxy.logs().filter((l) => l.message === 'decision')
  t.equal(decisions.length, selfTargets.length + 1, 'one decision per request: the proxy never connected to itself')
  t.ok(decisions.every((l) => /^127\.0\.0\.1:\d+$/.test(String(l.client)) && l.client !== `127.0.0.1:${proxy.port}`), 'every client was the test')
})

t.test('a proxy listening on every address refuses every local alias of itself (corpus D 49)', NETNS, async (t) => {
  const loop = await startCanary('127.0.0.1')
  const other = await startCanary('127.0.0.2')
  const dns = await startDns({ 'self.example.com': { A: ['127.0.0.2'] }, 'meta.example.com': { A: ['169.254.169.254'] } })
  const proxy = await startProxy({
    listen: '0.0.0.0:0',
    allow: ['*.example.com:*', '127.0.0.0/8:*', '0.0.0.0:*', '169.254.169.254:*', '11.22.33.44:*'],
    dns: dnsRules(dns.server),
  })
  t.teardown(async () => {
    await proxy.close()
    await loop.close()
    await other.close()
    await dns.close()
  })
  const P = proxy.port
  const aliases = [`127.0.0.1:${P}`, `127.0.0.2:${P}`, `127.255.0.9:${P}`, `0.0.0.0:${P}`, `169.254.169.254:${P}`, `11.22.33.44:${P}`, `self.example.com:${P}`, `meta.example.com:${P}`]
  for (const target of aliases) {
    const res = await tryConnect(proxy, target, `CONNECT 127.0.0.1:${loop.port} HTTP/1.1\r\n\r\n`)
    assertRefused(t, res, { status: 403, error: 'destination_ip_prohibited', details: new RegExp(`:${P} is proxy-gate's own listener$`) }, `listener alias ${target}`)
  }
  t.equal(statusOf((await tryConnect(proxy, `127.0.0.2:${other.port}`)).text), 200, 'control: 127.0.0.2 on another port is allowed by the 127/8 rule')
  t.equal(other.connections(), 1)
  t.equal(loop.connections(), 0, 'no tunnelled request reached the loopback canary through a loop')
  const decisions = proxy.logs().filter((l) => l.message === 'decision')
  t.equal(decisions.length, aliases.length + 1, 'one decision per request: the proxy never connected to itself')
})

t.test('DNS rebinding: a TTL-0 name whose later answer is loopback is refused, and the checked address is what was dialled (corpus G, R)', NETNS, async (t) => {
  const [upstream, loop] = await samePort([(port: number) => startHttpUpstream('11.22.33.44', undefined, port), (port: number) => startCanary('127.0.0.1', port)])
  const dns = await startDns({ 'rebind.example.com': (aQueries) => (aQueries <= 1 ? { A: ['11.22.33.44'], ttl: 0 } : { A: ['127.0.0.1'], ttl: 0 }) })
  const target = `rebind.example.com:${upstream.port}`
  const proxy = await startProxy({ allow: [target], dns: dnsRules(dns.server) })
  t.teardown(async () => {
    await proxy.close()
    await upstream.close()
    await loop.close()
    await dns.close()
  })
  const get = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: rebind.example.com\r\nConnection: close\r\n\r\n`
  const first = await rawExchange(proxy.port, connectHead(target) + get('/first'), { until: (s) => s.includes('hello GET /first') })
  t.equal(statusOf(first.text), 200, 'first request: tunnel established')
  t.match(first.text, /hello GET \/first$/, 'first request: answered by the upstream at 11.22.33.44')
  // A questions only: a resolver may keep an empty AAAA answer for a moment (negative caching); the rebinding is in the A answers
  t.equal(dns.aQueries('rebind.example.com'), 1, 'first request: the name was resolved once, not again to dial')
  t.equal(upstream.connections(), 1, 'the upstream at the checked address saw the connection')
  t.same(
    upstream.requests.map((r) => [r.url, r.headers.host]),
    [['/first', 'rebind.example.com']],
    'one request, carried unchanged through the tunnel',
  )
  const firstDecision = await logLine(proxy, (l) => l.message === 'decision' && l.target === target, 'first decision')
  t.match(firstDecision, { decision: 'allow', resolved: ['11.22.33.44'], chosen: '11.22.33.44' })
  const closed = await logLine(proxy, (l) => l.message === 'closed' && l.id === firstDecision.id, 'first closed')
  t.equal(closed.chosen, '11.22.33.44', 'the dialled peer was the checked IP literal')

  for (const n of [2, 3]) {
    const later = await tryConnect(proxy, target, get(`/later-${n}`))
    assertRefused(
      t,
      later,
      { status: 403, error: 'destination_ip_prohibited', details: new RegExp(`^rebind\\.example\\.com resolves to 127\\.0\\.0\\.1:${upstream.port}, a loopback address`) },
      `request ${n}`,
    )
    t.equal(dns.aQueries('rebind.example.com'), n, `request ${n}: resolved again, exactly once`)
  }
  t.equal(loop.connections(), 0, 'the proxy never connected to 127.0.0.1')
  t.equal(upstream.connections(), 1, 'and did not reuse the first verdict')
})

// ---- private names and IP rules -------------------------------------------------------------

t.test('"private": true unlocks RFC 1918, ULA and CGNAT for that name, never loopback, metadata or the proxy itself', NETNS, async (t) => {
  const sinks = await canaries(['10.0.0.1', '192.168.1.10', 'fd00::10', '127.0.0.1', '169.254.169.254', '100.100.100.200', 'fd00:ec2::254'])
  const dns = await startDns({
    'a.priv.test': { A: ['10.0.0.1'] },
    'b.priv.test': { A: ['192.168.1.10'] },
    'c.priv.test': { AAAA: ['fd00::10'] },
    'loop.priv.test': { A: ['127.0.0.1'] },
    'meta.priv.test': { A: ['169.254.169.254'] },
    'alibaba.priv.test': { A: ['100.100.100.200'] },
    'imds6.priv.test': { AAAA: ['fd00:ec2::254'] },
    'self.priv.test': { A: ['127.0.0.1'] },
    'plain.test': { A: ['10.0.0.1'] },
  })
  const P = sinks.port
  const proxy = await startProxy({
    allow: [{ host: '*.priv.test', ports: [P], private: true }, { host: 'self.priv.test', ports: '*', private: true }, `plain.test:${P}`],
    dns: dnsRules(dns.server),
  })
  t.teardown(async () => {
    await proxy.close()
    await dns.close()
    for (const c of sinks.all) await c.close()
  })
  for (const name of ['a.priv.test', 'b.priv.test', 'c.priv.test']) {
    const res = await tryConnect(proxy, `${name}:${P}`)
    t.equal(statusOf(res.text), 200, `${name}: allowed by the private name rule`)
  }
  t.equal(sinks.at('10.0.0.1').connections(), 1, '10.0.0.1 reached')
  t.equal(sinks.at('192.168.1.10').connections(), 1, '192.168.1.10 reached')
  t.equal(sinks.at('fd00::10').connections(), 1, 'fd00::10 reached')
  const refused: Array<[string, RegExp]> = [
    [`loop.priv.test:${P}`, /127\.0\.0\.1:\d+, a loopback address/],
    [`meta.priv.test:${P}`, /169\.254\.169\.254:\d+, a cloud metadata service address/],
    [`alibaba.priv.test:${P}`, /100\.100\.100\.200:\d+, a cloud metadata service \(Alibaba\) address/],
    [`imds6.priv.test:${P}`, /\[fd00:ec2::254\]:\d+, a cloud metadata service \(AWS IPv6\) address/],
    [`self.priv.test:${proxy.port}`, /proxy-gate's own listener/],
    [`plain.test:${P}`, /^plain\.test resolves to 10\.0\.0\.1:\d+, a private network \(RFC 1918\) address/],
  ]
  for (const [target, details] of refused) {
    const res = await tryConnect(proxy, target)
    assertRefused(t, res, { status: 403, error: 'destination_ip_prohibited', details }, target)
  }
  t.match(parseResponse((await tryConnect(proxy, `plain.test:${P}`)).text).body, new RegExp(`\\{"host":"plain\\.test","ports":\\[${P}\\],"private":true\\}`), 'the fix for a private name is the private flag')
  for (const host of ['127.0.0.1', '169.254.169.254', '100.100.100.200', 'fd00:ec2::254']) t.equal(sinks.at(host).connections(), 0, `nothing reached ${host}`)
  t.equal(sinks.at('10.0.0.1').connections(), 1, 'plain.test (no private flag) never reached 10.0.0.1')
})

t.test('an IP rule vouches for the private address an allowed name resolves to, on its ports only; it never allows a name by itself', NETNS, async (t) => {
  const onP = await startCanary('10.0.0.1')
  const onQ = await startCanary('10.0.0.1')
  const dns = await startDns({ 'ipok.test': { A: ['10.0.0.1'] }, 'other.test': { A: ['10.0.0.1'] } })
  const proxy = await startProxy({ allow: ['ipok.test:*', `10.0.0.1:${onP.port}`], dns: dnsRules(dns.server) })
  t.teardown(async () => {
    await proxy.close()
    await onP.close()
    await onQ.close()
    await dns.close()
  })
  const ok = await tryConnect(proxy, `ipok.test:${onP.port}`)
  t.equal(statusOf(ok.text), 200, 'allowed name + IP rule for 10.0.0.1 on that port: reachable')
  t.equal(onP.connections(), 1)
  const decision = await logLine(proxy, (l) => l.message === 'decision' && l.target === `ipok.test:${onP.port}`, 'ipok decision')
  t.match(decision, { decision: 'allow', rule: 'allow[0] ipok.test:*', resolved: ['10.0.0.1'], chosen: '10.0.0.1' })

  const otherPort = await tryConnect(proxy, `ipok.test:${onQ.port}`)
  assertRefused(t, otherPort, { status: 403, error: 'destination_ip_prohibited', details: new RegExp(`10\\.0\\.0\\.1:${onQ.port}, a private network`) }, 'port the IP rule does not cover')
  t.equal(onQ.connections(), 0)

  const before = dns.queries('other.test')
  const other = await tryConnect(proxy, `other.test:${onP.port}`)
  assertRefused(t, other, { status: 403, error: 'http_request_denied', details: /^no allow rule matches other\.test:\d+$/ }, 'name without a name rule')
  t.equal(dns.queries('other.test') - before, 0, 'and it was not even resolved')

  const literal = await tryConnect(proxy, `10.0.0.1:${onP.port}`)
  t.equal(statusOf(literal.text), 200, 'the IP rule allows the literal itself')
  t.equal(onP.connections(), 2)
})

// ---- deny before resolve, DNS failures ------------------------------------------------------

t.test('200 concurrent CONNECTs to names no rule allows are all refused with zero DNS queries (corpus G 74a)', NETNS, async (t) => {
  const sink = await startCanary('11.22.33.44')
  const names = Array.from({ length: 200 }, (_, i) => (i % 4 === 3 ? `allowed.test.r${randomBytes(4).toString('hex')}.test` : `r${randomBytes(6).toString('hex')}.not-allowed.test`))
  const zone: Zone = Object.fromEntries(names.map((n) => [n, { A: ['11.22.33.44'] }]))
  const dns = await startDns(zone)
  const proxy = await startProxy({ allow: ['allowed.test:*', '*.allowed.test:*'], dns: dnsRules(dns.server) })
  t.teardown(async () => {
    await proxy.close()
    await sink.close()
    await dns.close()
  })
  const results = await Promise.all(names.map((n) => rawExchange(proxy.port, connectHead(`${n}:${sink.port}`))))
  t.equal(results.filter((r) => statusOf(r.text) === 403).length, names.length, 'all 403')
  t.equal(results.filter((r) => /\r\nProxy-Status: proxy-gate; error=http_request_denied; details="no allow rule matches /.test(r.text)).length, names.length, 'all say why')
  t.ok(results.every((r) => r.closed), 'all closed')
  t.equal(dns.totalQueries(), 0, 'the DNS server saw no query at all')
  t.equal(sink.connections(), 0, 'and nothing was dialled')
  t.equal(proxy.logs().filter((l) => l.message === 'decision' && l.reason === 'no-rule').length, names.length, 'one decision line each')
})

t.test('DNS failures: NXDOMAIN and SERVFAIL are 502 dns_error; a silent server is 504 dns_timeout at dns.timeoutMs while other requests are served', NETNS, async (t) => {
  const sink = await startCanary('11.22.33.44')
  const dns = await startDns({
    'nx.example.com': { rcode: 'NXDOMAIN' },
    'servfail.example.com': { rcode: 'SERVFAIL' },
    'empty.example.com': {},
    'slow.example.com': { silent: true },
    'good.example.com': { A: ['11.22.33.44'] },
  })
  const proxy = await startProxy({ allow: ['*.example.com:*'], dns: dnsRules(dns.server, 300) })
  t.teardown(async () => {
    await proxy.close()
    await sink.close()
    await dns.close()
  })
  const P = sink.port
  const failures: Array<[string, RegExp]> = [
    ['nx.example.com', /^DNS: nx\.example\.com does not exist \(NXDOMAIN\)$/],
    ['servfail.example.com', /^DNS: servfail\.example\.com could not be resolved \(ESERVFAIL\)$/],
    ['empty.example.com', /^DNS: empty\.example\.com has no A or AAAA records$/],
  ]
  for (const [name, details] of failures) {
    const res = await tryConnect(proxy, `${name}:${P}`)
    assertRefused(t, res, { status: 502, error: 'dns_error', details, body: new RegExp(`cannot reach ${name.replace(/\./g, '\\.')}:${P}`) }, name)
    const line = await logLine(proxy, (l) => l.message === 'decision' && l.target === `${name}:${P}`, name)
    t.match(line, { decision: 'error', reason: 'dns_error', status: 502 }, `${name}: decision line`)
  }

  const started = Date.now()
  const slow = tryConnect(proxy, `slow.example.com:${P}`).then((r) => ({ r, at: Date.now() }))
  const good = await tryConnect(proxy, `good.example.com:${P}`)
  const goodAt = Date.now()
  t.equal(statusOf(good.text), 200, 'another name is served while the slow lookup is pending')
  const { r, at } = await slow
  t.ok(goodAt < at, 'the good request finished first')
  assertRefused(t, r, { status: 504, error: 'dns_timeout', details: /^DNS lookup of slow\.example\.com timed out after 300 ms$/ }, 'silent server')
  const elapsed = at - started
  t.ok(elapsed >= 250 && elapsed < 2_000, `answered at the DNS timeout (${elapsed} ms)`)
  t.equal(sink.connections(), 1, 'only the good request was dialled')
})

// ---- corpus A and B: IP literals ------------------------------------------------------------

t.test('special and lenient IP literals are refused even under allow-everything IP rules (corpus A, B)', NETNS, async (t) => {
  const sinks = await canaries(['11.22.33.44', '2600:1f00::10', '127.0.0.1', '127.127.127.127', '::1', '169.254.169.254', '169.254.170.2', '10.0.0.1', '192.168.1.10', '100.100.100.200', 'fd00:ec2::254', 'fd00::10'])
  const P = sinks.port
  // every public address on P is allowed: only the guard stands between a client and the sinks
  const proxy = await startProxy({ allow: [`0.0.0.0/0:${P}`, `[::/0]:${P}`] })
  t.teardown(async () => {
    await proxy.close()
    for (const c of sinks.all) await c.close()
  })
  const prohibited = [
    '0.0.0.0', // A 7
    '127.0.0.1',
    '127.127.127.127', // A 8
    '127.255.255.255',
    '10.0.0.1',
    '192.168.1.10',
    '100.64.0.1', // A 10
    '100.127.255.254',
    '100.100.100.200',
    '169.254.169.254',
    '169.254.170.2',
    '168.63.129.16', // A 11
    '192.0.0.192',
    '224.0.0.1',
    '255.255.255.255',
    '240.0.0.1',
    '198.18.0.1',
    '[::1]', // B 13
    '[0:0:0:0:0:0:0:1]',
    '[0000::1]',
    '[::]', // B 14
    '[::127.0.0.1]', // B 16
    '[::a9fe:a9fe]',
    '[::ffff:127.0.0.1]', // B 22
    '[::ffff:7f00:1]',
    '[::ffff:169.254.169.254]',
    '[64:ff9b::a9fe:a9fe]', // B 17
    '[64:ff9b::7f00:1]',
    '[64:ff9b::b16:212c]',
    '[64:ff9b:1::a9fe:a9fe]',
    '[2002:a9fe:a9fe::]',
    '[2001:0:4136:e378:8000:63bf:3fff:fdd2]',
    '[fd00:ec2::254]', // B 19
    '[fd00::10]',
    '[fe80::1]',
    '[fc00::1]',
    '[ff02::1]',
  ]
  const malformed = [
    '2130706433', // A 1
    '0x7f000001',
    '0177.0.0.1', // A 2
    '127.1', // A 4
    '127.0.1',
    '012.0.0.1', // A 5: 10.0.0.1 to getaddrinfo
    '0x7f.0.0.1',
    '0', // A 7
    '[fe80::1%25eth0]', // B 20
    '[::1%lo]',
    '[::1',
    '::1',
    '[127.0.0.1]',
  ]
  // cloud metadata addresses, in their own spellings and embedded in IPv6, need a rule naming them exactly
  const metadata = new Set(['100.100.100.200', '169.254.169.254', '169.254.170.2', '168.63.129.16', '192.0.0.192', '[::a9fe:a9fe]', '[::ffff:169.254.169.254]', '[64:ff9b::a9fe:a9fe]', '[64:ff9b:1::a9fe:a9fe]', '[2002:a9fe:a9fe::]', '[fd00:ec2::254]'])
  for (const host of prohibited) {
    const res = await tryConnect(proxy, `${host}:${P}`, `GET http://${host}:${P}/ HTTP/1.1\r\nHost: x\r\n\r\n`)
    const details = metadata.has(host) ? /address, which is refused unless a rule names that exact address \(a range that holds it is not enough\)$/ : /address, which is refused unless a rule names it$/
    assertRefused(t, res, { status: 403, error: 'destination_ip_prohibited', details }, `CONNECT ${host}`)
  }
  for (const host of malformed) {
    const res = await tryConnect(proxy, `${host}:${P}`)
    assertRefused(t, res, { status: 400, error: 'http_request_error' }, `CONNECT ${host}`)
  }
  // the same through plain-HTTP absolute-form (curl -x http://P http://HOST/)
  for (const host of ['[::ffff:127.0.0.1]', '169.254.169.254', '[fd00:ec2::254]', '0.0.0.0']) {
    const res = await tryGet(proxy, `http://${host}:${P}/latest/meta-data/`)
    assertRefused(t, res, { status: 403, error: 'destination_ip_prohibited', closes: false }, `GET http://${host}`)
  }
  for (const host of ['2130706433', '0177.0.0.1', '127.1', '012.0.0.1', '0']) {
    const res = await tryGet(proxy, `http://${host}:${P}/`)
    assertRefused(t, res, { status: 400, error: 'http_request_error', closes: false }, `GET http://${host}`)
    t.equal(parseResponse(res.text).headers.get('connection'), 'close', `GET http://${host}: Connection: close`)
  }
  for (const c of sinks.all) if (c.host !== '11.22.33.44' && c.host !== '2600:1f00::10') t.equal(c.connections(), 0, `nothing reached ${c.host}`)
  t.equal(proxy.logs().filter((l) => l.message === 'closed' || l.message === 'upstream failed').length, 0, 'no dial was attempted')

  // controls: the rules do allow public addresses, and the sinks do count
  for (const host of ['11.22.33.44', '[2600:1f00::10]']) {
    const res = await tryConnect(proxy, `${host}:${P}`)
    t.equal(statusOf(res.text), 200, `control: ${host} is allowed by the same rules`)
  }
  t.equal(sinks.at('11.22.33.44').connections(), 1, 'control reached 11.22.33.44')
  t.equal(sinks.at('2600:1f00::10').connections(), 1, 'control reached 2600:1f00::10')
  // CGNAT boundaries (A 10): just outside 100.64/10 is public to the guard; nothing routes there in the namespace
  for (const host of ['100.63.255.254', '100.128.0.1']) {
    const res = await tryConnect(proxy, `${host}:${P}`)
    assertRefused(t, res, { status: 502, error: 'destination_unavailable' }, `${host} (outside CGNAT)`)
    t.equal(lastDecision(proxy, `${host}:${P}`)?.decision, 'allow', `${host}: the guard let it through`)
  }
})

t.test('an IPv6-only rule never collapses into IPv4, and an IPv4-mapped rule range is rejected (corpus B 23)', NETNS, async (t) => {
  await t.rejects(startProxy({ allow: ['[::ffff:0:0/96]:443'] }), /IPv4-mapped IPv6 ranges are not accepted/, 'the loader refuses a mapped range')
  const sinks = await canaries(['11.22.33.44', '169.254.169.254', '2600:1f00::10'])
  const P = sinks.port
  const proxy = await startProxy({ allow: [`[::/0]:${P}`] })
  t.teardown(async () => {
    await proxy.close()
    for (const c of sinks.all) await c.close()
  })
  assertRefused(t, await tryConnect(proxy, `11.22.33.44:${P}`), { status: 403, error: 'http_request_denied', details: /^no allow rule matches 11\.22\.33\.44:\d+/ }, 'IPv4 under an IPv6 rule')
  assertRefused(t, await tryConnect(proxy, `169.254.169.254:${P}`), { status: 403, error: 'destination_ip_prohibited' }, 'metadata under an IPv6 rule')
  assertRefused(t, await tryConnect(proxy, `[::ffff:11.22.33.44]:${P}`), { status: 403, error: 'http_request_denied' }, 'mapped IPv4 under an IPv6 rule')
  t.equal(statusOf((await tryConnect(proxy, `[2600:1f00::10]:${P}`)).text), 200, 'control: public IPv6 is allowed')
  t.equal(sinks.at('11.22.33.44').connections(), 0)
  t.equal(sinks.at('169.254.169.254').connections(), 0)
  t.equal(sinks.at('2600:1f00::10').connections(), 1)
})

// ---- report mode ----------------------------------------------------------------------------

t.test('report mode lets an unlisted public name through with wouldDeny, but the guard still refuses metadata', NETNS, async (t) => {
  const sinks = await canaries(['11.22.33.44', '169.254.169.254'])
  const dns = await startDns({ 'pub.example.com': { A: ['11.22.33.44'] }, 'meta.example.com': { A: ['169.254.169.254'] } })
  const proxy = await startProxy({ mode: 'report', allow: [], dns: dnsRules(dns.server) })
  t.teardown(async () => {
    await proxy.close()
    await dns.close()
    for (const c of sinks.all) await c.close()
  })
  const P = sinks.port
  const pub = await tryConnect(proxy, `pub.example.com:${P}`)
  t.equal(statusOf(pub.text), 200, 'an unlisted name is let through')
  const line = await logLine(proxy, (l) => l.message === 'decision' && l.target === `pub.example.com:${P}`, 'report decision')
  t.match(line, { decision: 'allow', wouldDeny: true, mode: 'report', reason: 'no-rule', resolved: ['11.22.33.44'], chosen: '11.22.33.44' })
  t.match(String(line.detail), /^report mode: would deny: no allow rule matches pub\.example\.com:\d+/)
  t.equal(sinks.at('11.22.33.44').connections(), 1)

  const literal = await tryConnect(proxy, `11.22.33.44:${P}`)
  t.equal(statusOf(literal.text), 200, 'an unlisted public IP is let through too')
  t.equal(lastDecision(proxy, `11.22.33.44:${P}`)?.wouldDeny, true)

  for (const target of [`meta.example.com:${P}`, `169.254.169.254:${P}`]) {
    const res = await tryConnect(proxy, target)
    assertRefused(t, res, { status: 403, error: 'destination_ip_prohibited', details: /169\.254\.169\.254:\d+, a cloud metadata service address/ }, `report mode ${target}`)
    t.match(lastDecision(proxy, target), { decision: 'deny', wouldDeny: false, mode: 'report', reason: 'address-prohibited' }, `${target}: a real denial, not a would-deny`)
  }
  t.equal(sinks.at('169.254.169.254').connections(), 0, 'the metadata address was never reached')
})

// Not covered here, with reasons:
// - G "cname.example.com" (CNAME to a private A record): the loopback DNS fixture answers A/AAAA only.
//   The proxy classifies the final addresses the resolver returns, so a CNAME chain ending in
//   10.1.2.3 is the same case as a direct private answer, covered above (rfc1918, plain.test).
// - G "blackhole.example.com" (dropped SYNs, 504): in connect.test.ts, with a full accept queue on
//   loopback standing in for the dropped SYNs.
