// SOCKS on CONNECT's decision path: the "socks" settings and `start --socks` (validation, exposure
// checks), the SNI check on TLS ports, per-client policies by SOCKS user, reloads that revoke a
// SOCKS tunnel, and a differential run: for the same targets SOCKS and CONNECT reach the same canaries.
import { renameSync, writeFileSync } from 'node:fs'
import { connect as tlsConnect } from 'node:tls'
import t, { type Test } from 'tap'
import { parseConfig } from '../lib/rules/config.js'
import { hashPassword } from '../lib/proxy/auth.js'
import { runCli, startCli } from './helpers/cli.js'
import { startDns } from './helpers/dns.js'
import { rulesFile, tempDir } from './helpers/files.js'
import { connectHead } from './helpers/http.js'
import { NETNS_SKIP, rawExchange, startBannerUpstream, startCanary, startHttpsUpstream, statusOf, type Canary } from './helpers/net.js'
import { logLine, startProxy, type LogLine, type TestProxy } from './helpers/proxy.js'
import { greeting, socksConnect, socksSession, type Opened } from './helpers/socks.js'
import { join } from 'node:path'

async function startSocks(t: Test, rules: Record<string, unknown>): Promise<TestProxy & { socks: number }> {
  const proxy = await startProxy({ socks: { listen: '127.0.0.1:0' }, ...rules })
  t.teardown(() => proxy.close())
  return { ...proxy, socks: proxy.proxy.socksAddress()?.port ?? 0 }
}

const decisionFor = (target: string) => (l: LogLine) => l.message === 'decision' && l.target === target

t.test('"socks" is validated at load with errors that name the entry', async (t) => {
  const errorsOf = (socks: unknown) => {
    const parsed = parseConfig({ allow: [], socks })
    return parsed.ok ? [] : parsed.errors.map((e) => `${e.path}: ${e.message}`)
  }
  t.match(errorsOf('127.0.0.1:1080'), [/^socks: "socks" is \{ "listen": "HOST:PORT" \}/])
  t.match(errorsOf({}), [/^socks\.listen: .*"HOST:PORT"/])
  t.match(errorsOf({ listen: 'proxy.example:1080' }), [/^socks\.listen: listen host must be an IP address or localhost/])
  t.match(errorsOf({ listen: '127.0.0.1' }), [/^socks\.listen: .*has no port/])
  t.match(errorsOf({ listen: '127.0.0.1:1080', udp: true }), [/^socks\.udp: unknown key "udp" \(allowed: listen\)/])
  const ok = parseConfig({ allow: [], socks: { listen: 'localhost:1080' } })
  t.match(ok, { ok: true, value: { socks: { listen: { host: '127.0.0.1', port: 1080 } } } }, 'localhost is loopback')
  t.match(parseConfig({ allow: [] }), { ok: true, value: { socks: undefined } }, 'off unless present')
})

t.test('start --socks: listens (overriding the file), refuses an open SOCKS listener without auth, and a bad address', async (t) => {
  const tokenFile = join(tempDir('token'), 'admin-token')
  const file = rulesFile({ allow: [], socks: { listen: '127.0.0.1:1' } })
  const cli = await startCli(['start', '--log-format', 'json', '--admin-listen', 'off', '--admin-token-file', tokenFile, '--rules', file, '--listen', '127.0.0.1:0', '--socks', '127.0.0.1:0'])
  t.teardown(() => cli.stop())
  const line = await cli.waitFor((l) => l.message === 'SOCKS5 listening')
  t.match(line, { socks: /^127\.0\.0\.1:\d+$/, auth: 'none' })
  const port = Number(/:(\d+)$/.exec(String(line.socks))?.[1])
  t.not(port, 1, 'the flag won over the file')
  const opened = await socksConnect(port, '127.0.0.1', 9)
  t.equal(opened.code, 0x02, 'it serves SOCKS5 under the rules')
  await cli.stop()

  const open = await runCli(['start', '--rules', rulesFile({ allow: [] }), '--listen', '127.0.0.1:0', '--socks', '0.0.0.0:0'])
  t.equal(open.code, 1)
  t.match(open.stderr, /the SOCKS listener: listening on 0\.0\.0\.0 lets anyone who can reach it use the proxy; add "auth"/)
  const report = await runCli(['start', '--rules', rulesFile({ allow: [], socks: { listen: '0.0.0.0:0' } }), '--listen', '127.0.0.1:0', '--mode', 'report', '--insecure-open'])
  t.equal(report.code, 1)
  t.match(report.stderr, /the SOCKS listener: report mode/)
  const bad = await runCli(['start', '--rules', rulesFile({ allow: [] }), '--socks', 'example.com:1080'])
  t.equal(bad.code, 2)
  t.match(bad.stderr, /--socks: listen host must be an IP address or localhost/)
})

/** A TLS handshake through an opened SOCKS tunnel: 'ok', or 'closed' when the proxy ends it. */
function handshake(opened: Opened, servername: string, ca: string): Promise<'ok' | 'closed'> {
  return new Promise((resolve) => {
    const tls = tlsConnect({ socket: opened.session.socket, servername, ca })
    tls.once('secureConnect', () => {
      tls.destroy()
      resolve('ok')
    })
    tls.once('error', () => resolve('closed'))
    tls.once('close', () => resolve('closed'))
  })
}

t.test('a TLS port gets the SNI check: answered first, then a fronted ClientHello closes the tunnel, undialled', { skip: NETNS_SKIP }, async (t) => {
  const upstream = await startHttpsUpstream('11.22.33.44', ['api.allowed.test', 'evil.test'])
  const dns = await startDns({ 'api.allowed.test': { A: ['11.22.33.44'] } })
  t.teardown(async () => {
    await upstream.close()
    await dns.close()
  })
  const proxy = await startSocks(t, { allow: [`api.allowed.test:${upstream.port}`], dns: { servers: [dns.server], timeoutMs: 2000 }, tls: { ports: [upstream.port] } })
  const target = `api.allowed.test:${upstream.port}`
  const good = await socksConnect(proxy.socks, 'api.allowed.test', upstream.port)
  t.equal(good.code, 0x00)
  t.equal(await handshake(good, 'api.allowed.test', upstream.tls.cert), 'ok', 'the right server name gets through')
  const fronted = await socksConnect(proxy.socks, 'api.allowed.test', upstream.port)
  t.equal(fronted.code, 0x00, 'the request was allowed: success first, as CONNECT answers 200 first')
  const before = upstream.connections()
  t.equal(await handshake(fronted, 'evil.test', upstream.tls.cert), 'closed', 'a different SNI closes the tunnel')
  t.match(await logLine(proxy, (l) => l.message === 'decision' && l.reason === 'sni-mismatch', 'fronting'), { decision: 'deny', target, sni: 'evil.test', listener: 'socks' })
  t.equal(upstream.connections(), before, 'the fronted tunnel was never dialled')
})

t.test('per-client policies: the SOCKS user chooses the policy, as the Basic auth user does', { skip: NETNS_SKIP }, async (t) => {
  const banner = await startBannerUpstream('11.22.33.44', 'SSH-2.0-x\r\n')
  const dns = await startDns({ 'git.allowed.test': { A: ['11.22.33.44'] } })
  t.teardown(async () => {
    await banner.close()
    await dns.close()
  })
  const hash = await hashPassword('pw-pw-pw')
  const proxy = await startSocks(t, {
    allow: [],
    policies: { dev: { allow: [`git.allowed.test:${banner.port}`] } },
    clients: [{ user: 'dev1', policy: 'dev' }],
    auth: { users: { dev1: hash, other: hash } },
    dns: { servers: [dns.server], timeoutMs: 2000 },
  })
  const target = `git.allowed.test:${banner.port}`
  const dev = await socksConnect(proxy.socks, 'git.allowed.test', banner.port, { user: 'dev1', password: 'pw-pw-pw' })
  t.equal(dev.code, 0x00, 'dev1 uses the dev policy')
  dev.session.socket.destroy()
  t.match(await logLine(proxy, decisionFor(target), 'dev1'), { decision: 'allow', policy: 'dev' })
  const other = await socksConnect(proxy.socks, 'git.allowed.test', banner.port, { user: 'other', password: 'pw-pw-pw' })
  t.equal(other.code, 0x02, 'another user falls back to the top-level rules')
  t.match(await logLine(proxy, (l) => decisionFor(target)(l) && l.decision === 'deny', 'other'), { policy: 'default' })
  t.equal(banner.connections(), 1, 'only the allowed tunnel was dialled')
})

t.test('a reload that denies an open SOCKS tunnel closes it; a changed "socks" address is warned about', async (t) => {
  const banner = await startBannerUpstream('127.0.0.1', 'hello\n')
  t.teardown(() => banner.close())
  const rules = { allow: [`127.0.0.1:${banner.port}`] }
  const proxy = await startSocks(t, rules)
  const opened = await socksConnect(proxy.socks, '127.0.0.1', banner.port)
  t.equal(opened.code, 0x00)
  t.equal((await opened.session.read(6))?.toString(), 'hello\n')
  t.equal(proxy.proxy.open.size, 1, 'the tunnel is registered')
  const outcome = proxy.reload({ socks: { listen: '127.0.0.1:0' }, allow: [] })
  t.same(outcome, { closed: 1, kept: 0 }, 'the reload re-decided it and closed it')
  await opened.session.closed
  t.match(await logLine(proxy, (l) => l.message === 'revoked', 'revoked'), { kind: 'tunnel', target: `127.0.0.1:${banner.port}` })
  proxy.reload({ socks: { listen: '127.0.0.1:1081' }, allow: [] })
  await logLine(proxy, (l) => l.message.includes('"socks" listener changed: restart proxy-gate'), 'a new address needs a restart, and the log says so')
})

/** Canaries at the netns stand-in addresses, counting arrivals as they come so a test can wait for one. */
class Canaries {
  readonly seen = new Map<string, number>()
  readonly all: Canary[] = []
  private waiters: Array<() => void> = []

  async add(key: string, host: string, port = 0): Promise<Canary> {
    this.seen.set(key, 0)
    const canary = await startCanary(host, port, () => {
      this.seen.set(key, (this.seen.get(key) ?? 0) + 1)
      for (const wake of this.waiters.splice(0)) wake()
    })
    this.all.push(canary)
    return canary
  }

  total(): number {
    return [...this.seen.values()].reduce((a, b) => a + b, 0)
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries(this.seen)
  }

  /** resolves once `n` connections arrived in all */
  async arrived(n: number): Promise<void> {
    while (this.total() < n) await new Promise<void>((wake) => this.waiters.push(wake))
  }
}

async function targets(t: Test): Promise<{ canaries: Canaries; asks: Array<[string, number]>; rules: Record<string, unknown> }> {
  const canaries = new Canaries()
  const { port } = await canaries.add('11.22.33.44', '11.22.33.44')
  for (const host of ['11.22.33.45', '11.22.33.46', '10.1.2.3', '169.254.169.254', '127.0.0.1']) await canaries.add(host, host, port)
  const other = await canaries.add('11.22.33.44 (a port no rule names)', '11.22.33.44')
  const dns = await startDns({
    'ok.allowed.test': { A: ['11.22.33.44'] },
    'denied.allowed.test': { A: ['11.22.33.45'] },
    'elsewhere.test': { A: ['11.22.33.46'] },
    'inside.allowed.test': { A: ['10.1.2.3'] },
    'meta.allowed.test': { A: ['169.254.169.254'] },
    'loop.allowed.test': { A: ['127.0.0.1'] },
  })
  t.teardown(async () => {
    for (const c of canaries.all) await c.close()
    await dns.close()
  })
  const asks: Array<[string, number]> = []
  for (const host of ['ok.allowed.test', 'denied.allowed.test', 'elsewhere.test', 'inside.allowed.test', 'meta.allowed.test', 'loop.allowed.test', 'nx.allowed.test']) asks.push([host, port], [host, other.port])
  for (const host of ['11.22.33.44', '11.22.33.45', '11.22.33.46', '10.1.2.3', '169.254.169.254', '127.0.0.1']) asks.push([host, port], [host, other.port])
  const rules = { allow: [`*.allowed.test:${port}`, `11.22.33.46:${port}`], deny: ['denied.allowed.test'], dns: { servers: [dns.server], timeoutMs: 2000 } }
  return { canaries, asks, rules }
}

const sum = (counts: Record<string, number>): number => Object.values(counts).reduce((a, b) => a + b, 0)

function changed(before: Record<string, number>, after: Record<string, number>): string[] {
  return Object.keys(after).filter((k) => after[k] !== before[k])
}

t.test('differential: for the same targets SOCKS and CONNECT reach exactly the same canaries', { skip: NETNS_SKIP }, async (t) => {
  const { canaries, asks, rules } = await targets(t)
  const proxy = await startSocks(t, rules)
  for (const [host, port] of asks) {
    const name = `${host}:${port}`
    const before = canaries.snapshot()
    const viaConnect = await rawExchange(proxy.port, connectHead(name), { until: (text) => text.includes('\r\n\r\n') })
    const connectAllowed = statusOf(viaConnect.text) === 200
    // an allowed tunnel's connection is waited for: the answer can come before the canary's accept
    if (connectAllowed) await canaries.arrived(sum(before) + 1)
    const afterConnect = canaries.snapshot()
    const viaSocks = await socksConnect(proxy.socks, host, port)
    if (viaSocks.code === 0x00) await canaries.arrived(sum(afterConnect) + 1)
    viaSocks.session.socket.destroy()
    t.same(changed(afterConnect, canaries.snapshot()), changed(before, afterConnect), `${name}: the same canaries (${changed(before, afterConnect).join(', ') || 'none'})`)
    t.equal(viaSocks.code === 0x00, connectAllowed, `${name}: allowed by both or by neither`)
  }
  const reached = Object.entries(canaries.snapshot()).filter(([, n]) => n > 0).map(([k]) => k)
  t.same(reached, ['11.22.33.44', '11.22.33.46'], 'only the allowed name and the allowed IP literal were ever reached, each by both')
  t.same([canaries.seen.get('11.22.33.44'), canaries.seen.get('11.22.33.46')], [2, 2], 'once over CONNECT and once over SOCKS')
})

t.test('limits.maxConnections counts the proxy port and the SOCKS listener together', async (t) => {
  const proxy = await startSocks(t, { allow: [], limits: { maxConnections: 2 } })
  // a keep-alive HTTP client of the proxy port, and a SOCKS client, each answered once: both accepted
  const http = await socksSession(proxy.port)
  http.socket.write('GET /proxy.pac HTTP/1.1\r\nHost: x\r\n\r\n')
  t.equal((await http.read(12))?.toString(), 'HTTP/1.1 200')
  const first = await socksSession(proxy.socks)
  first.socket.write(greeting([0]))
  t.same([...((await first.read(2)) ?? [])], [5, 0])
  const refused = await socksSession(proxy.socks)
  refused.socket.write(greeting([0]))
  await refused.closed
  t.equal(refused.pending().length, 0, 'a third connection is closed unanswered')
  http.socket.destroy()
  first.socket.destroy()
})

t.test('shutdown drains SOCKS too: the listener stops accepting and open tunnels are closed at the grace deadline', async (t) => {
  const banner = await startBannerUpstream('127.0.0.1', 'hi\n')
  t.teardown(() => banner.close())
  const proxy = await startSocks(t, { allow: [`127.0.0.1:${banner.port}`], limits: { shutdownGraceMs: 200 } })
  const opened = await socksConnect(proxy.socks, '127.0.0.1', banner.port)
  t.equal(opened.code, 0x00)
  t.equal((await opened.session.read(3))?.toString(), 'hi\n')
  const stopped = proxy.proxy.shutdown()
  await opened.session.closed
  await stopped
  t.ok(proxy.logs().some((l) => l.message === 'closing what is still open'), 'closed at the grace deadline')
  await t.rejects(socksSession(proxy.socks), { code: 'ECONNREFUSED' }, 'the SOCKS listener no longer accepts')
})

t.test('start: a reload that changes "socks" fails (it needs a restart); one that leaves it as it was goes through', async (t) => {
  const file = rulesFile({ allow: [], socks: { listen: '127.0.0.1:0' } })
  const tokenFile = join(tempDir('token'), 'admin-token')
  const cli = await startCli(['start', '--log-format', 'json', '--admin-listen', 'off', '--admin-token-file', tokenFile, '--rules', file, '--listen', '127.0.0.1:0'])
  t.teardown(() => cli.stop())
  // written whole (a rename: the file watcher never reads it half-written), and the outcome told apart by what it says: the
  // watcher and SIGHUP may each reload the same file
  const reloadWith = async (rules: Record<string, unknown>, outcome: RegExp): Promise<Record<string, unknown>> => {
    const before = cli.lines.length
    writeFileSync(`${file}.next`, JSON.stringify(rules))
    renameSync(`${file}.next`, file)
    cli.child.kill('SIGHUP')
    return cli.waitFor((l) => cli.lines.indexOf(l) >= before && (l.message === 'reloaded' || l.message === 'reload failed: keeping the previous rules') && outcome.test(JSON.stringify(l)))
  }
  const moved = await reloadWith({ allow: [], socks: { listen: '127.0.0.1:1' } }, /127\.0\.0\.1:1/)
  t.match(moved, { message: 'reload failed: keeping the previous rules', errors: [/"socks" changed to 127\.0\.0\.1:1 \(running: 127\.0\.0\.1:0\): restart/] })
  const removed = await reloadWith({ allow: [] }, /changed to none/)
  t.match(removed, { message: 'reload failed: keeping the previous rules', errors: [/"socks" changed to none/] })
  const same = await reloadWith({ allow: ['example.test:22'], socks: { listen: '127.0.0.1:0' } }, /"message":"reloaded"/)
  t.equal(same.message, 'reloaded')
})
