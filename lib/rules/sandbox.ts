// The "sandbox" section of rules.json: proxy-gate as the only way out of a container network,
// with its own DNS server and transparent listeners on its address there. Validated once at load.
import { formatIp, formatIpPort, parseIp, type Ip } from '../policy/ip.js'
import { entryText, type RuleError } from '../policy/rules.js'
import { wholeNumberWithin } from './bounds.js'

export interface SandboxSettings {
  /** proxy-gate's address on the sandbox network: its listeners bind here and DNS answers with it */
  readonly address: Ip
  /** the DNS server's port on `address` (UDP and TCP); undefined: no DNS server */
  readonly dnsPort: number | undefined
  /** DNS queries one client address may send per second; more are answered REFUSED */
  readonly dnsQueriesPerSecond: number
  /** ports on `address` for plain HTTP from clients that know no proxy, decided by the Host header */
  readonly httpPorts: readonly number[]
  /** ports on `address` for TLS from clients that know no proxy, decided by the ClientHello's server name */
  readonly tlsPorts: readonly number[]
  /** the SOCKS5 listener's port on `address` (what `sandbox run` puts in ALL_PROXY); undefined: none */
  readonly socksPort: number | undefined
}

const KEYS = ['address', 'dns', 'dnsQueriesPerSecond', 'http', 'tls', 'socks']
const DEFAULTS = { dnsPort: 53, dnsQueriesPerSecond: 100, httpPorts: [80], tlsPorts: [443], socksPort: 1080 }

type Report = (path: string, value: unknown, message: string) => void

function isPort(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 65535
}

function portList(report: Report, key: 'http' | 'tls', value: unknown, fallback: readonly number[]): readonly number[] {
  if (value === undefined) return fallback
  if (Array.isArray(value) && value.every(isPort) && new Set(value).size === value.length) return value
  report(`sandbox.${key}`, value, 'must be a list of distinct ports (1-65535), [] for none')
  return []
}

/** `sandbox.dns` and `sandbox.socks`: a port, false for no such listener, or the default. */
function optionalPort(report: Report, key: 'dns' | 'socks', value: unknown): number | undefined {
  if (value === undefined) return key === 'dns' ? DEFAULTS.dnsPort : DEFAULTS.socksPort
  if (value === false) return undefined
  if (isPort(value)) return value
  report(`sandbox.${key}`, value, `must be a port (1-65535) for the ${key === 'dns' ? 'DNS server' : 'SOCKS5 listener'}, or false for none`)
  return undefined
}

/** The SOCKS port shares the address with the other TCP listeners (and DNS over TCP): one port, one listener. */
function socksClash(settings: Omit<SandboxSettings, 'address'>): string | undefined {
  const { socksPort } = settings
  if (socksPort === undefined) return undefined
  if (socksPort === settings.dnsPort) return 'sandbox.dns'
  if (settings.httpPorts.includes(socksPort)) return 'sandbox.http'
  return settings.tlsPorts.includes(socksPort) ? 'sandbox.tls' : undefined
}

function parseAddress(report: Report, value: unknown): Ip | undefined {
  const ip = typeof value === 'string' ? parseIp(value) : undefined
  if (ip && ip.value !== 0n) return ip
  report('sandbox.address', value, 'must be the IP address proxy-gate has on the sandbox network (not 0.0.0.0 or ::: clients are told this address)')
  return undefined
}

export function parseSandbox(errors: RuleError[], value: unknown): SandboxSettings | undefined {
  if (value === undefined) return undefined
  const report: Report = (path, v, message) => errors.push({ path, entry: entryText(v), message })
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    report('sandbox', value, '"sandbox" is { "address": IP, "dns": PORT|false, "http": [PORTS], "tls": [PORTS], "socks": PORT|false }')
    return undefined
  }
  const obj = value as Record<string, unknown>
  for (const key of Object.keys(obj)) if (!KEYS.includes(key)) report(`sandbox.${key}`, obj[key], `unknown key "${key}" (allowed: ${KEYS.join(', ')})`)
  const address = parseAddress(report, obj.address)
  const settings = {
    dnsPort: optionalPort(report, 'dns', obj.dns),
    dnsQueriesPerSecond: wholeNumberWithin(errors, 'sandbox.dnsQueriesPerSecond', obj.dnsQueriesPerSecond, DEFAULTS.dnsQueriesPerSecond, { min: 1, max: 1_000_000 }),
    httpPorts: portList(report, 'http', obj.http, DEFAULTS.httpPorts),
    tlsPorts: portList(report, 'tls', obj.tls, DEFAULTS.tlsPorts),
    socksPort: optionalPort(report, 'socks', obj.socks),
  }
  const both = settings.httpPorts.filter((p) => settings.tlsPorts.includes(p))
  if (both.length > 0) report('sandbox.tls', obj.tls, `port ${both.join(', ')} is also in sandbox.http: a port is either plain HTTP or TLS`)
  const clash = socksClash(settings)
  if (clash !== undefined) report('sandbox.socks', obj.socks ?? DEFAULTS.socksPort, `port ${settings.socksPort ?? ''} is also ${clash}'s: the SOCKS5 listener needs a port of its own (or "socks": false)`)
  return address ? { address, ...settings } : undefined
}

/** Where the sandbox's SOCKS5 listener binds, in the shape of "listen" and "socks.listen" (the host as an IP literal), or undefined for none. */
export function sandboxSocksListen(sandbox: SandboxSettings): { readonly host: string; readonly port: number } | undefined {
  return sandbox.socksPort === undefined ? undefined : { host: formatIp(sandbox.address), port: sandbox.socksPort }
}

/** `ADDRESS:PORT` of one sandbox listener, IPv6 in brackets. */
export function sandboxListener(sandbox: SandboxSettings, port: number): string {
  return formatIpPort(sandbox.address, port)
}
