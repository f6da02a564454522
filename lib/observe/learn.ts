// Learning an allowlist from observed decisions: a bounded tally of the host:port targets the
// rules did not allow, turned into rules.json entries that say how often and when each was seen.
// Private and special destinations are kept apart (never added to "allow" unasked), and targets
// that a deny rule refused are reported, not allowed. The same tally gives `suggest` its list.
// Pure: no files, no sockets; callers pass the time of each decision.
import type { JsonObject } from '../wiring/docker.js'
import { PRIVATE_KINDS, classifyIp, formatIp, parseIp, type Ip } from '../policy/ip.js'
import type { DecisionRecord } from '../proxy/runtime.js'
import { formatHost, formatTarget, hostText, normaliseName, parseAuthority, type Target } from '../policy/target.js'

/** Most distinct targets one learner keeps; decisions for new targets beyond it are counted and dropped. */
const MAX_LEARNED_TARGETS = 10_000
/** Most special addresses kept per target (a name may resolve to a different one each time). */
const MAX_ADDRESSES = 8
/** Most names listed in the note of a collapsed `*.parent` entry. */
const MAX_NOTE_NAMES = 5

/** A rules.json allow entry as learn writes it. */
export type LearnedEntry = { host: string; ports: number[]; private?: true; note: string }

/** A destination in a special-purpose range: the entries that would allow it, for a person to decide. */
export interface SpecialDestination {
  readonly target: string
  readonly why: string
  readonly entries: readonly LearnedEntry[]
}

export interface DenyRuleHit {
  readonly target: string
  readonly rule: string
  readonly count: number
}

export interface Learned {
  /** sorted: names by domain (siblings together), then IP addresses */
  readonly allow: readonly LearnedEntry[]
  readonly special: readonly SpecialDestination[]
  readonly denyRules: readonly DenyRuleHit[]
  /** decisions handed to the learner */
  readonly decisions: number
  /** decisions about new targets that arrived when the learner was full */
  readonly dropped: number
  readonly limit: number
}

export type Need = 'allow' | 'special' | 'deny-rule'

/** One line of `suggest`: rules.json entries to add (none when a deny rule must change), and how often it was needed. */
export interface Suggestion {
  readonly target: string
  /** allow: a plain entry; special: a private or special-purpose destination; deny-rule: a deny rule refused it */
  readonly need: Need
  readonly count: number
  readonly add: ReadonlyArray<string | JsonObject>
  readonly why: string
}

export interface Learner {
  /** takes one decision; `at` is when it was made (ms since the epoch), when known */
  add(record: DecisionRecord, at?: number): void
  result(options?: { readonly collapse?: boolean }): Learned
  suggestions(): Suggestion[]
}

interface Seen {
  readonly need: Need
  readonly target: Target
  /** special: the addresses in special ranges (IP target or resolved) */
  readonly addresses: Ip[]
  readonly rule: string
  count: number
  first: number | undefined
  last: number | undefined
}

interface Classified {
  readonly need: Need
  readonly target: Target
  readonly addresses: readonly Ip[]
}

/** What a decision needs before enforce mode would let it through; undefined when nothing would help. */
function classify(record: DecisionRecord): Classified | undefined {
  if (record.decision === 'error') return undefined
  const parsed = parseAuthority(record.target)
  if (!parsed.ok) return undefined
  const target = parsed.value
  const ip = target.host.kind === 'ip' ? target.host.ip : undefined
  const candidates = [...(ip ? [ip] : []), ...(record.resolved ?? []).map(parseIp).filter((a): a is Ip => a !== undefined)]
  const addresses = candidates.filter((a) => classifyIp(a) !== undefined)
  if (record.reason === 'deny-rule') return { need: 'deny-rule', target, addresses: [] }
  if (record.reason === 'address-prohibited' || (record.reason === 'no-rule' && ip !== undefined && classifyIp(ip) !== undefined)) return { need: 'special', target, addresses }
  if (record.reason !== 'no-rule') return undefined
  // an IP-literal tunnel on a TLS port is admitted by its server name (what Docker Desktop sends)
  const sni = ip && record.sni !== undefined ? normaliseName(record.sni) : undefined
  if (sni?.ok) return { need: 'allow', target: { host: { kind: 'name', name: sni.value }, port: target.port }, addresses: [] }
  return { need: 'allow', target, addresses: [] }
}

export function createLearner(limit = MAX_LEARNED_TARGETS): Learner {
  const seen = new Map<string, Seen>()
  let decisions = 0
  let dropped = 0
  return {
    add(record, at) {
      decisions++
      const c = classify(record)
      if (!c) return
      const key = `${c.need} ${formatTarget(c.target)}`
      let entry = seen.get(key)
      if (!entry) {
        if (seen.size >= limit) {
          dropped++
          return
        }
        entry = { need: c.need, target: c.target, addresses: [], rule: record.rule ?? '(unknown rule)', count: 0, first: at, last: at }
        seen.set(key, entry)
      }
      entry.count++
      if (at !== undefined) {
        entry.first = Math.min(entry.first ?? at, at)
        entry.last = Math.max(entry.last ?? at, at)
      }
      for (const a of c.addresses) {
        if (entry.addresses.length < MAX_ADDRESSES && !entry.addresses.some((b) => b.family === a.family && b.value === a.value)) entry.addresses.push(a)
      }
    },
    result(options = {}) {
      const all = [...seen.values()]
      return {
        allow: allowEntries(all.filter((s) => s.need === 'allow'), options.collapse === true),
        special: all
          .filter((s) => s.need === 'special')
          .sort(byTarget)
          .map((s) => ({ target: formatTarget(s.target), why: whySpecial(s), entries: specialEntries(s).map((e) => ({ ...e, note: note([s]) })) })),
        denyRules: all
          .filter((s) => s.need === 'deny-rule')
          .sort(byTarget)
          .map((s) => ({ target: formatTarget(s.target), rule: s.rule, count: s.count })),
        decisions,
        dropped,
        limit,
      }
    },
    suggestions() {
      return [...seen.values()]
        .sort((a, b) => b.count - a.count || byTarget(a, b))
        .map((s) => ({ target: formatTarget(s.target), need: s.need, count: s.count, ...suggestionFor(s) }))
    },
  }
}

function byTarget(a: Seen, b: Seen): number {
  return compareHosts(hostText(a.target.host), hostText(b.target.host)) || a.target.port - b.target.port
}

function suggestionFor(s: Seen): Pick<Suggestion, 'add' | 'why'> {
  if (s.need === 'deny-rule') return { add: [], why: `deny rule ${s.rule} matches ${formatTarget(s.target)}: that rule must change to allow it` }
  if (s.need === 'allow') return { add: [formatTarget(s.target)], why: `no allow rule matches ${formatTarget(s.target)}` }
  const add = specialEntries(s).map((e) => (e.private ? { host: e.host, ports: e.ports, private: true } : `${e.host}:${e.ports.join(',')}`))
  return { add, why: whySpecial(s) }
}

/**
 * The entries that would let a special destination through: an IP rule for each special
 * address (which vouches for it), or `"private": true` on the name when every one of them is a
 * private range; plus the name itself, which must be allowed too.
 */
function specialEntries(s: Seen): Array<Omit<LearnedEntry, 'note'>> {
  const ports = [s.target.port]
  const host = formatHost(s.target.host)
  if (s.target.host.kind === 'ip') return [{ host, ports }]
  const privateOnly = s.addresses.length > 0 && s.addresses.every((a) => PRIVATE_KINDS.has(classifyIp(a)?.kind ?? 'reserved'))
  if (privateOnly) return [{ host, ports, private: true }]
  return [{ host, ports }, ...s.addresses.map((a) => ({ host: formatHost({ kind: 'ip' as const, ip: a }), ports }))]
}

function whySpecial(s: Seen): string {
  const kinds = s.addresses.map((a) => `${formatIp(a)}, a ${classifyIp(a)?.label ?? 'special-purpose'} address`).join('; ')
  if (s.target.host.kind === 'ip') return kinds || `${formatTarget(s.target)} is a special-purpose address`
  return `${hostText(s.target.host)} resolves to ${kinds || 'a special-purpose address'}`
}

// ---- entries --------------------------------------------------------------------------------

// second-level labels under which names belong to unrelated owners (example.co.uk): never collapsed to
const SHARED_SECOND_LEVEL = new Set(['co', 'com', 'net', 'org', 'gov', 'edu', 'ac', 'or', 'ne', 'go'])

/** The parent a name may collapse into: at least two labels, and not a shared suffix like co.uk. */
function parentOf(name: string): string | undefined {
  const labels = name.split('.').slice(1)
  if (labels.length < 2) return undefined
  const [second, tld] = labels.slice(-2) as [string, string]
  if (labels.length === 2 && tld.length === 2 && SHARED_SECOND_LEVEL.has(second)) return undefined
  return labels.join('.')
}

/** One entry per host (ports merged); with collapse, `*.parent` for two or more sibling names. */
function allowEntries(seen: readonly Seen[], collapse: boolean): LearnedEntry[] {
  const parentOfTarget = (s: Seen): string | undefined => (s.target.host.kind === 'name' ? parentOf(s.target.host.name) : undefined)
  const siblings = new Map<string, Set<string>>()
  for (const s of seen) {
    const parent = parentOfTarget(s)
    if (parent !== undefined) siblings.set(parent, (siblings.get(parent) ?? new Set()).add(hostText(s.target.host)))
  }
  const groups = new Map<string, Seen[]>()
  for (const s of seen) {
    const parent = parentOfTarget(s)
    const host = collapse && parent !== undefined && (siblings.get(parent)?.size ?? 0) >= 2 ? `*.${parent}` : formatHost(s.target.host)
    groups.set(host, [...(groups.get(host) ?? []), s])
  }
  return [...groups]
    .sort(([a], [b]) => compareHosts(a, b))
    .map(([host, group]) => {
      const ports = [...new Set(group.map((s) => s.target.port))].sort((a, b) => a - b)
      return { host, ports, note: note(group, host.startsWith('*.') ? namesDetail(group) : portsDetail(group, ports)) }
    })
}

function namesDetail(group: readonly Seen[]): string {
  const names = [...new Set(group.map((s) => hostText(s.target.host)))].sort(compareHosts)
  const more = names.length > MAX_NOTE_NAMES ? ` and ${names.length - MAX_NOTE_NAMES} more` : ''
  return ` as ${names.slice(0, MAX_NOTE_NAMES).join(', ')}${more}`
}

function portsDetail(group: readonly Seen[], ports: readonly number[]): string {
  if (ports.length < 2) return ''
  return ` (${ports.map((p) => `port ${p}: ${group.filter((s) => s.target.port === p).reduce((n, s) => n + s.count, 0)}`).join(', ')})`
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')
}

/** `seen N times, first …, last …`: rules.json is JSON, so this is where the evidence goes. */
function note(group: readonly Seen[], detail = ''): string {
  const count = group.reduce((n, s) => n + s.count, 0)
  const firsts = group.flatMap((s) => (s.first === undefined ? [] : [s.first]))
  const lasts = group.flatMap((s) => (s.last === undefined ? [] : [s.last]))
  const when = firsts.length > 0 ? `, first ${iso(Math.min(...firsts))}, last ${iso(Math.max(...lasts))}` : ''
  return `seen ${count} time${count === 1 ? '' : 's'}${detail}${when}`
}

/** Names by domain, label by label from the right (siblings sort together), then IPv4, then IPv6. */
function compareHosts(a: string, b: string): number {
  const ipA = parseIp(a.replace(/^\[(.*)\]$/, '$1'))
  const ipB = parseIp(b.replace(/^\[(.*)\]$/, '$1'))
  if (ipA && ipB) return ipA.family - ipB.family || (ipA.value < ipB.value ? -1 : ipA.value > ipB.value ? 1 : 0)
  if (ipA || ipB) return ipA ? 1 : -1
  const la = a.split('.').reverse()
  const lb = b.split('.').reverse()
  for (let i = 0; i < Math.max(la.length, lb.length); i++) {
    const x = la[i]
    const y = lb[i]
    if (x === y) continue
    if (x === undefined || y === undefined) return x === undefined ? -1 : 1
    return x < y ? -1 : 1
  }
  return 0
}

/** The suggested rules file: the current one with the learned entries appended to "allow", enforced. */
export function learnedRulesFile(base: JsonObject, learned: Learned): JsonObject {
  const current = Array.isArray(base.allow) ? base.allow : []
  return { ...base, mode: 'enforce', allow: [...current, ...learned.allow] }
}

// ---- logs -----------------------------------------------------------------------------------

function text(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined
}

/** A decision from one JSON log line and its time; undefined for other messages and non-JSON lines. */
export function decisionFromLogLine(line: string): { record: DecisionRecord; at: number | undefined } | undefined {
  let value: unknown
  try {
    value = JSON.parse(line)
  } catch {
    return undefined
  }
  if (typeof value !== 'object' || value === null) return undefined
  const v = value as Record<string, unknown>
  const target = text(v.target)
  const decision = v.decision
  if (v.message !== 'decision' || target === undefined || (decision !== 'allow' && decision !== 'deny' && decision !== 'error')) return undefined
  const resolved = Array.isArray(v.resolved) ? v.resolved.filter((a): a is string => typeof a === 'string') : undefined
  const at = Date.parse(text(v.timestamp) ?? '')
  const record: DecisionRecord = {
    id: text(v.id) ?? '',
    client: text(v.client) ?? '',
    method: text(v.method) ?? '',
    target,
    resolved,
    sni: text(v.sni),
    decision,
    rule: text(v.rule),
    reason: text(v.reason),
    mode: text(v.mode) ?? '',
    wouldDeny: v.wouldDeny === true,
  }
  return { record, at: Number.isNaN(at) ? undefined : at }
}
