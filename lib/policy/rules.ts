// The rule model and the egress decision. Rules are validated and indexed once at load; a
// decision is a value (verdict, reason, matched rule, suggested fix) that every wire path
// consumes. Pure: no files, no DNS, no sockets.
import {
  PRIVATE_KINDS,
  cidrContains,
  classifyIp,
  formatCidr,
  formatIp,
  parseCidr,
  specialRangeHolding,
  type Cidr,
  type Ip,
  type SpecialRange,
} from './ip.js'
import { formatTarget, hostText, normaliseName, normalisePath, normaliseRuleName, parsePort, redactCredentials, type Host, type Result, type Target } from './target.js'

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

const ALL_PORTS: readonly PortRange[] = [[1, 65535]]
const WEB_PORTS: readonly PortRange[] = [[80, 80], [443, 443]]
const ENTRY_KEYS = new Set(['host', 'ports', 'private', 'note', 'methods', 'paths'])

// ---- grammar -------------------------------------------------------------------------------

/** HOST in a rule: exact name, `*.name`, IP literal (IPv6 in brackets) or CIDR. */
export function parseHostPattern(text: string, portless = false): Result<HostPattern> {
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
  const parts = value.map((p) => (typeof p === 'number' && Number.isInteger(p) ? String(p) : p))
  if (!parts.every((p) => typeof p === 'string')) return { ok: false, error: '"ports" entries must be numbers or "a-b" strings' }
  return parsePorts(parts.join(','))
}

interface EntryFields {
  host: string
  ports: string | unknown
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
  return { ok: true, value: { host: obj.host, ports: obj.ports, private: obj.private === true, note: obj.note as string | undefined, methods: obj.methods, paths: obj.paths } }
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
    .map((part) => (part === '**' ? '.*' : part === '*' ? '[^/]*' : part.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
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
    for (const p of paths as string[]) {
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
      errors.push({ path: list, entry: JSON.stringify(entries), message: `"${list}" must be an array` })
      continue
    }
    entries.forEach((entry: unknown, i: number) => {
      const rule = parseRule(entry, list, i)
      if (rule.ok) lists[list].push(rule.value)
      else errors.push({ path: `${list}[${i}]`, entry: JSON.stringify(entry) ?? String(entry), message: rule.error })
    })
  }
  if (errors.length > 0) return { ok: false, error: formatRuleErrors(errors), errors }
  const limitsRequests = lists.allow.some(hasRequestLimits)
  return { ok: true, value: { ...lists, allowIndex: buildIndex(lists.allow), denyIndex: buildIndex(lists.deny), limitsRequests } }
}

/** One line per problem; control characters and line separators from rules are shown escaped. */
export function formatRuleErrors(errors: readonly RuleError[]): string {
  // eslint-disable-next-line no-control-regex
  const visible = (text: string) => text.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
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

// ---- decision ------------------------------------------------------------------------------

/** Why a decision came out as it did (logged, and a metrics label). */
export const REASONS = [
  'allow-rule', // an allow rule matched and every address passed the guard
  'deny-rule', // a deny rule matched the name or an address
  'no-rule', // no allow rule matched
  'address-prohibited', // a resolved or literal address is special-purpose
  'self-connection', // the address is the proxy's own listener
  'sni-mismatch', // the TLS server name is not the CONNECT host (domain fronting)
  'sni-missing', // no usable TLS server name where one is required
  'sni-address-mismatch', // an IP-literal CONNECT whose TLS server name does not resolve to that IP
  'not-tls', // plain bytes in a tunnel on a TLS port
  'bad-client-hello', // a malformed, oversized or late ClientHello
  'request-not-allowed', // the host is allowed, but not this method or path
  'bad-path', // a path that could mean different things to different servers
  'host-mismatch', // inside an opened tunnel, a Host header that is not the tunnel's server name
] as const
export type Reason = (typeof REASONS)[number]

export type ErrorType = 'http_request_denied' | 'destination_ip_prohibited'

export interface Decision {
  readonly verdict: 'allow' | 'deny'
  readonly reason: Reason
  readonly rule: Rule | undefined
  /** true when report mode let through what enforce mode would deny */
  readonly wouldDeny: boolean
  /** human explanation of the verdict */
  readonly detail: string
  /** rules.json entry that would allow the request, when one exists */
  readonly suggestion: string | undefined
  /** the address the verdict is about (IP targets and guard denials) */
  readonly address: Ip | undefined
  /** addresses cleared to dial, in order; empty on deny */
  readonly dial: readonly Ip[]
}

/** A name allowed by the rules (or let through by report mode): it must now be resolved and guarded. */
export interface Pending {
  readonly verdict: 'resolve'
  readonly rule: Rule | undefined
  readonly wouldDeny: boolean
  /** what denial report mode waived, carried into the final decision's detail */
  readonly waived: Decision | undefined
}

export interface SelfAddress {
  readonly ip: Ip
  readonly port: number
}

export interface TlsSettings {
  /** CONNECT ports whose tunnels must start with a TLS ClientHello that names the target */
  readonly ports: readonly PortRange[]
  readonly requireSni: boolean
  readonly allowNonTls: boolean
  readonly helloTimeoutMs: number
  /** PEM files (relative to the rules file) trusted for origins reached through opened tunnels */
  readonly upstreamCaFiles: readonly string[]
}

export interface DecisionContext {
  readonly mode: Mode
  /** the proxy's own listening addresses: never a destination */
  readonly self: readonly SelfAddress[]
  readonly tls: TlsSettings
}

export function denyErrorType(reason: Reason): ErrorType {
  return reason === 'address-prohibited' || reason === 'self-connection' ? 'destination_ip_prohibited' : 'http_request_denied'
}

function decision(fields: Partial<Decision> & Pick<Decision, 'verdict' | 'reason' | 'detail'>): Decision {
  return { rule: undefined, wouldDeny: false, suggestion: undefined, address: undefined, dial: [], ...fields }
}

export function ruleLabel(rule: Rule): string {
  return `${rule.list}[${rule.index}] ${rule.text}`
}

function quote(text: string): string {
  return JSON.stringify(text)
}

function ipEntry(ip: Ip, port: number): string {
  const text = formatIp(ip)
  return quote(`${ip.family === 6 ? `[${text}]` : text}:${port}`)
}

/** In report mode a rule denial becomes an allow that remembers it would have been denied. */
function waive(denied: Decision, ctx: DecisionContext, dial: readonly Ip[]): Decision {
  if (ctx.mode !== 'report') return denied
  return { ...denied, verdict: 'allow', wouldDeny: true, dial, detail: `report mode: would deny: ${denied.detail}` }
}

function isSelf(ctx: DecisionContext, ip: Ip, port: number, loopback: boolean): boolean {
  // aliases of a listener: connect() to 0.0.0.0 or :: lands on the local host, and a listener on
  // the unspecified address also answers on every loopback address (all of 127/8, ::1)
  return ctx.self.some(
    (s) => s.port === port && ((s.ip.family === ip.family && s.ip.value === ip.value) || ip.value === 0n || (s.ip.value === 0n && loopback)),
  )
}

/**
 * Guards one address: self-connection and special-purpose ranges are refused unless an IP
 * rule that names special space covers it, or (for private ranges) the name rule says private.
 */
function guardAddress(policy: Policy, ctx: DecisionContext, ip: Ip, port: number, nameRule: Rule | undefined, name: string | undefined): Decision | undefined {
  const special = classifyIp(ip) // once per address: every allowed request passes here
  if (isSelf(ctx, ip, port, special?.kind === 'loopback')) {
    return decision({ verdict: 'deny', reason: 'self-connection', address: ip, detail: `${formatIp(ip)}:${port} is proxy-gate's own listener` })
  }
  if (!special) return undefined
  // any covering rule that names special space vouches, whatever its order among broader rules
  const vouched = ipMatches(policy.allowIndex, ip, port).some((r) => r.pattern.kind === 'cidr' && r.pattern.special !== undefined)
  if (vouched) return undefined
  if (nameRule?.private && PRIVATE_KINDS.has(special.kind)) return undefined
  const via = name === undefined ? '' : `${name} resolves to `
  const where = `${formatIp(ip)}:${port}`
  const suggestion =
    name !== undefined && PRIVATE_KINDS.has(special.kind)
      ? JSON.stringify({ host: name, ports: [port], private: true })
      : ipEntry(ip, port)
  return decision({ verdict: 'deny', reason: 'address-prohibited', address: ip, suggestion, detail: `${via}${where}, a ${special.label} address, which is refused unless a rule names it` })
}

function decideIp(policy: Policy, ctx: DecisionContext, target: Target, ip: Ip): Decision {
  const denyRule = matchIp(policy, 'deny', ip, target.port)
  const where = formatTarget(target)
  const guard = guardAddress(policy, ctx, ip, target.port, undefined, undefined)
  if (guard) return guard
  if (denyRule) {
    return waive(decision({ verdict: 'deny', reason: 'deny-rule', rule: denyRule, address: ip, detail: `${where} matches deny rule ${ruleLabel(denyRule)}` }), ctx, [ip])
  }
  const allowRule = matchIp(policy, 'allow', ip, target.port)
  if (allowRule) return decision({ verdict: 'allow', reason: 'allow-rule', rule: allowRule, address: ip, dial: [ip], detail: `allowed by ${ruleLabel(allowRule)}` })
  return waive(
    decision({ verdict: 'deny', reason: 'no-rule', address: ip, suggestion: ipEntry(ip, target.port), detail: `no allow rule matches ${where} (a host-name rule never matches an IP address)` }),
    ctx,
    [ip],
  )
}

/**
 * First step for every request. IP targets get their final decision; names are decided on the
 * rules alone (no DNS yet) and, when allowed, come back as Pending for resolution.
 */
export function decideTarget(policy: Policy, ctx: DecisionContext, target: Target): Decision | Pending {
  if (target.host.kind === 'ip') return decideIp(policy, ctx, target, target.host.ip)
  const name = target.host.name
  const where = formatTarget(target)
  const denyRule = matchName(policy, 'deny', name, target.port)
  const allowRule = matchName(policy, 'allow', name, target.port)
  let denied: Decision | undefined
  if (denyRule) {
    denied = decision({ verdict: 'deny', reason: 'deny-rule', rule: denyRule, detail: `${where} matches deny rule ${ruleLabel(denyRule)}` })
  } else if (!allowRule) {
    const otherPorts = nameCandidates(policy.allowIndex, name)[0]
    const hint = otherPorts ? ` (${ruleLabel(otherPorts)} allows ${hostText(target.host)} on other ports)` : ''
    denied = decision({ verdict: 'deny', reason: 'no-rule', suggestion: quote(where), detail: `no allow rule matches ${where}${hint}` })
  }
  if (denied && ctx.mode !== 'report') return denied
  return { verdict: 'resolve', rule: denied ? undefined : allowRule, wouldDeny: denied !== undefined, waived: denied }
}

/** Second step for names: every resolved address must pass deny rules and the address guard. */
export function decideAddresses(policy: Policy, ctx: DecisionContext, target: Target, pending: Pending, addresses: readonly Ip[]): Decision {
  const name = hostText(target.host)
  for (const ip of addresses) {
    const guard = guardAddress(policy, ctx, ip, target.port, pending.rule, name)
    if (guard) return guard
    const denyRule = matchIp(policy, 'deny', ip, target.port)
    if (denyRule) {
      const denied = decision({ verdict: 'deny', reason: 'deny-rule', rule: denyRule, address: ip, detail: `${name} resolves to ${formatIp(ip)}, which matches deny rule ${ruleLabel(denyRule)}` })
      return waive(denied, ctx, addresses)
    }
  }
  if (pending.waived) return waive(pending.waived, ctx, addresses)
  const rule = pending.rule as Rule
  return decision({ verdict: 'allow', reason: 'allow-rule', rule, dial: addresses, detail: `allowed by ${ruleLabel(rule)}` })
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

// ---- TLS ClientHello checks (CONNECT on TLS ports) ----------------------------------------

/** What the proxy saw at the start of a tunnel on a TLS port. */
export type HelloView =
  | { readonly kind: 'hello'; readonly sni: string | undefined }
  | { readonly kind: 'not-tls' }
  | { readonly kind: 'malformed'; readonly reason: string }
  | { readonly kind: 'timeout' }

/** The SNI says which name to admit an IP-literal tunnel under. */
export interface SniAdmission {
  readonly verdict: 'admit-sni'
  readonly target: Target
  readonly sni: string
}

export function isTlsPort(ctx: DecisionContext, port: number): boolean {
  return ctx.tls.ports.some(([lo, hi]) => port >= lo && port <= hi)
}

/**
 * An IP-literal CONNECT that no rule allows, on a TLS port, is not refused yet: Docker Desktop
 * sends transparently captured HTTPS this way, and the ClientHello's server name can decide it.
 */
export function defersToSni(ctx: DecisionContext, target: Target, decision: Decision): boolean {
  return decision.verdict === 'deny' && decision.reason === 'no-rule' && target.host.kind === 'ip' && isTlsPort(ctx, target.port)
}

function helloDenial(ctx: DecisionContext, admitted: Decision, reason: Reason, detail: string): Decision {
  return waive(decision({ verdict: 'deny', reason, rule: admitted.rule, address: admitted.address, detail }), ctx, admitted.dial)
}

/** A usable server name: a valid host name (an IP address is not a valid SNI). */
function sniName(sni: string | undefined): string | undefined {
  if (sni === undefined) return undefined
  const name = normaliseName(sni)
  return name.ok ? name.value : undefined
}

/**
 * The second look at a tunnel on a TLS port, after the 200: the ClientHello must name the host
 * that was allowed. Deferred IP-literal tunnels come back as SniAdmission, to be admitted under
 * the server name and confirmed with confirmSniAddress.
 */
export function checkHello(ctx: DecisionContext, target: Target, admitted: Decision, hello: HelloView): Decision | SniAdmission {
  const deferred = admitted.verdict === 'deny'
  const where = formatTarget(target)
  if (hello.kind === 'not-tls') {
    if (ctx.tls.allowNonTls && !deferred) return admitted
    return helloDenial(ctx, admitted, 'not-tls', `the client sent non-TLS bytes into a tunnel to ${where}, a TLS port`)
  }
  if (hello.kind === 'timeout') return helloDenial(ctx, admitted, 'bad-client-hello', `no TLS ClientHello within ${ctx.tls.helloTimeoutMs} ms in the tunnel to ${where}`)
  if (hello.kind === 'malformed') return helloDenial(ctx, admitted, 'bad-client-hello', `malformed TLS ClientHello in the tunnel to ${where}: ${hello.reason}`)
  const name = sniName(hello.sni)
  if (target.host.kind === 'ip') {
    if (!deferred) return admitted
    if (name === undefined) return helloDenial(ctx, admitted, 'sni-missing', `no allow rule matches ${where} and the ClientHello names no host to decide by`)
    return { verdict: 'admit-sni', target: { host: { kind: 'name', name }, port: target.port }, sni: name }
  }
  if (name === undefined) {
    if (!ctx.tls.requireSni) return admitted
    return helloDenial(ctx, admitted, 'sni-missing', `the ClientHello for ${where} names no server (tls.requireSni)`)
  }
  if (name === target.host.name) return admitted
  return helloDenial(ctx, admitted, 'sni-mismatch', `the TLS server name ${name} is not the CONNECT host ${target.host.name} (domain fronting)`)
}

/** An IP-literal tunnel admitted by its server name: the IP must be one the name resolved to. */
export function confirmSniAddress(ctx: DecisionContext, target: Target, byName: Decision, sni: string): Decision {
  if (byName.verdict === 'deny' || target.host.kind !== 'ip') return byName
  const ip = target.host.ip
  if (byName.dial.some((a) => a.family === ip.family && a.value === ip.value)) {
    return { ...byName, address: ip, dial: [ip], detail: `${byName.detail} (TLS server name ${sni} for ${formatTarget(target)})` }
  }
  return helloDenial(ctx, byName, 'sni-address-mismatch', `${formatTarget(target)} is not an address of ${sni}, the TLS server name`)
}

// ---- requests the proxy can see (plain HTTP, intercepted tunnels) -----------------------

function hasRequestLimits(rule: Rule): boolean {
  return rule.methods !== undefined || rule.paths !== undefined
}

function allowCandidates(policy: Policy, target: Target): Rule[] {
  if (target.host.kind === 'ip') return ipMatches(policy.allowIndex, target.host.ip, target.port)
  return nameCandidates(policy.allowIndex, target.host.name).filter((r) => portMatches(r, target.port))
}

/** Allow rules that limit methods or paths: they need the local CA to open TLS tunnels. */
export function rulesWithRequestLimits(policy: Policy): Rule[] {
  return policy.allow.filter(hasRequestLimits)
}

/** True when every allow rule for this host:port limits methods or paths: its tunnels must be opened. */
export function needsInterception(policy: Policy, target: Target): boolean {
  if (!policy.limitsRequests) return false
  const rules = allowCandidates(policy, target)
  return rules.length > 0 && rules.every(hasRequestLimits)
}

function requestAllowed(rule: Rule, method: string, path: string): boolean {
  return (rule.methods === undefined || rule.methods.includes(method)) && (rule.paths === undefined || rule.paths.some((g) => g.regex.test(path)))
}

/**
 * Decides one request on a host the rules allow: a rule without methods/paths admits anything;
 * otherwise some rule must admit this method and (normalised) path.
 */
export function decideRequest(policy: Policy, ctx: DecisionContext, target: Target, method: string, path: Result<string>): Decision {
  if (!policy.limitsRequests) return decision({ verdict: 'allow', reason: 'allow-rule', detail: `no request limits for ${formatTarget(target)}` })
  const rules = allowCandidates(policy, target).sort((a, b) => a.index - b.index)
  const open = rules.find((r) => !hasRequestLimits(r))
  const where = formatTarget(target)
  if (open || rules.length === 0) return decision({ verdict: 'allow', reason: 'allow-rule', rule: open, detail: open ? `allowed by ${ruleLabel(open)}` : `no request limits for ${where}` })
  if (!path.ok) return waive(decision({ verdict: 'deny', reason: 'bad-path', detail: `${method} on ${where}: ${path.error}` }), ctx, [])
  const rule = rules.find((r) => requestAllowed(r, method, path.value))
  if (rule) return decision({ verdict: 'allow', reason: 'allow-rule', rule, detail: `${method} ${path.value} allowed by ${ruleLabel(rule)}` })
  const host = hostText(target.host)
  const suggestion = JSON.stringify({ host, ports: [target.port], methods: [method], paths: [path.value] })
  const limits = rules.map((r) => `${ruleLabel(r)}`).join('; ')
  return waive(decision({ verdict: 'deny', reason: 'request-not-allowed', rule: rules[0], suggestion, detail: `${method} ${path.value} is not allowed on ${where} (the rules for it: ${limits})` }), ctx, [])
}

/** The host-level decision narrowed by the request-level one (addresses come from the host's). */
/**
 * A forwarded or upgraded request's decision: the host decision, narrowed by methods and paths
 * only where a rule limits them (the path is normalised only then: most policies have none).
 */
export function decideForwarded(policy: Policy, ctx: DecisionContext, host: Decision, target: Target, method: string, path: string): Decision {
  if (host.verdict !== 'allow' || !policy.limitsRequests) return host
  return withRequest(host, decideRequest(policy, ctx, target, method, normalisePath(path)))
}

export function withRequest(host: Decision, request: Decision): Decision {
  if (host.verdict === 'deny') return host
  if (request.verdict === 'deny') return request
  return request.wouldDeny || hasRequestLimitsOf(request.rule) ? { ...request, dial: host.dial, address: host.address, wouldDeny: request.wouldDeny || host.wouldDeny } : host
}

function hasRequestLimitsOf(rule: Rule | undefined): boolean {
  return rule !== undefined && hasRequestLimits(rule)
}

/** Inside an opened tunnel the Host header must name the tunnel's host (and port, if given). */
export function checkInnerHost(ctx: DecisionContext, target: Target, header: string | undefined): Decision | undefined {
  const colon = header?.lastIndexOf(':') ?? -1
  const hasPort = header !== undefined && colon > header.lastIndexOf(']')
  const name = header === undefined ? undefined : normaliseName(hasPort ? header.slice(0, colon) : header)
  const portOk = !hasPort || header?.slice(colon + 1) === String(target.port)
  if (name?.ok && portOk && name.value === hostText(target.host)) return undefined
  const shown = header === undefined ? 'no Host header' : `Host ${JSON.stringify(header.slice(0, 100))}`
  return waive(decision({ verdict: 'deny', reason: 'host-mismatch', detail: `${shown} in a tunnel to ${formatTarget(target)}: requests must name the tunnel's host` }), ctx, [])
}
