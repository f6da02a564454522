// ci: floor line only: pure functions, no I/O: the same under any Node
// lib/observe/metrics.ts: the exposition text, line for line, as prom-client's own counters and
// histograms wrote it before events were counted in plain numbers; prom-client itself and its
// process metrics wait for the first scrape.
import { createRequire } from 'node:module'
import t from 'tap'
import { createMetrics } from '../lib/observe/metrics.js'
import type { OpenConnection, ProxyEvent } from '../lib/proxy/runtime.js'

const loaded = (name: string): boolean => Object.keys(createRequire(import.meta.url).cache).some((path) => path.includes(`/node_modules/${name}/`))
const decision = (id: string, method: string, verdict: 'allow' | 'deny' | 'error', reason: string, extra: { status?: number; wouldDeny?: boolean } = {}): ProxyEvent =>
  ({ type: 'decision', id, client: 'c', method, target: 'a:443', decision: verdict, reason, mode: 'enforce', wouldDeny: extra.wouldDeny ?? false, ...(extra.status === undefined ? {} : { status: extra.status }) })
const timing = (what: 'dns' | 'connect', ms: number, ok: boolean): ProxyEvent => ({ type: 'timing', what, ms, ok })

const FIRST: ProxyEvent[] = [
  decision('1', 'CONNECT', 'allow', 'allow-rule'),
  decision('2', 'GET', 'deny', 'no-rule'),
  decision('3', 'BREW', 'error', 'http_request_error', { status: 400 }),
  decision('4', 'TLS', 'allow', 'allow-rule', { wouldDeny: true }),
  decision('5', '', 'error', 'made-up', { status: 999 }),
  { type: 'closed', id: '1', kind: 'tunnel', bytesFromClient: 10, bytesToClient: 2000, durationMs: 5, error: 'read ECONNRESET' },
  { type: 'closed', id: '6', kind: 'forward', method: 'POST', status: 201, durationMs: 5 },
  { type: 'closed', id: '7', kind: 'upgrade', bytesFromClient: 0, bytesToClient: 0, durationMs: 5, error: 'idle timeout' },
  { type: 'closed', id: '8', kind: 'tunnel', bytesFromClient: 3, bytesToClient: 4, durationMs: 5, error: 'something odd' },
  timing('dns', 0.3, true),
  timing('dns', 7, true),
  timing('dns', 12_000, false), // past the last bucket: only +Inf, sum and count
  timing('connect', 1, true),
  timing('connect', 250, true),
  timing('connect', 0.1, false),
  { type: 'dns', client: 'c', transport: 'udp', name: 'x', qtype: 'A', answer: 'refused', reason: 'no-rule', mode: 'enforce', wouldDeny: false },
  { type: 'reload', ok: true, trigger: 'SIGHUP' },
  { type: 'reload', ok: false, trigger: 'file', errors: ['bad'] },
]
const SECOND: ProxyEvent[] = [
  decision('9', 'CONNECT', 'allow', 'allow-rule'),
  { type: 'closed', id: '9', kind: 'tunnel', bytesFromClient: 1, bytesToClient: 1, durationMs: 5 },
  timing('dns', 2, true),
  timing('connect', 3000, false),
  { type: 'dns', client: 'c', transport: 'tcp', name: 'y', qtype: 'AAAA', answer: 'allow', reason: 'allow-rule', mode: 'enforce', wouldDeny: false },
  { type: 'reload', ok: true, trigger: 'admin' },
]

// what prom-client 15's Counter, Histogram and Gauge wrote for FIRST (the process metrics left out)
const EXPECTED_FIRST = [
    '# HELP proxygate_decisions_total Decisions by result and reason',
    '# TYPE proxygate_decisions_total counter',
    'proxygate_decisions_total{decision="allow",reason="allow-rule",would_deny="false"} 1',
    'proxygate_decisions_total{decision="deny",reason="no-rule",would_deny="false"} 1',
    'proxygate_decisions_total{decision="error",reason="http_request_error",would_deny="false"} 1',
    'proxygate_decisions_total{decision="allow",reason="allow-rule",would_deny="true"} 1',
    'proxygate_decisions_total{decision="error",reason="other",would_deny="false"} 1',
    '',
    '# HELP proxygate_requests_total Requests by method and the status the client got',
    '# TYPE proxygate_requests_total counter',
    'proxygate_requests_total{method="CONNECT",status="200"} 1',
    'proxygate_requests_total{method="GET",status="403"} 1',
    'proxygate_requests_total{method="OTHER",status="400"} 1',
    'proxygate_requests_total{method="TLS",status="200"} 1',
    'proxygate_requests_total{method="NONE",status="none"} 1',
    'proxygate_requests_total{method="POST",status="201"} 1',
    'proxygate_requests_total{method="GET",status="101"} 1',
    '',
    '# HELP proxygate_tunnel_bytes_total Bytes relayed through tunnels and upgraded connections',
    '# TYPE proxygate_tunnel_bytes_total counter',
    'proxygate_tunnel_bytes_total{direction="from_client"} 13',
    'proxygate_tunnel_bytes_total{direction="to_client"} 2004',
    '',
    '# HELP proxygate_errors_total Errors by type: refused requests and how connections ended badly',
    '# TYPE proxygate_errors_total counter',
    'proxygate_errors_total{type="http_request_error"} 1',
    'proxygate_errors_total{type="other"} 2',
    'proxygate_errors_total{type="connection_reset"} 1',
    'proxygate_errors_total{type="idle_timeout"} 1',
    '',
    '# HELP proxygate_dns_queries_total Queries to the sandbox DNS server by answer and reason',
    '# TYPE proxygate_dns_queries_total counter',
    'proxygate_dns_queries_total{answer="refused",reason="no-rule"} 1',
    '',
    '# HELP proxygate_reloads_total Rules reloads by result',
    '# TYPE proxygate_reloads_total counter',
    'proxygate_reloads_total{result="ok"} 1',
    'proxygate_reloads_total{result="failed"} 1',
    '',
    '# HELP proxygate_dns_lookup_seconds DNS lookups of allowed names',
    '# TYPE proxygate_dns_lookup_seconds histogram',
    'proxygate_dns_lookup_seconds_bucket{le="0.0005",result="ok"} 1',
    'proxygate_dns_lookup_seconds_bucket{le="0.001",result="ok"} 1',
    'proxygate_dns_lookup_seconds_bucket{le="0.0025",result="ok"} 1',
    'proxygate_dns_lookup_seconds_bucket{le="0.005",result="ok"} 1',
    'proxygate_dns_lookup_seconds_bucket{le="0.01",result="ok"} 2',
    'proxygate_dns_lookup_seconds_bucket{le="0.025",result="ok"} 2',
    'proxygate_dns_lookup_seconds_bucket{le="0.05",result="ok"} 2',
    'proxygate_dns_lookup_seconds_bucket{le="0.1",result="ok"} 2',
    'proxygate_dns_lookup_seconds_bucket{le="0.25",result="ok"} 2',
    'proxygate_dns_lookup_seconds_bucket{le="0.5",result="ok"} 2',
    'proxygate_dns_lookup_seconds_bucket{le="1",result="ok"} 2',
    'proxygate_dns_lookup_seconds_bucket{le="2.5",result="ok"} 2',
    'proxygate_dns_lookup_seconds_bucket{le="5",result="ok"} 2',
    'proxygate_dns_lookup_seconds_bucket{le="10",result="ok"} 2',
    'proxygate_dns_lookup_seconds_bucket{le="+Inf",result="ok"} 2',
    'proxygate_dns_lookup_seconds_sum{result="ok"} 0.0073',
    'proxygate_dns_lookup_seconds_count{result="ok"} 2',
    'proxygate_dns_lookup_seconds_bucket{le="0.0005",result="failed"} 0',
    'proxygate_dns_lookup_seconds_bucket{le="0.001",result="failed"} 0',
    'proxygate_dns_lookup_seconds_bucket{le="0.0025",result="failed"} 0',
    'proxygate_dns_lookup_seconds_bucket{le="0.005",result="failed"} 0',
    'proxygate_dns_lookup_seconds_bucket{le="0.01",result="failed"} 0',
    'proxygate_dns_lookup_seconds_bucket{le="0.025",result="failed"} 0',
    'proxygate_dns_lookup_seconds_bucket{le="0.05",result="failed"} 0',
    'proxygate_dns_lookup_seconds_bucket{le="0.1",result="failed"} 0',
    'proxygate_dns_lookup_seconds_bucket{le="0.25",result="failed"} 0',
    'proxygate_dns_lookup_seconds_bucket{le="0.5",result="failed"} 0',
    'proxygate_dns_lookup_seconds_bucket{le="1",result="failed"} 0',
    'proxygate_dns_lookup_seconds_bucket{le="2.5",result="failed"} 0',
    'proxygate_dns_lookup_seconds_bucket{le="5",result="failed"} 0',
    'proxygate_dns_lookup_seconds_bucket{le="10",result="failed"} 0',
    'proxygate_dns_lookup_seconds_bucket{le="+Inf",result="failed"} 1',
    'proxygate_dns_lookup_seconds_sum{result="failed"} 12',
    'proxygate_dns_lookup_seconds_count{result="failed"} 1',
    '',
    '# HELP proxygate_upstream_connect_seconds TCP connects to upstreams for tunnels',
    '# TYPE proxygate_upstream_connect_seconds histogram',
    'proxygate_upstream_connect_seconds_bucket{le="0.0005",result="ok"} 0',
    'proxygate_upstream_connect_seconds_bucket{le="0.001",result="ok"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.0025",result="ok"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.005",result="ok"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.01",result="ok"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.025",result="ok"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.05",result="ok"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.1",result="ok"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.25",result="ok"} 2',
    'proxygate_upstream_connect_seconds_bucket{le="0.5",result="ok"} 2',
    'proxygate_upstream_connect_seconds_bucket{le="1",result="ok"} 2',
    'proxygate_upstream_connect_seconds_bucket{le="2.5",result="ok"} 2',
    'proxygate_upstream_connect_seconds_bucket{le="5",result="ok"} 2',
    'proxygate_upstream_connect_seconds_bucket{le="10",result="ok"} 2',
    'proxygate_upstream_connect_seconds_bucket{le="+Inf",result="ok"} 2',
    'proxygate_upstream_connect_seconds_sum{result="ok"} 0.251',
    'proxygate_upstream_connect_seconds_count{result="ok"} 2',
    'proxygate_upstream_connect_seconds_bucket{le="0.0005",result="failed"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.001",result="failed"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.0025",result="failed"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.005",result="failed"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.01",result="failed"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.025",result="failed"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.05",result="failed"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.1",result="failed"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.25",result="failed"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="0.5",result="failed"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="1",result="failed"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="2.5",result="failed"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="5",result="failed"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="10",result="failed"} 1',
    'proxygate_upstream_connect_seconds_bucket{le="+Inf",result="failed"} 1',
    'proxygate_upstream_connect_seconds_sum{result="failed"} 0.0001',
    'proxygate_upstream_connect_seconds_count{result="failed"} 1',
    '',
    '# HELP proxygate_open_connections Open tunnels, forwarded requests and upgraded connections',
    '# TYPE proxygate_open_connections gauge',
    'proxygate_open_connections{kind="tunnel"} 2',
    'proxygate_open_connections{kind="forward"} 0',
    'proxygate_open_connections{kind="upgrade"} 1',
    '',
].join('\n')

/** The exposition without the process metrics (their values are the process's own). */
const own = (text: string): string => text.split('\n\n').filter((block) => !/^# HELP proxygate_(process|nodejs)_/.test(block)).join('\n\n')

t.test('the exposition is what prom-client wrote, scrape after scrape; prom-client loads at the first', async (t) => {
  const open = new Set<Pick<OpenConnection, 'kind'>>([{ kind: 'tunnel' }, { kind: 'tunnel' }, { kind: 'upgrade' }])
  const metrics = createMetrics(() => open as unknown as Set<OpenConnection>)
  for (const event of FIRST) metrics.observe(event)
  t.notOk(loaded('prom-client'), 'not loaded by counting')
  const first = await metrics.render()
  t.ok(loaded('prom-client'), 'loaded by the first scrape')
  t.equal(first.contentType, 'text/plain; version=0.0.4; charset=utf-8')
  t.equal(own(first.text), EXPECTED_FIRST)
  t.match(first.text, /^# HELP proxygate_process_cpu_user_seconds_total /m, 'process metrics from the first scrape on')
  for (const event of SECOND) metrics.observe(event)
  open.clear()
  const second = own((await metrics.render()).text)
  for (const line of [
    'proxygate_decisions_total{decision="allow",reason="allow-rule",would_deny="false"} 2',
    'proxygate_requests_total{method="CONNECT",status="200"} 2',
    'proxygate_tunnel_bytes_total{direction="from_client"} 14',
    'proxygate_tunnel_bytes_total{direction="to_client"} 2005',
    'proxygate_dns_queries_total{answer="refused",reason="no-rule"} 1\nproxygate_dns_queries_total{answer="allow",reason="allow-rule"} 1',
    'proxygate_reloads_total{result="ok"} 2',
    'proxygate_dns_lookup_seconds_bucket{le="0.0025",result="ok"} 2',
    'proxygate_dns_lookup_seconds_sum{result="ok"} 0.0093',
    'proxygate_dns_lookup_seconds_count{result="ok"} 3',
    'proxygate_upstream_connect_seconds_bucket{le="+Inf",result="failed"} 2',
    'proxygate_upstream_connect_seconds_sum{result="failed"} 3.0001',
    'proxygate_open_connections{kind="tunnel"} 0\nproxygate_open_connections{kind="forward"} 0\nproxygate_open_connections{kind="upgrade"} 0',
  ]) t.ok(second.includes(`${line}\n`), line)
  t.equal(second.split('\n').length, EXPECTED_FIRST.split('\n').length + 1, 'one new series (the second DNS answer)')
})

t.test('decisions, requests and tunnel bytes from the SOCKS listener are series of their own, labelled listener="socks"', async (t) => {
  const metrics = createMetrics(() => new Set<OpenConnection>())
  const socks = (event: ProxyEvent): ProxyEvent => ({ ...event, listener: 'socks' }) as ProxyEvent
  metrics.observe(decision('1', 'CONNECT', 'allow', 'allow-rule'))
  metrics.observe(socks(decision('2', 'CONNECT', 'allow', 'allow-rule')))
  metrics.observe(socks(decision('3', 'CONNECT', 'deny', 'no-rule')))
  metrics.observe(socks({ type: 'closed', id: '2', kind: 'tunnel', bytesFromClient: 5, bytesToClient: 7, durationMs: 1 }))
  const text = own((await metrics.render()).text)
  for (const line of [
    'proxygate_decisions_total{decision="allow",reason="allow-rule",would_deny="false"} 1',
    'proxygate_decisions_total{decision="allow",reason="allow-rule",would_deny="false",listener="socks"} 1',
    'proxygate_decisions_total{decision="deny",reason="no-rule",would_deny="false",listener="socks"} 1',
    'proxygate_requests_total{method="CONNECT",status="200"} 1',
    'proxygate_requests_total{method="CONNECT",status="200",listener="socks"} 1',
    'proxygate_requests_total{method="CONNECT",status="403",listener="socks"} 1',
    'proxygate_tunnel_bytes_total{direction="from_client",listener="socks"} 5',
    'proxygate_tunnel_bytes_total{direction="to_client",listener="socks"} 7',
  ]) t.ok(text.includes(`${line}\n`), line)
})
