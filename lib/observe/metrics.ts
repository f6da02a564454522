// Prometheus metrics (prom-client) built from the same events the log shows. Every label has a
// small, fixed set of values: no per-host labels, so cardinality stays bounded.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
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
const FROM_CLIENT = (): Labels => ({ direction: 'from_client' })
const TO_CLIENT = (): Labels => ({ direction: 'to_client' })
const status = (s: number | undefined): string => (s !== undefined && s >= 100 && s <= 599 ? String(s) : 'none')

/**
 * Counts kept as plain numbers, one per label set, and added to their prom-client counter when
 * scraped: prom-client's inc() hashes and validates its labels on every call, several per tunnel.
 */
class Tally {
  /** `reported` undefined: not yet in the counter (a first count of 0 is shown too, as inc(0) shows it) */
  private readonly counts = new Map<string, { readonly labels: Labels; value: number; reported: number | undefined }>()

  /** `key` names the label set; `labels` makes it, the first time that key is seen */
  add(key: string, labels: () => Labels, n = 1): void {
    const count = this.counts.get(key)
    if (count) count.value += n
    else this.counts.set(key, { labels: labels(), value: n, reported: undefined })
  }

  /** for the counter's collect(): what was counted since the last scrape */
  report(counter: Counter): void {
    for (const count of this.counts.values()) {
      if (count.value === count.reported) continue
      counter.inc(count.labels, count.value - (count.reported ?? 0))
      count.reported = count.value
    }
  }
}

/** A counter whose values come from a Tally at scrape time. */
function tallied(registers: Registry[], name: string, help: string, labelNames: string[]): Tally {
  const tally = new Tally()
  new Counter({ name, help, labelNames, registers, collect: function (this: Counter) { tally.report(this) } })
  return tally
}

export function createMetrics(open: () => OpenView): Metrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'proxygate_' })
  const registers = [registry]
  const decisions = tallied(registers, 'proxygate_decisions_total', 'Decisions by result and reason', ['decision', 'reason', 'would_deny'])
  const requests = tallied(registers, 'proxygate_requests_total', 'Requests by method and the status the client got', ['method', 'status'])
  const bytes = tallied(registers, 'proxygate_tunnel_bytes_total', 'Bytes relayed through tunnels and upgraded connections', ['direction'])
  const errors = tallied(registers, 'proxygate_errors_total', 'Errors by type: refused requests and how connections ended badly', ['type'])
  const dnsQueries = new Counter({ name: 'proxygate_dns_queries_total', help: 'Queries to the sandbox DNS server by answer and reason', labelNames: ['answer', 'reason'], registers })
  const reloads = new Counter({ name: 'proxygate_reloads_total', help: 'Rules reloads by result', labelNames: ['result'], registers })
  const buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
  const dns = new Histogram({ name: 'proxygate_dns_lookup_seconds', help: 'DNS lookups of allowed names', labelNames: ['result'], buckets, registers })
  const connect = new Histogram({ name: 'proxygate_upstream_connect_seconds', help: 'TCP connects to upstreams for tunnels', labelNames: ['result'], buckets, registers })
  new Gauge({
    name: 'proxygate_open_connections',
    help: 'Open tunnels, forwarded requests and upgraded connections',
    labelNames: ['kind'],
    registers,
    collect() {
      const counts = { tunnel: 0, forward: 0, upgrade: 0 }
      for (const conn of open()) counts[conn.kind]++
      for (const [kind, n] of Object.entries(counts)) this.set({ kind }, n)
    },
  })

  const request = (m: string, s: string): void => requests.add(`${m} ${s}`, () => ({ method: m, status: s }))
  const error = (type: string): void => errors.add(type, () => ({ type }))
  const onDecision = (e: Extract<ProxyEvent, { type: 'decision' }>): void => {
    const r = reason(e.reason)
    const wouldDeny = e.wouldDeny ? 'true' : 'false'
    decisions.add(`${e.decision} ${r} ${wouldDeny}`, () => ({ decision: e.decision, reason: r, would_deny: wouldDeny }))
    if (e.decision === 'error') error(r)
    if (e.decision === 'deny') request(method(e.method), '403')
    else if (e.decision === 'error') request(method(e.method), status(e.status))
    else if (e.method === 'CONNECT' || e.method === 'TLS') request(e.method, '200')
  }
  const onClosed = (e: Extract<ProxyEvent, { type: 'closed' }>): void => {
    if (e.kind === 'forward') request(method(e.method), status(e.status))
    if (e.kind === 'upgrade') request('GET', '101')
    if (e.bytesFromClient !== undefined) bytes.add('from_client', FROM_CLIENT, e.bytesFromClient)
    if (e.bytesToClient !== undefined) bytes.add('to_client', TO_CLIENT, e.bytesToClient)
    if (e.error !== undefined) error(ending(e.error))
  }
  return {
    observe(event) {
      if (event.type === 'decision') onDecision(event)
      else if (event.type === 'closed') onClosed(event)
      else if (event.type === 'timing') (event.what === 'dns' ? dns : connect).observe({ result: event.ok ? 'ok' : 'failed' }, event.ms / 1000)
      else if (event.type === 'dns') dnsQueries.inc({ answer: event.answer, reason: event.reason }) // both from fixed lists (DnsRecord)
      else reloads.inc({ result: event.ok ? 'ok' : 'failed' })
    },
    render: async () => ({ text: await registry.metrics(), contentType: registry.contentType }),
  }
}
