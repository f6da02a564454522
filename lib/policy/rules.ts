// The rule model: the grammar of allow/deny entries and their validation (errors name the entry,
// its place and why), the indexes compiled once at load, and matching against them. Pure.
import { cidrContains, formatCidr, isSingleAddress, metadataWithin, parseCidr, specialRangeHolding, type Cidr, type Ip, type SpecialRange } from './ip.js'
import { normalisePath, normaliseRuleName, parsePort, redactCredentials, type Host, type Result, type Target } from './target.js'
import { visible } from '../core/visible.js'
import type { SecretBinding } from './secrets.js'

export type PortRange = readonly [number, number]
export type ListName = 'allow' | 'deny'
export type Mode = 'enforce' | 'report'

export type HostPattern =
  | { readonly kind: 'exact'; readonly name: string }
  | { readonly kind: 'wildcard'; readonly suffix: string }
  | { readonly kind: 'cidr'; readonly cidr: Cidr; readonly special: SpecialRange | undefined }

export interface Rule {
  readonly list: ListName
  readonly index: number
  /** the entry as the user wrote it, for messages */
  readonly text: string
  readonly pattern: HostPattern
  readonly ports: readonly PortRange[]
  readonly private: boolean
  readonly note: string | undefined
  /** HTTP methods this rule allows; undefined: any (no inspection needed) */
  readonly methods: readonly string[] | undefined
  /** path globs this rule allows; undefined: any */
  readonly paths: readonly PathGlob[] | undefined
}

export interface PathGlob {
  readonly text: string
  readonly regex: RegExp
}

export interface RuleError {
  readonly path: string
  readonly entry: string
  readonly message: string
}

/** JSON.stringify as it behaves: undefined, functions and symbols have no JSON text. */
const jsonOf: (value: unknown) => string | undefined = JSON.stringify

/** The deepest an entry is shown: JSON.stringify recurses, and the value may come from anywhere (the dashboard's documents too). */
const SHOWN_DEPTH = 32

/** Whether arrays and objects in `value` nest deeper than `depth` (a cycle does): without recursion. */
function nestsDeeper(value: unknown, depth: number): boolean {
  let level: unknown[] = [value]
  for (let d = 0; level.length > 0; d++) {
    const containers = level.filter((v): v is object => typeof v === 'object' && v !== null)
    if (containers.length > 0 && d >= depth) return true
    level = containers.flatMap((v): unknown[] => Object.values(v))
  }
  return false
}

/** An entry as it stood in the file, for a RuleError (JSON text; what JSON cannot show, as text). Never throws. */
export function entryText(value: unknown): string {
  if (nestsDeeper(value, SHOWN_DEPTH)) return `(nested more than ${SHOWN_DEPTH} deep: not shown)`
  try {
    return jsonOf(value) ?? String(value)
  } catch (error) {
    return `(cannot be shown: ${(error as Error).message})`
  }
}

const ALL_PORTS: readonly PortRange[] = [[1, 65535]]
const WEB_PORTS: readonly PortRange[] = [[80, 80], [443, 443]]
const ENTRY_KEYS = new Set(['host', 'ports', 'private', 'note', 'methods', 'paths'])

// ---- grammar -------------------------------------------------------------------------------

/** HOST in a rule: exact name, `*.name`, IP literal (IPv6 in brackets) or CIDR. */
function parseHostPattern(text: string, portless = false): Result<HostPattern> {
  const bracketed = text.startsWith('[') && text.endsWith(']')
  const inner = bracketed ? text.slice(1, -1) : text
  if (/^[0-9a-f:./]+$/i.test(inner) && (inner.includes('/') || inner.includes(':') || /^[0-9.]+$/.test(inner))) {
    if (inner.includes(':') && !bracketed && !portless) return { ok: false, error: 'an IPv6 address or range must be written in brackets' }
    const cidr = parseCidr(inner)
    if (typeof cidr === 'string') return { ok: false, error: cidr }
    return { ok: true, value: { kind: 'cidr', cidr, special: specialRangeHolding(cidr) } }
  }
  if (text.startsWith('*.')) {
    const name = normaliseRuleName(text.slice(2))
    if (!name.ok) return { ok: false, error: `wildcard must be "*." followed by a host name: ${name.error}` }
    return { ok: true, value: { kind: 'wildcard', suffix: name.value } }
  }
  if (text.includes('*')) return { ok: false, error: 'a wildcard is only allowed as a whole first label: "*.example.com"' }
  const name = normaliseRuleName(text)
  return name.ok ? { ok: true, value: { kind: 'exact', name: name.value } } : name
}

/** PORTS: `*`, or a comma list of ports and ranges `a-b`. */
export function parsePorts(text: string): Result<PortRange[]> {
  if (text === '*') return { ok: true, value: [...ALL_PORTS] }
  const ranges: PortRange[] = []
  for (const part of text.split(',')) {
    const [lo, hi, extra] = part.split('-')
    const a = parsePort(lo ?? '')
    const b = hi === undefined ? a : parsePort(hi)
    if (extra !== undefined || !a.ok || !b.ok) return { ok: false, error: `bad port list "${text}": "${part}" is not a port (1-65535) or range a-b` }
    if (a.value > b.value) return { ok: false, error: `reversed port range "${part}"` }
    ranges.push([a.value, b.value])
  }
  return { ok: true, value: ranges }
}

function splitHostPorts(text: string): { host: string; ports: string | undefined } {
  const close = text.startsWith('[') ? text.indexOf(']') : -1
  const colon = text.indexOf(':', close + 1)
  if (close < 0 && text.indexOf(':') !== text.lastIndexOf(':')) return { host: text, ports: undefined }
  return colon < 0 ? { host: text, ports: undefined } : { host: text.slice(0, colon), ports: text.slice(colon + 1) }
}

function portsFromValue(value: unknown): Result<PortRange[]> {
  if (typeof value === 'string') return parsePorts(value)
  if (!Array.isArray(value) || value.length === 0) return { ok: false, error: '"ports" must be a non-empty array of ports/ranges or a string like "80,443"' }
  const parts = (value as unknown[]).map((p) => (typeof p === 'number' && Number.isInteger(p) ? String(p) : p))
  if (!parts.every((p) => typeof p === 'string')) return { ok: false, error: '"ports" entries must be numbers or "a-b" strings' }
  return parsePorts(parts.join(','))
}

interface EntryFields {
  host: string
  ports: unknown
  private: boolean
  note: string | undefined
  methods: unknown
  paths: unknown
}

function entryFields(entry: unknown): Result<EntryFields> {
  if (typeof entry === 'string') {
    const { host, ports } = splitHostPorts(entry)
    return { ok: true, value: { host, ports, private: false, note: undefined, methods: undefined, paths: undefined } }
  }
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
    return { ok: false, error: 'an entry must be a string "HOST[:PORTS]" or an object with "host"' }
  }
  const obj = entry as Record<string, unknown>
  const unknown = Object.keys(obj).find((k) => !ENTRY_KEYS.has(k))
  if (unknown !== undefined) return { ok: false, error: `unknown key "${unknown}" (allowed: ${[...ENTRY_KEYS].join(', ')})` }
  if (typeof obj.host !== 'string') return { ok: false, error: '"host" must be a string' }
  if (obj.private !== undefined && typeof obj.private !== 'boolean') return { ok: false, error: '"private" must be true or false' }
  if (obj.note !== undefined && typeof obj.note !== 'string') return { ok: false, error: '"note" must be a string' }
  return { ok: true, value: { host: obj.host, ports: obj.ports, private: obj.private === true, note: obj.note, methods: obj.methods, paths: obj.paths } }
}

/** Parses one allow/deny entry. Without ports, allow means 80,443 and deny means every port. */
export function parseRule(entry: unknown, list: ListName, index: number): Result<Rule> {
  const fields = entryFields(entry)
  if (!fields.ok) return fields
  const { host, ports } = fields.value
  const pattern = parseHostPattern(host)
  if (!pattern.ok) return pattern
  const defaultPorts = list === 'allow' ? WEB_PORTS : ALL_PORTS
  const portRanges = ports === undefined ? { ok: true as const, value: [...defaultPorts] } : portsFromValue(ports)
  if (!portRanges.ok) return portRanges
  if (fields.value.private && (list === 'deny' || pattern.value.kind === 'cidr')) {
    return { ok: false, error: '"private" applies only to allow rules for host names (an IP rule already names its addresses)' }
  }
  const l7 = parseRequestLimits(fields.value.methods, fields.value.paths)
  if (!l7.ok) return l7
  if ((l7.value.methods || l7.value.paths) && (list === 'deny' || pattern.value.kind === 'cidr')) {
    return { ok: false, error: '"methods" and "paths" apply only to allow rules for host names' }
  }
  const text = typeof entry === 'string' ? entry : JSON.stringify(entry)
  const { private: priv, note } = fields.value
  return { ok: true, value: { list, index, text, pattern: pattern.value, ports: portRanges.value, private: priv, note, ...l7.value } }
}

const METHOD = /^[A-Z][A-Z0-9-]{0,31}$/

/** A path glob: `*` matches within one segment, `**` across segments; matched on decoded paths. */
export function parsePathGlob(text: string): Result<PathGlob> {
  if (!text.startsWith('/') || /[\s?#]/.test(text)) return { ok: false, error: `path "${text}" must start with "/" and hold no spaces, "?" or "#"` }
  const decoded = normalisePath(text.replace(/\*/g, '%2A'))
  if (!decoded.ok) return { ok: false, error: `path "${text}": ${decoded.error}` }
  const source = decoded.value
    .split(/(\*\*|\*)/)
    .map((part) => (part === '**' ? '.*' : part === '*' ? '[^/]*' : part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')))
    .join('')
  return { ok: true, value: { text, regex: new RegExp(`^${source}$`) } }
}

function parseRequestLimits(methods: unknown, paths: unknown): Result<Pick<Rule, 'methods' | 'paths'>> {
  let methodList: string[] | undefined
  if (methods !== undefined) {
    if (!Array.isArray(methods) || methods.length === 0 || !methods.every((m) => typeof m === 'string' && METHOD.test(m.toUpperCase()))) {
      return { ok: false, error: '"methods" must be a non-empty list of HTTP methods like ["GET", "HEAD"]' }
    }
    methodList = methods.map((m: string) => m.toUpperCase())
  }
  let globs: PathGlob[] | undefined
  if (paths !== undefined) {
    if (!Array.isArray(paths) || paths.length === 0 || !paths.every((p) => typeof p === 'string')) {
      return { ok: false, error: '"paths" must be a non-empty list of path globs like ["/repos/our-org/**"]' }
    }
    globs = []
    for (const p of paths) {
      const glob = parsePathGlob(p)
      if (!glob.ok) return glob
      globs.push(glob.value)
    }
  }
  return { ok: true, value: { methods: methodList, paths: globs } }
}

/** A `bypass` entry: a host pattern without ports (so IPv6 needs no brackets). */
export function parseBypass(entry: unknown): Result<HostPattern> {
  if (typeof entry !== 'string') return { ok: false, error: 'a bypass entry must be a string' }
  const pattern = parseHostPattern(entry, true)
  if (pattern.ok || entry.includes('[') || entry.split(':').length !== 2) return pattern
  return { ok: false, error: 'bypass entries take no ports' }
}

// ---- index ---------------------------------------------------------------------------------

interface RuleIndex {
  readonly exact: Map<string, Rule[]>
  readonly wildcard: Map<string, Rule[]>
  /** one map per (family, prefix length), keyed by network base: one probe per prefix length */
  readonly cidr: Array<{ family: 4 | 6; shift: bigint; byBase: Map<bigint, Rule[]> }>
}

export interface Policy {
  readonly allow: readonly Rule[]
  readonly deny: readonly Rule[]
  readonly allowIndex: RuleIndex
  readonly denyIndex: RuleIndex
  /** some allow rule limits methods or paths: only then do requests need a second look */
  readonly limitsRequests: boolean
  /** the secrets' placeholders and where their values may go (set at start, with the local CA): never values */
  readonly secrets?: readonly SecretBinding[]
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key)
  if (list) list.push(value)
  else map.set(key, [value])
}

function buildIndex(rules: readonly Rule[]): RuleIndex {
  const index: RuleIndex = { exact: new Map(), wildcard: new Map(), cidr: [] }
  for (const rule of rules) {
    const p = rule.pattern
    if (p.kind === 'exact') push(index.exact, p.name, rule)
    else if (p.kind === 'wildcard') push(index.wildcard, p.suffix, rule)
    else {
      const shift = BigInt((p.cidr.family === 4 ? 32 : 128) - p.cidr.prefix)
      let slot = index.cidr.find((c) => c.family === p.cidr.family && c.shift === shift)
      if (!slot) index.cidr.push((slot = { family: p.cidr.family, shift, byBase: new Map() }))
      push(slot.byBase, p.cidr.base, rule)
    }
  }
  return index
}

export interface PolicyInput {
  readonly allow?: unknown
  readonly deny?: unknown
}

/** Validates and indexes allow/deny lists. Every bad entry is reported, with its place and why. */
export function compilePolicy(input: PolicyInput): Result<Policy> & { errors?: RuleError[] } {
  const errors: RuleError[] = []
  const lists = { allow: [] as Rule[], deny: [] as Rule[] }
  for (const list of ['allow', 'deny'] as const) {
    const entries = input[list] ?? []
    if (!Array.isArray(entries)) {
      errors.push({ path: list, entry: entryText(entries), message: `"${list}" must be an array` })
      continue
    }
    entries.forEach((entry: unknown, i: number) => {
      const rule = parseRule(entry, list, i)
      if (rule.ok) lists[list].push(rule.value)
      else errors.push({ path: `${list}[${i}]`, entry: entryText(entry), message: rule.error })
    })
  }
  if (errors.length > 0) return { ok: false, error: formatRuleErrors(errors), errors }
  const limitsRequests = lists.allow.some(hasRequestLimits)
  return { ok: true, value: { ...lists, allowIndex: buildIndex(lists.allow), denyIndex: buildIndex(lists.deny), limitsRequests } }
}

/** One line per problem; control characters (C0, DEL, C1) and line separators from rules are shown escaped. */
export function formatRuleErrors(errors: readonly RuleError[]): string {
  // credentials in a rule (a URL with userinfo) never reach the output, whichever check failed
  return errors.map((e) => visible(redactCredentials(`${e.path} ${e.entry}: ${e.message}`))).join('\n')
}

// ---- matching ------------------------------------------------------------------------------

function portMatches(rule: Rule, port: number): boolean {
  return rule.ports.some(([lo, hi]) => port >= lo && port <= hi)
}

function firstByIndex(rules: Rule[]): Rule | undefined {
  return rules.reduce<Rule | undefined>((best, r) => (best === undefined || r.index < best.index ? r : best), undefined)
}

/** Rules whose host pattern matches the name (exact, or `*.suffix` for a strict subdomain). */
function nameCandidates(index: RuleIndex, name: string): Rule[] {
  const found = [...(index.exact.get(name) ?? [])]
  for (let dot = name.indexOf('.'); dot >= 0; dot = name.indexOf('.', dot + 1)) {
    found.push(...(index.wildcard.get(name.slice(dot + 1)) ?? []))
  }
  return found
}

function ipMatches(index: RuleIndex, ip: Ip, port: number): Rule[] {
  const found: Rule[] = []
  for (const { family, shift, byBase } of index.cidr) {
    if (family !== ip.family) continue
    for (const rule of byBase.get((ip.value >> shift) << shift) ?? []) if (portMatches(rule, port)) found.push(rule)
  }
  return found
}

export function matchName(policy: Policy, list: ListName, name: string, port: number): Rule | undefined {
  const index = list === 'allow' ? policy.allowIndex : policy.denyIndex
  return firstByIndex(nameCandidates(index, name).filter((r) => portMatches(r, port)))
}

export function matchIp(policy: Policy, list: ListName, ip: Ip, port: number): Rule | undefined {
  return firstByIndex(ipMatches(list === 'allow' ? policy.allowIndex : policy.denyIndex, ip, port))
}

/**
 * Whether an allow rule that names special-purpose space covers the address `special` classifies
 * (whatever its order among broader rules). A cloud metadata address is named only by a rule for
 * that one address: a range that holds it (169.254.0.0/16, 100.64.0.0/10) allows the rest.
 */
export function specialRuleCovers(policy: Policy, ip: Ip, port: number, special: SpecialRange): boolean {
  const exactOnly = special.kind === 'metadata'
  return ipMatches(policy.allowIndex, ip, port).some((r) => r.pattern.kind === 'cidr' && r.pattern.special !== undefined && (!exactOnly || isSingleAddress(r.pattern.cidr)))
}

/** Allow rules for a range that holds cloud metadata addresses, which the range does not allow: one warning per rule. */
export function metadataWarnings(policy: Policy): RuleError[] {
  return policy.allow.flatMap((rule) => {
    const p = rule.pattern
    const held = p.kind === 'cidr' && !isSingleAddress(p.cidr) ? metadataWithin(p.cidr) : []
    if (held.length === 0) return []
    const addresses = held.map((range) => `${formatCidr(range.cidr)} (${range.label})`).join(', ')
    const one = held.length === 1
    const message = `this range holds ${one ? 'the cloud metadata address' : 'the cloud metadata addresses'} ${addresses}, which it does not allow: only a rule naming ${one ? 'that exact address' : 'each exact address'} does`
    return [{ path: `allow[${rule.index}]`, entry: rule.text, message }]
  })
}

/** The first rule of the list whose host pattern matches the name, on whatever ports. */
export function matchNameOnAnyPort(policy: Policy, list: ListName, name: string): Rule | undefined {
  return firstByIndex(nameCandidates(list === 'allow' ? policy.allowIndex : policy.denyIndex, name))
}

export function coversEveryPort(rule: Rule): boolean {
  return rule.ports.some(([lo, hi]) => lo <= 1 && hi >= 65535)
}

/** An allow rule for the name on any port: the hint when the port is what failed. */
export function allowRuleOnAnyPort(policy: Policy, name: string): Rule | undefined {
  return nameCandidates(policy.allowIndex, name)[0]
}

export function ruleLabel(rule: Rule): string {
  return `${rule.list}[${rule.index}] ${rule.text}`
}

/** Whether a host pattern covers a host, ports aside: the test bypass lists and the PAC make. */
export function patternMatches(pattern: HostPattern, host: Host): boolean {
  if (host.kind === 'ip') return pattern.kind === 'cidr' && cidrContains(pattern.cidr, host.ip)
  if (pattern.kind === 'exact') return pattern.name === host.name
  if (pattern.kind === 'wildcard') return host.name.endsWith(`.${pattern.suffix}`)
  return false
}

export function describePattern(pattern: HostPattern): string {
  if (pattern.kind === 'exact') return pattern.name
  if (pattern.kind === 'wildcard') return `*.${pattern.suffix}`
  return formatCidr(pattern.cidr)
}

// ---- request limits ----------------------------------------------------------------------

export function hasRequestLimits(rule: Rule): boolean {
  return rule.methods !== undefined || rule.paths !== undefined
}

export function allowCandidates(policy: Policy, target: Target): Rule[] {
  if (target.host.kind === 'ip') return ipMatches(policy.allowIndex, target.host.ip, target.port)
  return nameCandidates(policy.allowIndex, target.host.name).filter((r) => portMatches(r, target.port))
}

/** Allow rules that limit methods or paths: they need the local CA to open TLS tunnels. */
export function rulesWithRequestLimits(policy: Policy): Rule[] {
  return policy.allow.filter(hasRequestLimits)
}
