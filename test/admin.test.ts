// The admin listener: Prometheus metrics checked against real traffic with a text-format parser,
// the Host and token guards, health on both listeners, and the dashboard in headless Chromium
// (a denial appears live with its reason and rule to copy; hostile text stays text).
import { existsSync, mkdirSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import parsePrometheusTextFormat from 'parse-prometheus-text-format'
import { chromium } from 'playwright-core'
import t, { type Test } from 'tap'
import { createAdmin } from '../lib/observe/admin.js'
import { createWatchers } from '../lib/cli/admin.js'
import { createMetrics } from '../lib/observe/metrics.js'
import { startDns } from './helpers/dns.js'
import { rawExchange, startHttpUpstream, statusOf } from './helpers/net.js'
import { startProxy, type TestProxy } from './helpers/proxy.js'

const CHROMIUM = '/usr/bin/chromium'
const TOKEN = 'test-token-0123456789abcdef'

interface Fetched {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

function get(port: number, path: string, options: { host?: string; method?: string; token?: string } = {}): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { Host: options.host ?? `127.0.0.1:${port}` }
    if (options.token) headers.Authorization = `Bearer ${options.token}`
    const req = httpRequest({ host: '127.0.0.1', port, path, method: options.method ?? 'GET', headers }, (res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

interface Sample {
  labels?: Record<string, string>
  value?: string
  count?: string
}
interface Family {
  name: string
  type: string
  metrics: Sample[]
}

function metric(families: Family[], name: string, labels: Record<string, string> = {}): number {
  const family = families.find((f) => f.name === name)
  const sample = family?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
  return Number(sample?.value ?? sample?.count ?? NaN)
}

async function setup(t: Test) {
  const upstream = await startHttpUpstream()
  const dns = await startDns({ 'api.allowed.test': { A: ['127.0.0.1'] }, 'paths.test': { A: ['127.0.0.1'] } })
  const watchers = createWatchers()
  const rules = {
    allow: [`api.allowed.test:${upstream.port}`, `127.0.0.1:${upstream.port}`, { host: 'paths.test', ports: [80], paths: ['/ok'] }, '127.0.0.1:80'],
    dns: { servers: [dns.server] },
  }
  const proxy = await startProxy(rules, { observe: (proxy) => watchers.observe(proxy) })
  watchers.watch(proxy.proxy)
  let reloads = 0
  const admin = createAdmin(
    { host: '127.0.0.1', port: 0 },
    {
      activity: watchers.activity,
      metrics: watchers.metrics,
      open: () => proxy.proxy.open,
      ready: () => proxy.proxy.ready(),
      mode: () => 'enforce',
      rulesFile: '/etc/proxy-gate/rules.json',
      reload: () => {
        reloads++
        proxy.proxy.noteReload({ ok: true, trigger: 'admin' })
        return { ok: true }
      },
      allow: () => ({ status: 409, body: { ok: false, message: 'not in this test' } }),
      token: TOKEN,
      tokenFile: '/etc/proxy-gate/admin-token',
    },
  )
  const port = (await admin.listen()).port
  t.teardown(async () => {
    await admin.close()
    await proxy.close()
    await Promise.all([upstream.close(), dns.close()])
  })
  return { upstream, proxy, port, reloads: () => reloads }
}

function traffic(proxy: TestProxy, upstreamPort: number) {
  const until = (x: string) => /\r\n\r\n/.test(x) && (/Content-Length: 0\r\n/.test(x) || !x.endsWith('\r\n\r\n'))
  return {
    allowed: () => rawExchange(proxy.port, `GET http://api.allowed.test:${upstreamPort}/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    denied: () => rawExchange(proxy.port, 'CONNECT denied.example.test:443 HTTP/1.1\r\nHost: x\r\n\r\n'),
    malformed: () => rawExchange(proxy.port, 'GET http://x.test:99999/<img/src=x/onerror=window.pwned=1> HTTP/1.1\r\nHost: x\r\n\r\n'),
    hostilePath: () => rawExchange(proxy.port, 'GET http://paths.test/<img/src=x/onerror=window.pwned=1> HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
    until,
  }
}

t.test('metrics count what the traffic did, in Prometheus text format', async (t) => {
  const { upstream, proxy, port } = await setup(t)
  const send = traffic(proxy, upstream.port)
  t.equal(statusOf((await send.allowed()).text), 200)
  t.equal(statusOf((await send.allowed()).text), 200)
  for (let i = 0; i < 3; i++) t.equal(statusOf((await send.denied()).text), 403)
  t.equal(statusOf((await send.malformed()).text), 400)
  await proxy.waitForLog((l) => l.message === 'closed' && l.kind === 'forward')
  proxy.proxy.noteReload({ ok: false, trigger: 'test', errors: ['bad'] })

  const res = await get(port, '/metrics')
  t.equal(res.status, 200)
  t.match(res.headers['content-type'], /text\/plain; version=0\.0\.4/)
  const families = parsePrometheusTextFormat(res.body) as Family[]
  t.equal(metric(families, 'proxygate_decisions_total', { decision: 'allow', reason: 'allow-rule' }), 2)
  t.equal(metric(families, 'proxygate_decisions_total', { decision: 'deny', reason: 'no-rule' }), 3)
  t.equal(metric(families, 'proxygate_decisions_total', { decision: 'error', reason: 'http_request_error' }), 1)
  t.equal(metric(families, 'proxygate_requests_total', { method: 'CONNECT', status: '403' }), 3)
  t.equal(metric(families, 'proxygate_requests_total', { method: 'GET', status: '400' }), 1)
  await proxy.waitForLog((l) => l.message === 'closed' && l.kind === 'forward' && proxy.logs().filter((x) => x.message === 'closed').length >= 2)
  t.equal(metric((parsePrometheusTextFormat((await get(port, '/metrics')).body) as Family[]), 'proxygate_requests_total', { method: 'GET', status: '200' }), 2)
  t.equal(metric(families, 'proxygate_errors_total', { type: 'http_request_error' }), 1)
  t.equal(metric(families, 'proxygate_reloads_total', { result: 'failed' }), 1)
  t.match(families.find((f) => f.name === 'proxygate_dns_lookup_seconds'), { type: 'HISTOGRAM', metrics: [{ buckets: { '+Inf': '2' } }] }, 'both DNS lookups timed')
  t.equal(metric(families, 'proxygate_open_connections', { kind: 'tunnel' }), 0)
  t.ok(families.some((f) => f.name === 'proxygate_process_cpu_user_seconds_total'), 'process metrics')
  t.notOk(res.body.includes('denied.example.test'), 'no per-host labels')
})

t.test('the admin listener answers only its own Host names and wants the token to change state', async (t) => {
  const { port, reloads } = await setup(t)
  t.equal((await get(port, '/metrics', { host: `evil.test:${port}` })).status, 421, 'a foreign Host (DNS rebinding) is refused')
  t.equal((await get(port, '/', { host: 'evil.test' })).status, 421)
  t.equal((await get(port, '/readyz', { host: `10.1.2.3:${port}` })).status, 200, 'probes answer whatever the Host (kubelet sends the pod address)')
  t.equal((await get(port, '/healthz', { host: 'evil.test' })).body, 'ok\n')
  t.equal((await get(port, '/', { host: `localhost:${port}` })).status, 200)
  t.equal((await get(port, '/reload', { method: 'POST' })).status, 401, 'no token')
  t.equal((await get(port, '/reload', { method: 'POST', token: 'wrong-token-0123456789abcd' })).status, 401, 'wrong token')
  t.equal(reloads(), 0)
  const ok = await get(port, '/reload', { method: 'POST', token: TOKEN })
  t.equal(ok.status, 200)
  t.equal(reloads(), 1)
  t.equal((await get(port, '/metrics', { method: 'DELETE' })).status, 405)
  const page = await get(port, '/')
  t.match(page.headers['content-security-policy'], /default-src 'none'; script-src 'self'/)
  t.equal(page.headers['x-frame-options'], 'DENY')
})

t.test('health and readiness on both listeners', async (t) => {
  const { port, proxy } = await setup(t)
  t.equal((await get(port, '/healthz')).body, 'ok\n')
  t.equal((await get(port, '/readyz')).status, 200)
  const ready = await rawExchange(proxy.port, 'GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n', { until: (x) => x.includes('ready\n') })
  t.equal(statusOf(ready.text), 200)
  const healthy = await rawExchange(proxy.port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', { until: (x) => x.includes('ok\n') })
  t.equal(statusOf(healthy.text), 200)
  const closing = proxy.proxy.shutdown()
  t.equal((await get(port, '/readyz')).status, 503, 'not ready once shutting down')
  await closing
})

t.test('dashboard in Chromium: a denial shows up live with its reason and rule; hostile text stays text', { skip: existsSync(CHROMIUM) ? false : `needs ${CHROMIUM}` }, async (t) => {
  const { upstream, proxy, port } = await setup(t)
  const send = traffic(proxy, upstream.port)
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] })
  t.teardown(() => browser.close())
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: `http://127.0.0.1:${port}` })
  const page = await context.newPage()
  await page.goto(`http://127.0.0.1:${port}/`)
  await page.locator('#status', { hasText: 'live' }).waitFor()

  await send.allowed()
  await send.denied()
  await send.malformed()
  await send.hostilePath()
  const deniedRow = page.locator('#decisions tbody tr.deny', { hasText: 'denied.example.test:443' })
  await deniedRow.waitFor()
  t.match(await deniedRow.locator('td.reason').textContent(), 'no-rule')
  t.match(await deniedRow.locator('td.detail').textContent(), 'no allow rule matches denied.example.test:443')

  const suggestion = page.locator('#denied tbody tr', { hasText: 'denied.example.test:443' })
  await suggestion.waitFor()
  t.equal(await suggestion.locator('td.rule').textContent(), '"denied.example.test:443"', 'the exact line to add')
  await suggestion.locator('button', { hasText: 'copy' }).click()
  await page.locator('#denied button', { hasText: 'copied' }).waitFor()
  t.equal(await page.evaluate('navigator.clipboard.readText()'), '"denied.example.test:443"', 'copy puts the rule on the clipboard')

  const hostile = page.locator('#decisions tbody tr', { hasText: '<img/src=x/onerror=window.pwned=1>' })
  await hostile.first().waitFor()
  t.ok((await hostile.count()) >= 1, 'the hostile path is shown as text')
  // a target that does not parse is logged by its authority only: the path never reaches the log or the page
  await page.locator('#decisions tbody tr', { hasText: 'x.test:99999' }).first().waitFor()
  t.equal(await page.locator('#decisions img').count(), 0, 'no element was created from it')
  t.equal(await page.evaluate('window.pwned'), undefined, 'no script ran')
  t.equal(await page.locator('#count-deny').textContent(), '2')

  mkdirSync('.tap', { recursive: true })
  const shot = join('.tap', 'dashboard.png')
  await page.screenshot({ path: shot, fullPage: true })
  t.ok(existsSync(shot), `screenshot kept at ${shot}`)
})

t.test('/api/state counts every open connection; only the list is capped (at 200)', async (t) => {
  const { upstream, proxy, port } = await setup(t)
  const clients = await Promise.all(
    Array.from({ length: 201 }, () =>
      new Promise<Socket>((resolve) => {
        const socket = connect(proxy.port, '127.0.0.1', () => socket.write(`CONNECT 127.0.0.1:${upstream.port} HTTP/1.1\r\nHost: x\r\n\r\n`))
        socket.once('data', () => resolve(socket))
      }),
    ),
  )
  t.teardown(() => clients.forEach((c) => c.destroy()))
  const state = JSON.parse((await get(port, '/api/state')).body) as { openCount: number; open: unknown[] }
  t.equal(state.openCount, 201)
  t.equal(state.open.length, 200)
})

t.test('metrics label every reason a decision can carry: a refused proxy login is http_request_denied, not "other"', async (t) => {
  const metrics = createMetrics(() => new Set())
  const login = { id: 'x', client: '127.0.0.1:1', method: 'GET', target: '', mode: 'enforce', wouldDeny: false, status: 407 }
  metrics.observe({ type: 'decision', ...login, decision: 'error', reason: 'http_request_denied' })
  metrics.observe({ type: 'decision', ...login, decision: 'error', reason: 'not a reason' })
  const families = parsePrometheusTextFormat((await metrics.render()).text) as Family[]
  t.equal(metric(families, 'proxygate_decisions_total', { decision: 'error', reason: 'http_request_denied' }), 1)
  t.equal(metric(families, 'proxygate_decisions_total', { decision: 'error', reason: 'other' }), 1, 'anything else stays bounded')
})
