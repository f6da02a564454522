// Prometheus metrics built from the same events the log shows. Every label has a small, fixed
// set of values: no per-host labels, so cardinality stays bounded. Events are counted in plain
// numbers (tallies; histogram buckets in arrays), and prom-client is loaded, with its process
// metrics started, at the first scrape: ~3 MB of RSS and label hashing on every event a proxy
// nobody scrapes never pays.
import type { Counter, Registry } from 'prom-client'
import type * as Prom from 'prom-client'
import { promClient } from '../core/lazy.js'
import { REASONS as POLICY_REASONS } from '../policy/decide.js'
import { PROXY_ERROR_TYPES } from '../core/reply.js'
import type { OpenView, ProxyEvent } from '../proxy/runtime.js'

export interface Metrics {
  observe(event: ProxyEvent): void
  /** the exposition text and its content type */
  render(): Promise<{ text: string; contentType: string }>
}

// TLS: a connection to a transparent TLS listener (sandbox), counted like a CONNECT tunnel
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'CONNECT', 'TLS'])
// every value a decision's reason can take: the policy's reasons and the proxy's error types
const REASONS = new Set<string>([...POLICY_REASONS, ...PROXY_ERROR_TYPES])
// Why a connection ended, from the close record's free text to a fixed vocabulary.
const ENDINGS: Array<[RegExp, string]> = [
  [/idle timeout/, 'idle_timeout'],
  [/maximum lifetime/, 'max_lifetime'],
  [/^rules changed/, 'revoked'],
  [/shutting down/, 'shutdown'],
  [/ECONNRESET/, 'connection_reset'],
  [/EPIPE/, 'broken_pipe'],
  [/ETIMEDOUT|TIMEOUT/, 'timeout'],
  [/ECONNREFUSED/, 'connection_refused'],
  [/CERT|TLS|SSL/, 'tls'],
  [/Abort|aborted|went away/, 'aborted'],
]

const method = (m: string | undefined): string => (m !== undefined && METHODS.has(m) ? m : m ? 'OTHER' : 'NONE')
const reason = (r: string | undefined): string => (r !== undefined && REASONS.has(r) ? r : 'other')
const ending = (text: string): string => ENDINGS.find(([pattern]) => pattern.test(text))?.[1] ?? 'other'
type Labels = Record<string, string>
const status = (s: number | undefined): string => (s !== undefined && s >= 100 && s <= 599 ? String(s) : 'none')

interface Count {
  readonly labels: Labels
  value: number
  /** undefined: not yet in the counter (a first count of 0 is shown too, as inc(0) shows it) */
  reported: number | undefined
}

/**
 * Counts kept as plain numbers, one per label set, and added to their prom-client counter when
 * scraped: prom-client's inc() hashes and validates its labels on every call, several per tunnel.
 * A label set is found by its values, one map level each: they are constant strings whose hash V8
 * keeps, where a key joined from them would be a new string to hash on every event.
 */
class Tally {
  private readonly counts = new Map<string, Map<string, Map<string, Map<string, Count>>>>()
  /** every label set, in the order first seen: the order of the series in the exposition */
  private readonly seen: Count[] = []

  /** `names`: the counter's label names (up to four), in order; `listener` is left out of a series whose value for it is '' */
  constructor(readonly names: readonly string[]) {}

  /** counts `n` for the label values a, b, c, d (as many as names) */
  add(n: number, a: string, b = '', c = '', d = ''): void {
    let byB = this.counts.get(a)
    if (!byB) this.counts.set(a, (byB = new Map<string, Map<string, Map<string, Count>>>()))
    let byC = byB.get(b)
    if (!byC) byB.set(b, (byC = new Map<string, Map<string, Count>>()))
    let byD = byC.get(c)
    if (!byD) byC.set(c, (byD = new Map<string, Count>()))
    const count = byD.get(d)
    if (count) count.value += n
    else {
      const created: Count = { labels: this.labelsOf([a, b, c, d]), value: n, reported: undefined }
      byD.set(d, created)
      this.seen.push(created)
    }
  }

  // the proxy port's series carry no `listener`: they stay as they were before other listeners came
  private labelsOf(values: readonly string[]): Labels {
    const labels: Labels = {}
    this.names.forEach((name, i) => {
      const value = values[i] ?? ''
      if (name !== 'listener' || value !== '') labels[name] = value
    })
    return labels
  }

  /** for the counter's collect(): what was counted since the last scrape */
  report(counter: Counter): void {
    for (const count of this.seen) {
      if (count.value === count.reported) continue
      counter.inc(count.labels, count.value - (count.reported ?? 0))
      count.reported = count.value
    }
  }
}

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/** One line of a histogram's exposition: `name_bucket{le,...}`, `name_sum{...}` or `name_count{...}`. */
interface HistogramValue {
  readonly metricName: string
  readonly labels: Readonly<Record<string, string | number>>
  readonly value: number
}

/** A histogram's observations, one series per label set, as prom-client's Histogram keeps them. */
class Buckets {
  private readonly series = new Map<string, { readonly labels: Labels; readonly counts: number[]; sum: number; count: number }>()

  constructor(
    private readonly name: string,
    private readonly help: string,
  ) {}

  observe(key: string, labels: () => Labels, value: number): void {
    let series = this.series.get(key)
    if (!series) this.series.set(key, (series = { labels: labels(), counts: BUCKETS.map(() => 0), sum: 0, count: 0 }))
    series.sum += value
    series.count++
    const i = BUCKETS.findIndex((bound) => value <= bound)
    if (i >= 0) series.counts[i] = (series.counts[i] ?? 0) + 1
  }

  /** the values prom-client's Histogram exposes: cumulative buckets (le first), +Inf, sum and count */
  get(): Promise<{ name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: HistogramValue[] }> {
    const values: HistogramValue[] = []
    for (const { labels, counts, sum, count } of this.series.values()) {
      let below = 0
      BUCKETS.forEach((le, i) => values.push({ metricName: `${this.name}_bucket`, labels: { le, ...labels }, value: (below += counts[i] ?? 0) }))
      values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf', ...labels }, value: count })
      values.push({ metricName: `${this.name}_sum`, labels, value: sum }, { metricName: `${this.name}_count`, labels, value: count })
    }
    return Promise.resolve({ name: this.name, help: this.help, type: 'histogram', aggregator: 'sum', values })
  }
}

interface Counts {
  readonly decisions: Tally
  readonly requests: Tally
  readonly bytes: Tally
  readonly errors: Tally
  readonly dnsQueries: Tally
  readonly reloads: Tally
  readonly dns: Buckets
  readonly connect: Buckets
}

/** The registry, made at the first scrape: the counters read their tallies when collected. */
function createRegistry(counts: Counts, open: () => OpenView): Registry {
  const prom = promClient()
  const registry = new prom.Registry()
  prom.collectDefaultMetrics({ register: registry, prefix: 'proxygate_' })
  const registers = [registry]
  const tallied = (tally: Tally, name: string, help: string): Counter =>
    new prom.Counter({ name, help, labelNames: [...tally.names], registers, collect: function (this: Counter) { tally.report(this) } })
  tallied(counts.decisions, 'proxygate_decisions_total', 'Decisions by result and reason')
  tallied(counts.requests, 'proxygate_requests_total', 'Requests by method and the status the client got')
  tallied(counts.bytes, 'proxygate_tunnel_bytes_total', 'Bytes relayed through tunnels and upgraded connections')
  tallied(counts.errors, 'proxygate_errors_total', 'Errors by type: refused requests and how connections ended badly')
  tallied(counts.dnsQueries, 'proxygate_dns_queries_total', 'Queries to the sandbox DNS server by answer and reason')
  tallied(counts.reloads, 'proxygate_reloads_total', 'Rules reloads by result')
  // not prom-client Histograms: those take no counts from outside, and observing into them per event is what this avoids
  for (const buckets of [counts.dns, counts.connect]) registry.registerMetric(buckets as unknown as Prom.Histogram)
  new prom.Gauge({
    name: 'proxygate_open_connections',
    help: 'Open tunnels, forwarded requests and upgraded connections',
    labelNames: ['kind'],
    registers,
    collect() {
      const byKind = { tunnel: 0, forward: 0, upgrade: 0 }
      for (const conn of open()) byKind[conn.kind]++
      for (const [kind, n] of Object.entries(byKind)) this.set({ kind }, n)
    },
  })
  return registry
}

export function createMetrics(open: () => OpenView): Metrics {
  const counts: Counts = {
    decisions: new Tally(['decision', 'reason', 'would_deny', 'listener']),
    requests: new Tally(['method', 'status', 'listener']),
    bytes: new Tally(['direction', 'listener']),
    errors: new Tally(['type']),
    dnsQueries: new Tally(['answer', 'reason']),
    reloads: new Tally(['result']),
    dns: new Buckets('proxygate_dns_lookup_seconds', 'DNS lookups of allowed names'),
    connect: new Buckets('proxygate_upstream_connect_seconds', 'TCP connects to upstreams for tunnels'),
  }
  const { decisions, requests, bytes, errors } = counts
  let registry: Registry | undefined

  const request = (m: string, s: string, l = ''): void => requests.add(1, m, s, l)
  const error = (type: string): void => errors.add(1, type)
  const onDecision = (e: Extract<ProxyEvent, { type: 'decision' }>): void => {
    const r = reason(e.reason)
    const wouldDeny = e.wouldDeny ? 'true' : 'false'
    const l = e.listener ?? ''
    decisions.add(1, e.decision, r, wouldDeny, l)
    if (e.decision === 'error') error(r)
    if (e.decision === 'deny') request(method(e.method), '403', l)
    else if (e.decision === 'error') request(method(e.method), status(e.status), l)
    else if (e.method === 'CONNECT' || e.method === 'TLS') request(e.method, '200', l)
  }
  const onClosed = (e: Extract<ProxyEvent, { type: 'closed' }>): void => {
    if (e.kind === 'forward') request(method(e.method), status(e.status))
    if (e.kind === 'upgrade') request('GET', '101')
    const l = e.listener ?? ''
    if (e.bytesFromClient !== undefined) bytes.add(e.bytesFromClient, 'from_client', l)
    if (e.bytesToClient !== undefined) bytes.add(e.bytesToClient, 'to_client', l)
    if (e.error !== undefined) error(ending(e.error))
  }
  const onTiming = (e: Extract<ProxyEvent, { type: 'timing' }>): void => {
    const result = e.ok ? 'ok' : 'failed'
    ;(e.what === 'dns' ? counts.dns : counts.connect).observe(result, () => ({ result }), e.ms / 1000)
  }
  return {
    observe(event) {
      if (event.type === 'decision') onDecision(event)
      else if (event.type === 'closed') onClosed(event)
      else if (event.type === 'timing') onTiming(event)
      else if (event.type === 'dns') counts.dnsQueries.add(1, event.answer, event.reason) // both from fixed lists (DnsRecord)
      else if (event.type === 'reload') {
        const result = event.ok ? 'ok' : 'failed'
        counts.reloads.add(1, result)
      }
    },
    render: async () => {
      registry ??= createRegistry(counts, open)
      return { text: await registry.metrics(), contentType: registry.contentType }
    },
  }
}
