// What the dashboard shows: recent decisions, the most denied destinations with the rule that
// would allow them, counters and the last reload. Bounded: old entries fall off.
import { LRUCache } from 'lru-cache'
import type { DnsRecord } from '../dns/answer.js'
import { DEFAULT_POLICY } from '../policy/clients.js'
import type { DecisionRecord, ProbeRecord, ProxyEvent, ReloadRecord } from '../proxy/runtime.js'

export interface DeniedTarget {
  /** names this row for POST /allow */
  readonly id: string
  readonly target: string
  readonly count: number
  readonly reason: string | undefined
  readonly detail: string | undefined
  readonly suggestion: string | undefined
  /** the policy that denied it, whose "allow" the suggestion belongs in */
  readonly policy: string
  readonly lastSeen: string
}

/** One row of the live list: a connection's decision, or a query to the sandbox DNS server. */
export type LiveEntry = { readonly kind: 'decision'; readonly record: DecisionRecord } | { readonly kind: 'dns'; readonly record: DnsRecord }

export interface Activity {
  observe(event: ProxyEvent): void
  recent(): readonly LiveEntry[]
  topDenied(limit: number): DeniedTarget[]
  denied(id: string): DeniedTarget | undefined
  /** drops a row from the most denied, once its rule is allowed */
  forgetDenied(id: string): void
  counters(): Readonly<Record<'allow' | 'deny' | 'error', number>>
  lastReload(): (ReloadRecord & { at: string }) | undefined
  /** a `proxy-gate doctor` probe that arrived, by its nonce (the last PROBES_KEPT are kept) */
  probe(nonce: string): (ProbeRecord & { at: string }) | undefined
  /** live decisions and DNS queries for server-sent events; returns the unsubscribe function */
  subscribe(listener: (entry: LiveEntry) => void): () => void
}

/** Probes remembered: doctor asks within seconds of sending its own, and anyone may send probes. */
const PROBES_KEPT = 64

export function createActivity(options: { recent?: number; targets?: number } = {}): Activity {
  const keep = options.recent ?? 200
  const recent: LiveEntry[] = []
  const denied = new LRUCache<string, DeniedTarget>({ max: options.targets ?? 1000 })
  const counters = { allow: 0, deny: 0, error: 0 }
  const listeners = new Set<(entry: LiveEntry) => void>()
  let reload: (ReloadRecord & { at: string }) | undefined
  const probes = new LRUCache<string, ProbeRecord & { at: string }>({ max: PROBES_KEPT })

  const live = (entry: LiveEntry): void => {
    recent.push(entry)
    if (recent.length > keep) recent.shift()
    for (const listener of listeners) listener(entry)
  }
  /** `kind` tells a name denied by DNS from the same text denied as a connection target. */
  const noteDenied = (kind: string, target: string, fields: Pick<DeniedTarget, 'reason' | 'detail' | 'suggestion'> & { policy: string | undefined }): void => {
    const policy = fields.policy ?? DEFAULT_POLICY
    const id = `${kind} ${policy} ${target} ${fields.reason ?? ''}`
    const count = (denied.get(id)?.count ?? 0) + 1
    denied.set(id, { id, target, ...fields, policy, count, lastSeen: new Date().toISOString() })
  }
  const onDecision = (record: DecisionRecord): void => {
    counters[record.decision]++
    const { target, reason, detail, suggestion, policy } = record
    if (record.decision === 'deny' || record.wouldDeny) noteDenied('connect', target, { reason, detail, suggestion, policy })
    live({ kind: 'decision', record })
  }
  const onDns = (record: DnsRecord): void => {
    const { name, reason, detail, suggestion, policy } = record
    if (name !== undefined && (record.answer === 'deny' || record.wouldDeny)) noteDenied('dns', `${name} (DNS)`, { reason, detail, suggestion, policy })
    live({ kind: 'dns', record })
  }
  return {
    observe(event) {
      // kept as they come, `type` and all (no copy per event): admin.ts leaves it out when it sends them
      if (event.type === 'decision') onDecision(event)
      else if (event.type === 'dns') onDns(event)
      else if (event.type === 'reload') reload = { ...event, at: new Date().toISOString() }
      else if (event.type === 'probe') probes.set(event.nonce, { nonce: event.nonce, client: event.client, at: new Date().toISOString() })
    },
    recent: () => recent,
    topDenied: (limit) => [...denied.values()].sort((a, b) => b.count - a.count).slice(0, limit),
    denied: (id) => denied.get(id),
    forgetDenied: (id) => void denied.delete(id),
    counters: () => counters,
    lastReload: () => reload,
    probe: (nonce) => probes.get(nonce),
    subscribe(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
  }
}
