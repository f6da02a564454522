// The egress decision: a value (verdict, reason, matched rule, suggested fix) made from the
// compiled rules for a target, its resolved addresses, its TLS ClientHello and its requests.
// Every wire path consumes it. Pure: no files, no DNS, no sockets.
import { PRIVATE_KINDS, classifyIp, formatIp, formatIpPort, type Ip } from './ip.js'
import { allowCandidates, allowRuleOnAnyPort, coversEveryPort, hasRequestLimits, matchIp, matchName, matchNameOnAnyPort, ruleLabel, specialRuleCovers, type Mode, type Policy, type PortRange, type Rule } from './rules.js'
import { bindsAny, type SecretBinding } from './secrets.js'
import { requestSuggestion } from './suggest.js'
import { formatTarget, hostText, normaliseName, normalisePath, type Result, type Target } from './target.js'

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
  'secret-misplaced', // a secret's placeholder on its way somewhere its value may not go
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
  /** the secrets (by name, never a value) whose placeholders the request carried */
  readonly secret: string | undefined
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

/** Every decision built with the same fields in the same order: one shape for all that read them (a spread made several). */
function decision(fields: Partial<Decision> & Pick<Decision, 'verdict' | 'reason' | 'detail'>): Decision {
  const { verdict, reason, rule, wouldDeny = false, detail, suggestion, address, dial = NO_ADDRESSES, secret } = fields
  return { verdict, reason, rule, wouldDeny, detail, suggestion, address, dial, secret }
}

const NO_ADDRESSES: readonly Ip[] = []

function quote(text: string): string {
  return JSON.stringify(text)
}

function ipEntry(ip: Ip, port: number): string {
  return quote(formatIpPort(ip, port))
}

/** In report mode a rule denial becomes an allow that remembers it would have been denied. */
function waive(denied: Decision, ctx: DecisionContext, dial: readonly Ip[]): Decision {
  if (ctx.mode !== 'report') return denied
  return decision({ ...denied, verdict: 'allow', wouldDeny: true, dial, detail: `report mode: would deny: ${denied.detail}` })
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
    return decision({ verdict: 'deny', reason: 'self-connection', address: ip, detail: `${formatIpPort(ip, port)} is proxy-gate's own listener` })
  }
  if (!special) return undefined
  if (specialRuleCovers(policy, ip, port, special)) return undefined
  if (nameRule?.private && PRIVATE_KINDS.has(special.kind)) return undefined
  const via = name === undefined ? '' : `${name} resolves to `
  const where = formatIpPort(ip, port)
  const suggestion =
    name !== undefined && PRIVATE_KINDS.has(special.kind)
      ? JSON.stringify({ host: name, ports: [port], private: true })
      : ipEntry(ip, port)
  const unless = special.kind === 'metadata' ? 'a rule names that exact address (a range that holds it is not enough)' : 'a rule names it'
  return decision({ verdict: 'deny', reason: 'address-prohibited', address: ip, suggestion, detail: `${via}${where}, a ${special.label} address, which is refused unless ${unless}` })
}

function decideIp(policy: Policy, ctx: DecisionContext, target: Target, ip: Ip): Decision {
  const denyRule = matchIp(policy, 'deny', ip, target.port)
  const guard = guardAddress(policy, ctx, ip, target.port, undefined, undefined)
  if (guard) return guard
  if (denyRule) {
    return waive(decision({ verdict: 'deny', reason: 'deny-rule', rule: denyRule, address: ip, detail: `${formatTarget(target)} matches deny rule ${ruleLabel(denyRule)}` }), ctx, [ip])
  }
  const allowRule = matchIp(policy, 'allow', ip, target.port)
  if (allowRule) return decision({ verdict: 'allow', reason: 'allow-rule', rule: allowRule, address: ip, dial: [ip], detail: `allowed by ${ruleLabel(allowRule)}` })
  return waive(
    decision({ verdict: 'deny', reason: 'no-rule', address: ip, suggestion: ipEntry(ip, target.port), detail: `no allow rule matches ${formatTarget(target)} (a host-name rule never matches an IP address)` }),
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
    const otherPorts = allowRuleOnAnyPort(policy, name)
    const hint = otherPorts ? ` (${ruleLabel(otherPorts)} allows ${hostText(target.host)} on other ports)` : ''
    denied = decision({ verdict: 'deny', reason: 'no-rule', suggestion: quote(where), detail: `no allow rule matches ${where}${hint}` })
  }
  if (denied && ctx.mode !== 'report') return denied
  return { verdict: 'resolve', rule: denied ? undefined : allowRule, wouldDeny: denied !== undefined, waived: denied }
}

/**
 * A DNS question for a name (the sandbox's DNS server): answered when some allow rule matches the
 * name on some port and no deny rule refuses it on every port. No addresses are involved: the
 * answer is proxy-gate's own address, and each connection is decided in full when it arrives.
 */
export function decideName(policy: Policy, ctx: DecisionContext, name: string): Decision {
  const denyRule = matchNameOnAnyPort(policy, 'deny', name)
  const allowRule = matchNameOnAnyPort(policy, 'allow', name)
  if (denyRule && coversEveryPort(denyRule)) {
    return waive(decision({ verdict: 'deny', reason: 'deny-rule', rule: denyRule, detail: `${name} matches deny rule ${ruleLabel(denyRule)} on every port` }), ctx, [])
  }
  if (!allowRule) return waive(decision({ verdict: 'deny', reason: 'no-rule', suggestion: quote(`${name}:443`), detail: `no allow rule matches ${name} on any port` }), ctx, [])
  return decision({ verdict: 'allow', reason: 'allow-rule', rule: allowRule, detail: `${name} is allowed by ${ruleLabel(allowRule)}` })
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

// ---- TLS ClientHello checks (CONNECT tunnels, transparent TLS listeners) -------------------

/** What the proxy saw at the start of a tunnel (on a port not listed as TLS: of one whose first bytes may open a ClientHello). */
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

/**
 * A later ClientHello in a tunnel (TLS 1.3 sends one after a HelloRetryRequest, and servers read
 * its server name anew) must name exactly the server the first one named.
 */
export function sameServer(first: HelloView, later: HelloView): boolean {
  return first.kind === 'hello' && later.kind === 'hello' && later.sni?.toLowerCase() === first.sni?.toLowerCase()
}

/** A usable server name: a valid host name (an IP address is not a valid SNI). */
function sniName(sni: string | undefined): string | undefined {
  if (sni === undefined) return undefined
  const name = normaliseName(sni)
  return name.ok ? name.value : undefined
}

/**
 * The second look at a tunnel, after the 200 (on ports not listed as TLS: when its first bytes may
 * open a ClientHello): the ClientHello must name the host that was allowed, and one that could not be
 * read is refused on every port. Deferred IP-literal tunnels come back as SniAdmission, to be admitted under
 * the server name and confirmed with confirmSniAddress.
 */
export function checkHello(ctx: DecisionContext, target: Target, admitted: Decision, hello: HelloView): Decision | SniAdmission {
  const deferred = admitted.verdict === 'deny'
  const where = formatTarget(target)
  if (hello.kind === 'not-tls') {
    // bytes no TLS server reads as a ClientHello: what ports not listed as TLS are for
    if (!deferred && (ctx.tls.allowNonTls || !isTlsPort(ctx, target.port))) return admitted
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
    // the server still reads that name (an IP address, a port, an empty label): none to hold it against, so no tunnel
    if (hello.sni !== undefined) return helloDenial(ctx, admitted, 'sni-missing', `the ClientHello for ${where} names ${hello.sni}, which is not a host name`)
    if (!ctx.tls.requireSni) return admitted
    return helloDenial(ctx, admitted, 'sni-missing', `the ClientHello for ${where} names no server (tls.requireSni)`)
  }
  if (name === target.host.name) return admitted
  return helloDenial(ctx, admitted, 'sni-mismatch', `the TLS server name ${name} is not the CONNECT host ${target.host.name} (domain fronting)`)
}

/**
 * A connection to a transparent TLS listener (sandbox): the client dialled proxy-gate itself, so
 * the ClientHello's server name is the only destination there is, on the listener's port. Without
 * a usable one there is nothing to dial: these denials hold in report mode too.
 */
export function checkTransparentHello(ctx: DecisionContext, listener: string, port: number, hello: HelloView): Decision | SniAdmission {
  const refuse = (reason: Reason, detail: string): Decision => decision({ verdict: 'deny', reason, detail })
  if (hello.kind === 'not-tls') return refuse('not-tls', `the client sent non-TLS bytes to ${listener}, a transparent TLS listener`)
  if (hello.kind === 'timeout') return refuse('bad-client-hello', `no TLS ClientHello within ${ctx.tls.helloTimeoutMs} ms on ${listener}`)
  if (hello.kind === 'malformed') return refuse('bad-client-hello', `malformed TLS ClientHello on ${listener}: ${hello.reason}`)
  const name = sniName(hello.sni)
  if (name === undefined) return refuse('sni-missing', `the ClientHello on ${listener} names no server, the only way to tell where it goes`)
  return { verdict: 'admit-sni', target: { host: { kind: 'name', name }, port }, sni: name }
}

/** An IP-literal tunnel admitted by its server name: the IP must be one the name resolved to. */
export function confirmSniAddress(ctx: DecisionContext, target: Target, byName: Decision, sni: string): Decision {
  if (byName.verdict === 'deny' || target.host.kind !== 'ip') return byName
  const ip = target.host.ip
  if (byName.dial.some((a) => a.family === ip.family && a.value === ip.value)) {
    return decision({ ...byName, address: ip, dial: [ip], detail: `${byName.detail} (TLS server name ${sni} for ${formatTarget(target)})` })
  }
  return helloDenial(ctx, byName, 'sni-address-mismatch', `${formatTarget(target)} is not an address of ${sni}, the TLS server name`)
}

// ---- requests the proxy can see (plain HTTP, intercepted tunnels) -----------------------

/**
 * True when every allow rule for this host:port limits methods or paths, or a secret's value may
 * go there (its placeholder is replaced inside): its tunnels must be opened.
 */
export function needsInterception(policy: Policy, target: Target): boolean {
  if (bindsAny(policy.secrets, target)) return true
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
  const suggestion = requestSuggestion(hostText(target.host), target.port, method, path.value)
  const limits = rules.map((r) => ruleLabel(r)).join('; ')
  const unsuggested = suggestion === undefined ? '; no rule can allow exactly this request (a path glob reads every "*" as a wildcard, even as %2A)' : ''
  return waive(decision({ verdict: 'deny', reason: 'request-not-allowed', rule: rules[0], suggestion, detail: `${method} ${path.value} is not allowed on ${where} (the rules for it: ${limits})${unsuggested}` }), ctx, [])
}

/**
 * A tunnel whose bytes are relayed unseen, to a host whose allow rules now all limit methods or
 * paths (a reload added them): nothing on it can be held to those limits.
 */
export function unseenRequests(ctx: DecisionContext, host: Decision, target: Target): Decision {
  const where = formatTarget(target)
  const detail = `the rules now limit methods or paths on ${where}, and this tunnel's requests pass unseen: a new tunnel is opened and each request checked`
  return waive(decision({ verdict: 'deny', reason: 'request-not-allowed', rule: host.rule, address: host.address, detail }), ctx, host.dial)
}

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
  return request.wouldDeny || hasRequestLimitsOf(request.rule) ? decision({ ...request, dial: host.dial, address: host.address, wouldDeny: request.wouldDeny || host.wouldDeny }) : host
}

function hasRequestLimitsOf(rule: Rule | undefined): boolean {
  return rule !== undefined && hasRequestLimits(rule)
}

/** Inside an opened tunnel the Host header must name the tunnel's host (and port, if given). */
export function checkInnerHost(ctx: DecisionContext, target: Target, header: string | undefined): Decision | undefined {
  const colon = header?.lastIndexOf(':') ?? -1
  const hasPort = header !== undefined && colon > header.lastIndexOf(']')
  const name = header === undefined ? undefined : normaliseName(hasPort ? header.slice(0, colon) : header)
  const portOk = !hasPort || header.slice(colon + 1) === String(target.port)
  if (name?.ok && portOk && name.value === hostText(target.host)) return undefined
  const shown = header === undefined ? 'no Host header' : `Host ${JSON.stringify(header.slice(0, 100))}`
  return waive(decision({ verdict: 'deny', reason: 'host-mismatch', detail: `${shown} in a tunnel to ${formatTarget(target)}: requests must name the tunnel's host` }), ctx, [])
}

/**
 * A request that carries a secret's placeholder toward a destination its value may not go to (`where`
 * says what carried it, `because` why it may not, when not the destination): refused, and named, so
 * the attempt is seen. Report mode lets it through unchanged.
 */
export function misplacedSecret(ctx: DecisionContext, binding: SecretBinding, target: Target | undefined, where: string, admitted?: Decision, because?: string): Decision {
  const to = target === undefined ? 'anywhere else' : formatTarget(target)
  const bound = binding.hosts.map((h) => h.text).join(', ')
  const detail = `${where} carries the placeholder of secret ${binding.name}, whose value goes only to ${bound}, ${because ?? `not to ${to}`}`
  return waive(decision({ verdict: 'deny', reason: 'secret-misplaced', rule: admitted?.rule, address: admitted?.address, detail, secret: binding.name }), ctx, admitted?.dial ?? [])
}

/** An allowed decision that names the secrets whose values the request now carries. */
export function withSecrets(allowed: Decision, names: readonly string[]): Decision {
  return names.length === 0 ? allowed : decision({ ...allowed, secret: names.join(',') })
}
