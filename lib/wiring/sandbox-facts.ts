// What `sandbox verify` reads before it probes: the engine's description of the sandbox's networks
// and of the proxy-gate container (`network inspect`, `inspect`: Docker's and Podman's shapes), and,
// inside the probe container, its routing tables and resolv.conf. Pure: the callers read the text.
import { formatIp, parseCidr, parseIp, type Cidr } from '../policy/ip.js'

export interface NetworkFacts {
  readonly name: string
  readonly subnets: readonly Cidr[]
  /** every gateway the engine names: IPAM's, an auxiliary default gateway, Podman's `gateway` */
  readonly gateways: readonly string[]
}

type Json = Record<string, unknown>

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value)
const list = (value: unknown): unknown[] => (Array.isArray(value) ? (value as unknown[]) : [])
const text = (value: unknown): string | undefined => (typeof value === 'string' && value !== '' ? value : undefined)

/** An address as the engine wrote it (`10.250.0.1`, `10.250.0.1/24`), canonical, or undefined. */
function address(value: unknown): string | undefined {
  const raw = text(value)?.split('/')[0]
  const ip = raw === undefined ? undefined : parseIp(raw)
  return ip ? formatIp(ip) : undefined
}

function subnet(value: unknown): Cidr | undefined {
  const raw = text(value)
  const cidr = raw === undefined ? undefined : parseCidr(raw)
  return typeof cidr === 'object' ? cidr : undefined
}

/** Docker: `IPAM.Config[]` with `Subnet`, `Gateway` and `AuxiliaryAddresses`. Podman (netavark): `subnets[]` with `subnet`, `gateway`. */
function ranges(net: Json): { subnets: Cidr[]; gateways: string[] } {
  const ipam = isObject(net.IPAM) ? list(net.IPAM.Config) : []
  const entries = [...ipam, ...list(net.subnets)].filter(isObject)
  const subnets = entries.map((e) => subnet(e.Subnet ?? e.subnet)).filter((c) => c !== undefined)
  const aux = entries.flatMap((e) => (isObject(e.AuxiliaryAddresses) ? Object.values(e.AuxiliaryAddresses) : []))
  const gateways = [...entries.map((e) => e.Gateway ?? e.gateway), ...aux].map(address).filter((a) => a !== undefined)
  return { subnets, gateways: [...new Set(gateways)] }
}

/** The first network in `network inspect`'s JSON output, or why it cannot be read. */
export function networkFacts(json: unknown): NetworkFacts | string {
  const net = list(json)[0]
  if (!isObject(net)) return 'the engine described no network'
  const name = text(net.Name) ?? text(net.name)
  if (name === undefined) return 'the engine described a network without a name'
  return { name, ...ranges(net) }
}

export interface ContainerFacts {
  readonly image: string | undefined
  readonly running: boolean
  /** network name to the container's addresses on it */
  readonly addresses: ReadonlyMap<string, readonly string[]>
  /** the host path of the file its `--rules` names, through the mount that holds it */
  readonly rulesFile: string | undefined
}

/** `--rules PATH` in the container's arguments, mapped back through its mounts to the host. */
function hostRulesFile(c: Json): string | undefined {
  const args = list(c.Args).filter((a): a is string => typeof a === 'string')
  const at = args.indexOf('--rules')
  const inside = at >= 0 ? args[at + 1] : undefined
  if (inside === undefined) return undefined
  for (const m of list(c.Mounts).filter(isObject)) {
    const [source, destination] = [text(m.Source), text(m.Destination)]
    if (source !== undefined && destination !== undefined && inside.startsWith(`${destination}/`)) return `${source}${inside.slice(destination.length)}`
  }
  return undefined
}

/** The first container in `inspect`'s JSON output (Docker and Podman both have `NetworkSettings.Networks`). */
export function containerFacts(json: unknown): ContainerFacts | string {
  const c = list(json)[0]
  if (!isObject(c)) return 'the engine described no container'
  const config = isObject(c.Config) ? c.Config : {}
  const settings = isObject(c.NetworkSettings) ? c.NetworkSettings : {}
  const networks = isObject(settings.Networks) ? settings.Networks : {}
  const addresses = new Map<string, string[]>()
  for (const [name, n] of Object.entries(networks)) {
    if (!isObject(n)) continue
    addresses.set(name, [n.IPAddress, n.GlobalIPv6Address].map(address).filter((a) => a !== undefined))
  }
  const state = isObject(c.State) ? c.State : {}
  return { image: text(c.Image) ?? text(config.Image), running: state.Running === true, addresses, rulesFile: hostRulesFile(c) }
}

/** `/proc/net/route`'s gateways: the third column, a little-endian hex IPv4 address, when not 0. */
export function routeGateways(procNetRoute: string): string[] {
  const found = procNetRoute
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/)[2])
    .filter((hex): hex is string => hex !== undefined && /^[0-9A-Fa-f]{8}$/.test(hex) && !/^0+$/.test(hex))
    .map((hex) => formatIp({ family: 4, value: BigInt(`0x${hex.match(/../g)?.reverse().join('') ?? ''}`) }))
  return [...new Set(found)]
}

/** `/proc/net/ipv6_route`'s next hops (the fifth column, 32 hex digits) when not ::, link-local ones with their interface (`fe80::1%eth0`). */
export function ipv6RouteGateways(procNetIpv6Route: string): string[] {
  const found: string[] = []
  for (const line of procNetIpv6Route.split('\n')) {
    const fields = line.trim().split(/\s+/)
    const [hex, iface] = [fields[4], fields[9]]
    if (hex === undefined || !/^[0-9a-fA-F]{32}$/.test(hex) || /^0+$/.test(hex)) continue
    const ip = formatIp({ family: 6, value: BigInt(`0x${hex}`) })
    found.push(/^fe[89ab]/i.test(hex) && iface ? `${ip}%${iface}` : ip)
  }
  return [...new Set(found)]
}

/** The `nameserver` lines of a resolv.conf, as addresses (a zone such as `%eth0` is dropped). */
export function resolvNameservers(resolvConf: string): string[] {
  const found = resolvConf
    .split('\n')
    .map((line) => /^\s*nameserver\s+(\S+)/.exec(line)?.[1]?.split('%')[0])
    .map(address)
    .filter((a) => a !== undefined)
  return [...new Set(found)]
}
