// DNS for allowed names: one query per family to the configured servers (or the system's, after
// the hosts file), as a fully qualified name, bounded in time, answers cached within their TTL,
// and one query at a time per name (concurrent lookups of a name share it).
import { Resolver } from 'node:dns/promises'
import { LRUCache } from 'lru-cache'
import type { DnsConfig } from '../rules/config.js'
import { parseIp, type Ip } from '../policy/ip.js'
import { formatTarget } from '../policy/target.js'
import { DEFAULT_HOSTS_FILE, hostsTable } from './hosts.js'

export type DnsErrorType = 'dns_timeout' | 'dns_error'

export class DnsFailure extends Error {
  constructor(
    readonly type: DnsErrorType,
    /** the resolver's code, e.g. ENOTFOUND (NXDOMAIN), ENODATA, ESERVFAIL, ETIMEOUT */
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}

/** Resolves a name to its addresses, IPv4 first; rejects with DnsFailure. */
export type Lookup = (name: string) => Promise<Ip[]>

interface Answer {
  address: string
  ttl: number
}

function errorCode(reason: unknown): string {
  return typeof reason === 'object' && reason !== null && 'code' in reason ? String(reason.code) : 'EUNKNOWN'
}

const TIMEOUT_CODES = new Set(['ETIMEOUT', 'ECANCELLED'])

function failure(name: string, codes: string[], timeoutMs: number): DnsFailure {
  if (codes.some((c) => TIMEOUT_CODES.has(c))) {
    return new DnsFailure('dns_timeout', 'ETIMEOUT', `DNS lookup of ${name} timed out after ${timeoutMs} ms`)
  }
  const code = codes.find((c) => c !== 'ENODATA') ?? 'ENODATA'
  const what = code === 'ENOTFOUND' ? 'does not exist (NXDOMAIN)' : code === 'ENODATA' ? 'has no A or AAAA records' : `could not be resolved (${code})`
  return new DnsFailure('dns_error', code, `DNS: ${name} ${what}`)
}

/** Where addresses came from: the hosts file (its path) or DNS (a query or the cache). */
export type AnswerSource = { readonly kind: 'hosts'; readonly path: string } | { readonly kind: 'dns' }

export interface Resolution {
  readonly addresses: Ip[]
  readonly from: AnswerSource
}

export interface LookupOptions {
  /** read when `dns.servers` is empty, before DNS; default /etc/hosts */
  readonly hostsFile?: string
}

/** Like Lookup, and says where the answer came from. */
export type Resolve = (name: string) => Promise<Resolution>

export function createLookup(config: DnsConfig, options: LookupOptions = {}): Lookup {
  const resolve = createResolve(config, options)
  return async (name) => (await resolve(name)).addresses
}

export function createResolve(config: DnsConfig, options: LookupOptions = {}): Resolve {
  const resolver = new Resolver({ timeout: config.timeoutMs, tries: 1 })
  if (config.servers.length > 0) {
    resolver.setServers(config.servers.map(({ ip, port }) => formatTarget({ host: { kind: 'ip', ip }, port })))
  }
  const cache = new LRUCache<string, Ip[]>({ max: config.cacheSize })
  const inFlight = new Map<string, Promise<Ip[]>>()
  const hostsFile = options.hostsFile ?? DEFAULT_HOSTS_FILE
  const hosts = config.servers.length === 0 ? hostsTable(hostsFile) : undefined
  const fromHosts: AnswerSource = { kind: 'hosts', path: hostsFile }
  const fromDns: AnswerSource = { kind: 'dns' }

  async function query(name: string): Promise<{ addresses: Ip[]; ttl: number }> {
    const fqdn = `${name}.`
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error('timeout'), { code: 'ETIMEOUT' })), config.timeoutMs)
    })
    const results = await Promise.allSettled([
      Promise.race([resolver.resolve4(fqdn, { ttl: true }), deadline]),
      Promise.race([resolver.resolve6(fqdn, { ttl: true }), deadline]),
    ]).finally(() => clearTimeout(timer))
    const answers: Answer[] = results.flatMap((r) => (r.status === 'fulfilled' ? r.value : []))
    const addresses = answers.map((a) => parseIp(a.address)).filter((ip): ip is Ip => ip !== undefined)
    if (addresses.length === 0) {
      throw failure(name, results.map((r) => (r.status === 'rejected' ? errorCode(r.reason) : 'ENODATA')), config.timeoutMs)
    }
    return { addresses, ttl: Math.min(...answers.map((a) => a.ttl)) }
  }

  async function queryAndCache(name: string): Promise<Ip[]> {
    const { addresses, ttl } = await query(name)
    if (ttl > 0) cache.set(name, addresses, { ttl: ttl * 1000 })
    return addresses
  }

  return async (name) => {
    const listed = (await hosts?.())?.get(name)
    if (listed) return { addresses: [...listed], from: fromHosts }
    const cached = cache.get(name)
    if (cached) return { addresses: cached, from: fromDns }
    let pending = inFlight.get(name)
    if (!pending) {
      pending = queryAndCache(name).finally(() => inFlight.delete(name))
      inFlight.set(name, pending)
    }
    return { addresses: await pending, from: fromDns }
  }
}
