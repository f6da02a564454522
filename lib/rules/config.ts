// rules.json as a value: validates the whole file (listen, mode, limits, dns, bypass) and hands
// allow/deny to the policy. Pure: the caller reads the file.
import { parseAuth, type AuthSettings } from './auth.js'
import { MAX_TIMER_MS, wholeNumberWithin, type Bound } from './bounds.js'
import { hostWarnings } from './host-warnings.js'
import { parseSandbox, type SandboxSettings } from './sandbox.js'
import { parseSecrets, type SecretSpec, type SecretValues } from './secrets.js'
import { parseSocks, type SocksSettings } from './socks.js'
import { parseClients, parsePolicies, type PolicySet } from '../policy/clients.js'
import { formatIp, parseIp, type Ip } from '../policy/ip.js'
import { compilePolicy, describePattern, entryText, metadataWarnings, parseBypass, parsePorts, type HostPattern, type Mode, type Policy, type RuleError } from '../policy/rules.js'
import type { TlsSettings } from '../policy/decide.js'
import { formatTarget, hostText, parseAuthority, type Result, type Target } from '../policy/target.js'

export interface Limits {
  /** time for a client to send a complete request head */
  readonly headerTimeoutMs: number
  /** time for a client to send a whole request, body included */
  readonly requestTimeoutMs: number
  readonly keepAliveTimeoutMs: number
  /** TCP connect to the upstream */
  readonly connectTimeoutMs: number
  /** time to wait for the upstream's response head on plain HTTP */
  readonly upstreamHeadersTimeoutMs: number
  readonly tunnelIdleTimeoutMs: number
  readonly tunnelMaxLifetimeMs: number
  readonly maxConnections: number
  readonly maxHeaderBytes: number
  readonly maxHeaderCount: number
  readonly shutdownGraceMs: number
  /** after SIGTERM, how long to keep accepting while not ready, so load balancers move away first */
  readonly drainDelayMs: number
}

export const DEFAULT_LIMITS: Limits = {
  headerTimeoutMs: 10_000,
  requestTimeoutMs: 300_000,
  keepAliveTimeoutMs: 5_000,
  connectTimeoutMs: 10_000,
  upstreamHeadersTimeoutMs: 300_000,
  tunnelIdleTimeoutMs: 300_000,
  tunnelMaxLifetimeMs: 86_400_000,
  maxConnections: 4_096,
  maxHeaderBytes: 16_384,
  maxHeaderCount: 200,
  shutdownGraceMs: 10_000,
  drainDelayMs: 0,
}

/** Timeouts are timers (at most MAX_TIMER_MS); the shorter ones are capped where a longer wait means something is wrong. */
const LIMIT_BOUNDS: Record<keyof Limits, Bound> = {
  headerTimeoutMs: { min: 100, max: 600_000 },
  requestTimeoutMs: { min: 100, max: MAX_TIMER_MS },
  keepAliveTimeoutMs: { min: 100, max: 3_600_000 },
  connectTimeoutMs: { min: 100, max: 600_000 },
  upstreamHeadersTimeoutMs: { min: 100, max: MAX_TIMER_MS },
  tunnelIdleTimeoutMs: { min: 100, max: MAX_TIMER_MS },
  tunnelMaxLifetimeMs: { min: 100, max: MAX_TIMER_MS },
  maxConnections: { min: 1, max: 1_000_000 },
  maxHeaderBytes: { min: 1_024, max: 1_048_576 },
  maxHeaderCount: { min: 8, max: 10_000 },
  shutdownGraceMs: { min: 100, max: 3_600_000 },
  drainDelayMs: { min: 0, max: 3_600_000 },
}

export interface DnsServer {
  readonly ip: Ip
  readonly port: number
}

export interface DnsConfig {
  /** empty: the system resolver configuration */
  readonly servers: readonly DnsServer[]
  readonly timeoutMs: number
  /** most names kept in the answer cache */
  readonly cacheSize: number
}

export interface Listen {
  readonly host: string
  readonly port: number
}

export interface Config {
  readonly listen: Listen
  readonly mode: Mode
  readonly policy: Policy
  readonly bypass: readonly HostPattern[]
  readonly dns: DnsConfig
  readonly limits: Limits
  readonly tls: TlsSettings
  /** the top-level policy (also in `policy`), the named ones, and which clients use which */
  readonly policies: PolicySet
  readonly auth: AuthSettings | undefined
  /** the parent proxy allowed traffic leaves through; undefined: straight to the destination */
  readonly upstream: UpstreamProxy | undefined
  /** destinations that skip the parent proxy (NO_PROXY-style host patterns) */
  readonly upstreamBypass: readonly HostPattern[]
  /** the sandbox's DNS server and transparent listeners; undefined: none */
  readonly sandbox: SandboxSettings | undefined
  /** where each secret's value is read from and where it may go (the values themselves: lib/secrets/) */
  readonly secrets: readonly SecretSpec[]
  /** their values, once read (lib/secrets/): the policies then hold the bindings */
  readonly secretValues?: SecretValues
  /** the SOCKS5 listener; undefined: none */
  readonly socks: SocksSettings | undefined
}

const DEFAULT_LISTEN: Listen = { host: '127.0.0.1', port: 3128 }
const TOP_KEYS = ['$schema', 'listen', 'mode', 'allow', 'deny', 'bypass', 'dns', 'limits', 'tls', 'policies', 'clients', 'auth', 'upstream', 'upstreamBypass', 'sandbox', 'secrets', 'socks']
const TLS_KEYS = ['ports', 'requireSni', 'allowNonTls', 'helloTimeoutMs', 'upstreamCaFiles']

export const DEFAULT_TLS: TlsSettings = { ports: [[443, 443]], requireSni: true, allowNonTls: false, helloTimeoutMs: 10_000, upstreamCaFiles: [] }

function parseTls(errors: Errors, value: unknown): TlsSettings {
  if (value === undefined) return DEFAULT_TLS
  if (!isObject(value)) {
    err(errors, 'tls', value, '"tls" must be an object')
    return DEFAULT_TLS
  }
  unknownKeys(errors, 'tls', value, TLS_KEYS)
  const tls = { ...DEFAULT_TLS }
  if (value.ports !== undefined) {
    const ports = typeof value.ports === 'string' ? parsePorts(value.ports) : Array.isArray(value.ports) ? parsePorts(value.ports.join(',')) : undefined
    if (ports?.ok) tls.ports = ports.value
    else err(errors, 'tls.ports', value.ports, ports ? ports.error : 'must be a list of ports or a string like "443,8443"')
  }
  for (const key of ['requireSni', 'allowNonTls'] as const) {
    if (value[key] === undefined) continue
    if (typeof value[key] === 'boolean') tls[key] = value[key]
    else err(errors, `tls.${key}`, value[key], 'must be true or false')
  }
  tls.helloTimeoutMs = wholeNumberWithin(errors, 'tls.helloTimeoutMs', value.helloTimeoutMs, DEFAULT_TLS.helloTimeoutMs, { min: 100, max: 300_000 })
  if (value.upstreamCaFiles !== undefined) {
    const files = value.upstreamCaFiles
    if (Array.isArray(files) && files.every((f) => typeof f === 'string' && f !== '')) tls.upstreamCaFiles = files as string[]
    else err(errors, 'tls.upstreamCaFiles', files, 'must be a list of PEM file paths')
  }
  return tls
}
const DNS_KEYS = ['servers', 'timeoutMs', 'cacheSize']

type Errors = RuleError[]

function err(errors: Errors, path: string, value: unknown, message: string): void {
  errors.push({ path, entry: entryText(value), message })
}

/** The parent proxy from "upstream". Its credentials live only here, out of JSON and inspect output. */
export class UpstreamProxy {
  readonly #authorization: string | undefined
  constructor(
    /** where the parent listens (a name or an IP) */
    readonly target: Target,
    authorization: string | undefined,
  ) {
    this.#authorization = authorization
  }
  /** `host:port` (IPv6 in brackets): the next hop as logs and Proxy-Status name it */
  get hop(): string {
    return formatTarget(this.target)
  }
  /** the host to connect to: a name or an IP literal without brackets */
  get host(): string {
    return hostText(this.target.host)
  }
  /** the URL as it may be shown: credentials replaced by `[redacted]` */
  get display(): string {
    return `http://${this.#authorization === undefined ? '' : '[redacted]@'}${this.hop}`
  }
  /** the Proxy-Authorization value to send to the parent, if the URL has credentials */
  authorization(): string | undefined {
    return this.#authorization
  }
  /** the same parent with the same credentials */
  sameAs(other: UpstreamProxy | undefined): boolean {
    return other !== undefined && other.hop === this.hop && other.authorization() === this.#authorization
  }
  toJSON(): string {
    return this.display
  }
}

function decodeUserinfo(text: string): string | undefined {
  try {
    const decoded = decodeURIComponent(text)
    // eslint-disable-next-line no-control-regex
    return /[\x00-\x1f\x7f]/.test(decoded) ? undefined : decoded
  } catch {
    return undefined
  }
}

/** `http://[user[:password]@]host:port[/]`: an HTTP parent proxy, nothing else (no path, query or other scheme). */
export function parseUpstream(value: unknown): Result<UpstreamProxy> {
  const fail = (error: string): Result<UpstreamProxy> => ({ ok: false, error })
  if (typeof value !== 'string') return fail('must be a string "http://[user:password@]host:port"')
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(value)
  if (!scheme) return fail('must be a URL "http://[user:password@]host:port"')
  if (scheme[1]?.toLowerCase() !== 'http') return fail(`scheme "${scheme[1] ?? ''}" is not supported: the parent proxy must be an http:// URL`)
  const rest = value.slice(scheme[0].length)
  const end = rest.search(/[/?#]/)
  const authority = end < 0 ? rest : rest.slice(0, end)
  if (end >= 0 && rest.slice(end) !== '/') return fail('must not have a path, query or fragment (only "http://host:port")')
  const at = authority.lastIndexOf('@')
  const hostPort = authority.slice(at + 1)
  let authorization: string | undefined
  if (at >= 0) {
    const userinfo = authority.slice(0, at)
    if (userinfo.includes('@')) return fail('"@" in the user name or password must be written as %40')
    const colon = userinfo.indexOf(':')
    const user = decodeUserinfo(colon < 0 ? userinfo : userinfo.slice(0, colon))
    const password = decodeUserinfo(colon < 0 ? '' : userinfo.slice(colon + 1))
    if (user === undefined || password === undefined) return fail('the user name or password has a bad %-escape or a control character')
    if (user === '') return fail('credentials need a user name ("http://user:password@host:port")')
    if (user.includes(':')) return fail('the user name must not contain ":" (Basic authentication cannot carry it)')
    authorization = `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`
  }
  if (!/:[0-9]+$/.test(hostPort)) return fail('needs an explicit port ("http://host:port", e.g. http://corp-proxy:8080)')
  const target = parseAuthority(hostPort)
  if (!target.ok) return fail(target.error)
  return { ok: true, value: new UpstreamProxy(target.value, authorization) }
}

function parseUpstreamBypass(errors: Errors, value: unknown, upstream: unknown): HostPattern[] {
  if (value !== undefined && upstream === undefined) err(errors, 'upstreamBypass', value, '"upstreamBypass" only means something with "upstream"')
  return parseHostList(errors, 'upstreamBypass', value, '"upstreamBypass" must be an array of hosts')
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function unknownKeys(errors: Errors, path: string, obj: Record<string, unknown>, allowed: readonly string[]): void {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) err(errors, path === '' ? key : `${path}.${key}`, obj[key], `unknown key "${key}" (allowed: ${allowed.join(', ')})`)
  }
}

/** `HOST:PORT` for a listener: an IP literal or localhost, port 0-65535 (0 picks a free port). */
export function parseListen(text: string): Result<Listen> {
  const ephemeral = text.endsWith(':0')
  const parsed = ephemeral ? parseAuthority(text.slice(0, -2), 0) : parseAuthority(text)
  if (!parsed.ok) return parsed
  const { host, port } = parsed.value
  if (host.kind === 'name') {
    return host.name === 'localhost' ? { ok: true, value: { host: '127.0.0.1', port } } : { ok: false, error: 'listen host must be an IP address or localhost' }
  }
  return { ok: true, value: { host: formatIp(host.ip), port } }
}

function parseDnsServer(text: unknown): Result<DnsServer> {
  if (typeof text !== 'string') return { ok: false, error: 'a DNS server must be a string "IP" or "IP:PORT"' }
  const ip = parseIp(text)
  if (ip) return { ok: true, value: { ip, port: 53 } }
  // default port 53, so "dns.google" or "127.1" is refused for what it is, not for a missing port
  const parsed = parseAuthority(text, 53)
  if (!parsed.ok) return parsed
  if (parsed.value.host.kind !== 'ip') return { ok: false, error: 'a DNS server must be an IP address' }
  return { ok: true, value: { ip: parsed.value.host.ip, port: parsed.value.port } }
}

function parseDns(errors: Errors, value: unknown): DnsConfig {
  const dns = { servers: [] as DnsServer[], timeoutMs: 5_000, cacheSize: 10_000 }
  if (value === undefined) return dns
  if (!isObject(value)) {
    err(errors, 'dns', value, '"dns" must be an object')
    return dns
  }
  unknownKeys(errors, 'dns', value, DNS_KEYS)
  if (value.servers !== undefined) {
    if (!Array.isArray(value.servers)) err(errors, 'dns.servers', value.servers, 'must be an array')
    else
      value.servers.forEach((s: unknown, i: number) => {
        const server = parseDnsServer(s)
        if (server.ok) dns.servers.push(server.value)
        else err(errors, `dns.servers[${i}]`, s, server.error)
      })
  }
  dns.timeoutMs = wholeNumberWithin(errors, 'dns.timeoutMs', value.timeoutMs, dns.timeoutMs, { min: 100, max: 60_000 })
  dns.cacheSize = wholeNumberWithin(errors, 'dns.cacheSize', value.cacheSize, dns.cacheSize, { min: 1, max: 1_000_000 })
  return dns
}

function parseLimits(errors: Errors, value: unknown): Limits {
  if (value === undefined) return DEFAULT_LIMITS
  if (!isObject(value)) {
    err(errors, 'limits', value, '"limits" must be an object')
    return DEFAULT_LIMITS
  }
  const keys = Object.keys(DEFAULT_LIMITS) as Array<keyof Limits>
  unknownKeys(errors, 'limits', value, keys)
  const limits = { ...DEFAULT_LIMITS }
  for (const key of keys) limits[key] = wholeNumberWithin(errors, `limits.${key}`, value[key], DEFAULT_LIMITS[key], LIMIT_BOUNDS[key])
  if (limits.headerTimeoutMs > limits.requestTimeoutMs) {
    err(errors, 'limits.headerTimeoutMs', limits.headerTimeoutMs, `must not be longer than limits.requestTimeoutMs (${limits.requestTimeoutMs})`)
  }
  return limits
}

/** A list of host patterns without ports (bypass, upstreamBypass). */
function parseHostList(errors: Errors, key: string, value: unknown, notArray: string): HostPattern[] {
  if (value === undefined) return []
  if (!Array.isArray(value)) {
    err(errors, key, value, notArray)
    return []
  }
  const patterns: HostPattern[] = []
  value.forEach((entry: unknown, i: number) => {
    const pattern = parseBypass(entry)
    if (pattern.ok) patterns.push(pattern.value)
    else if (typeof entry === 'string' && entry.startsWith('.')) err(errors, `${key}[${i}]`, entry, `write "*${entry}" for its subdomains (and "${entry.slice(1)}" for the name itself)`)
    else err(errors, `${key}[${i}]`, entry, pattern.error)
  })
  return patterns
}

export type ConfigResult = { ok: true; value: Config } | { ok: false; errors: RuleError[] }

/** Validates a parsed rules.json. Every problem is reported with its path, the entry and why. */
export function parseConfig(json: unknown): ConfigResult {
  if (!isObject(json)) return { ok: false, errors: [{ path: '(top level)', entry: entryText(json), message: 'rules file must be a JSON object' }] }
  const errors: Errors = []
  unknownKeys(errors, '', json, TOP_KEYS)
  let listen = DEFAULT_LISTEN
  if (json.listen !== undefined) {
    const parsed = typeof json.listen === 'string' ? parseListen(json.listen) : { ok: false as const, error: 'must be a string "HOST:PORT"' }
    if (parsed.ok) listen = parsed.value
    else err(errors, 'listen', json.listen, parsed.error)
  }
  const mode = json.mode === undefined ? 'enforce' : json.mode
  if (mode !== 'enforce' && mode !== 'report') err(errors, 'mode', mode, 'must be "enforce" or "report"')
  const policy = compilePolicy({ allow: json.allow, deny: json.deny })
  if (!policy.ok) errors.push(...(policy.errors ?? []))
  const bypass = parseHostList(errors, 'bypass', json.bypass, '"bypass" must be an array')
  const dns = parseDns(errors, json.dns)
  const limits = parseLimits(errors, json.limits)
  const tls = parseTls(errors, json.tls)
  const named = parsePolicies(errors, json.policies)
  const clients = parseClients(errors, json.clients, named)
  const auth = parseAuth(errors, json.auth)
  const upstream = json.upstream === undefined ? undefined : parseUpstream(json.upstream)
  if (upstream && !upstream.ok) err(errors, 'upstream', json.upstream, upstream.error)
  const upstreamBypass = parseUpstreamBypass(errors, json.upstreamBypass, json.upstream)
  const sandbox = parseSandbox(errors, json.sandbox)
  const secrets = parseSecrets(errors, json.secrets)
  const socks = parseSocks(errors, json.socks, parseListen)
  if (clients.some((c) => c.kind === 'user') && !auth) err(errors, 'clients', json.clients, '"user" clients need proxy authentication: add "auth"')
  if (errors.length > 0 || !policy.ok) return { ok: false, errors }
  const policies = { fallback: policy.value, named, clients }
  return { ok: true, value: { listen, mode: mode as Mode, policy: policy.value, bypass, dns, limits, tls, policies, auth, upstream: upstream?.ok ? upstream.value : undefined, upstreamBypass, sandbox, secrets, socks } }
}

/** A policy's warnings: ranges that hold metadata addresses, then host rules that are not what they look like. */
function policyWarnings(policy: Policy, prefix: string): RuleError[] {
  const hosts = [...policy.allow, ...policy.deny].flatMap((rule) => hostWarnings(`${rule.list}[${rule.index}]`, rule.text, rule.pattern, rule.list === 'allow'))
  return [...metadataWarnings(policy), ...hosts].map((w) => ({ ...w, path: `${prefix}${w.path}` }))
}

function listWarnings(key: string, patterns: readonly HostPattern[], widens: boolean): RuleError[] {
  return patterns.flatMap((pattern, i) => hostWarnings(`${key}[${i}]`, describePattern(pattern), pattern, widens))
}

/**
 * What loads but may not do what it seems to, for validate and the log: a range that holds cloud
 * metadata addresses, a host that mixes scripts or reads as another name, a wildcard on a public suffix.
 */
export function configWarnings(config: Config): RuleError[] {
  const named = [...config.policies.named].flatMap(([name, policy]) => policyWarnings(policy, `policies.${name}.`))
  return [...policyWarnings(config.policy, ''), ...named, ...listWarnings('bypass', config.bypass, true), ...listWarnings('upstreamBypass', config.upstreamBypass, false)]
}
