// What the dashboard shows: recent decisions, the most denied destinations with the rule that
// would allow them, counters and the last reload. Bounded: old entries fall off.
import { LRUCache } from 'lru-cache'
import type { DecisionRecord, ProxyEvent, ReloadRecord } from '../proxy/runtime.js'

export interface DeniedTarget {
  readonly target: string
  readonly count: number
  readonly reason: string | undefined
  readonly detail: string | undefined
  readonly suggestion: string | undefined
  readonly lastSeen: string
}

export interface Activity {
  observe(event: ProxyEvent): void
  recent(): readonly DecisionRecord[]
  topDenied(limit: number): DeniedTarget[]
  counters(): Readonly<Record<'allow' | 'deny' | 'error', number>>
  lastReload(): (ReloadRecord & { at: string }) | undefined
  /** live decisions for server-sent events; returns the unsubscribe function */
  subscribe(listener: (record: DecisionRecord) => void): () => void
}

export function createActivity(options: { recent?: number; targets?: number } = {}): Activity {
  const keep = options.recent ?? 200
  const recent: DecisionRecord[] = []
  const denied = new LRUCache<string, DeniedTarget>({ max: options.targets ?? 1000 })
  const counters = { allow: 0, deny: 0, error: 0 }
  const listeners = new Set<(record: DecisionRecord) => void>()
  let reload: (ReloadRecord & { at: string }) | undefined

  const onDecision = (record: DecisionRecord): void => {
    counters[record.decision]++
    recent.push(record)
    if (recent.length > keep) recent.shift()
    if (record.decision === 'deny' || record.wouldDeny) {
      const key = `${record.target} ${record.reason ?? ''}`
      const count = (denied.get(key)?.count ?? 0) + 1
      const { target, reason, detail, suggestion } = record
      denied.set(key, { target, reason, detail, suggestion, count, lastSeen: new Date().toISOString() })
    }
    for (const listener of listeners) listener(record)
  }
  return {
    observe(event) {
      if (event.type === 'decision') {
        const { type: _type, ...record } = event
        onDecision(record)
      } else if (event.type === 'reload') reload = { ...event, at: new Date().toISOString() }
    },
    recent: () => recent,
    topDenied: (limit) => [...denied.values()].sort((a, b) => b.count - a.count).slice(0, limit),
    counters: () => counters,
    lastReload: () => reload,
    subscribe(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
  }
}
