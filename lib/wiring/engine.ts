// The container engines the sandbox drives, each in its own words: which engine a CLI really
// talks to (from its `version` output), and what makes the sandbox network airtight on it.
// Pure: lib/cli/engine.ts runs the CLI, lib/wiring/sandbox.ts builds the commands from this.
import { formatCidr, formatIp, type Cidr } from '../policy/ip.js'
import type { Result } from '../policy/target.js'

export type EngineKind = 'docker' | 'podman'

export interface EngineIdentity {
  readonly kind: EngineKind
  /** the engine's (the server's) version, e.g. "20.10.24+dfsg1", "4.3.1" */
  readonly version: string
  /** what the engine is, for messages: "Docker Engine 20.10.24", "Podman 4.3.1" */
  readonly name: string
}

/** The same Go template works on both CLIs (and on a `docker` that is really Podman). */
export const VERSION_ARGS: readonly string[] = ['version', '--format', '{{json .}}']

type Json = Record<string, unknown>
const record = (value: unknown): Json | undefined => (typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Json) : undefined)
const text = (value: unknown): string => (typeof value === 'string' ? value : '?')

/**
 * Which engine `cli version --format '{{json .}}'` describes. Podman's CLI spells its client's
 * field `APIVersion` (Docker's: `ApiVersion`); a Docker CLI names its server's components, and
 * Podman's Docker-compatible API calls itself "Podman Engine" there.
 */
export function identifyEngine(cli: string, output: string): Result<EngineIdentity> {
  let parsed: unknown
  try {
    parsed = JSON.parse(output)
  } catch {
    return { ok: false, error: `"${cli} version" did not describe an engine: ${output.trim().slice(0, 200) || '(nothing)'}` }
  }
  const client = record(record(parsed)?.Client)
  const server = record(record(parsed)?.Server)
  if (client && 'APIVersion' in client) {
    const version = text(server?.Version ?? client.Version)
    return { ok: true, value: { kind: 'podman', version, name: `Podman ${version}` } }
  }
  if (!server) return { ok: false, error: `${cli} cannot reach its engine` }
  const components = Array.isArray(server.Components) ? server.Components.map(record) : []
  const podman = components.find((c) => /podman/i.test(text(c?.Name)))
  if (podman) {
    return {
      ok: false,
      error: `${cli} talks to Podman ${text(podman.Version)} through its Docker-compatible API, which turns Podman's DNS on for every bridge network it makes: that puts the gateway, an address of the host, on the sandbox network. Drive Podman with its own CLI: --engine podman`,
    }
  }
  const version = text(server.Version)
  return { ok: true, value: { kind: 'docker', version, name: `Docker Engine ${version}` } }
}

/** What keeps a sandbox network's workloads from every address but proxy-gate's, on one engine. */
export interface Construction {
  /** `-o` options of the internal network (Compose: driver_opts) */
  readonly driverOpts: Readonly<Record<string, string>>
  /** Podman: no DNS server of the engine's on either network (on the internal one it would sit on a host address) */
  readonly disableDns: boolean
  /** where the engine hands out workload addresses (undefined: anywhere in the subnet) */
  readonly ipRange: string | undefined
  /** Docker: addresses IPAM keeps (Compose: aux_addresses); DefaultGatewayIPv4 is the workloads' gateway */
  readonly auxAddresses: Readonly<Record<string, string>>
  /** sysctls of the proxy-gate container */
  readonly proxySysctls: Readonly<Record<string, string>>
  /** sysctls and dropped capabilities of every workload */
  readonly workloadSysctls: Readonly<Record<string, string>>
  readonly workloadCapDrop: readonly string[]
}

/** Docker 28 added the gateway mode "isolated" for internal networks: no address on the bridge, no gateway. */
export function supportsIsolatedGateway(dockerVersion: string | undefined): boolean {
  const major = /^(\d+)\./.exec(dockerVersion ?? '')?.[1]
  return major !== undefined && Number(major) >= 28
}

/**
 * Docker: `--internal` alone leaves the Docker host reachable through the bridge's address, so
 * the bridge gets none (inhibit_ipv4). Docker 20.10 still gives containers on internal networks a
 * default route, via the subnet's first address unless told otherwise: the workloads' gateway is
 * the subnet's last usable address, reserved and held by nothing, so that should the host's side of
 * the bridge ever get an address (an engine that ignores inhibit_ipv4, a person), workloads reach
 * that one address but route nowhere else. Docker 28 and later: gateway mode "isolated", no gateway
 * at all. Docker gives containers on IPv4-only networks no IPv6 and lets them bind ports below 1024;
 * it grants NET_RAW, which workloads lose (a hand-made frame to the bridge reaches the host's own
 * addresses, whose INPUT no rule of Docker's filters).
 *
 * Podman 4.3 (netavark or CNI): an internal network gets no address on its bridge only when its DNS
 * is off (aardvark-dns would listen on the gateway address, on the host, and forward names to the
 * host's resolvers); then containers have just the subnet's route. The bridge still has an IPv6
 * link-local address, and a host service listening on [::] answers there: workloads get no IPv6.
 * Nothing filters what the host forwards for an internal network, so workloads lose NET_RAW (no
 * hand-made frames to the bridge). Workload addresses come from the upper half of the subnet, so
 * that its first address is never anyone's; proxy-gate (the second) needs the low ports. The egress
 * network has no DNS server either: proxy-gate resolves through its rules' servers or the host's, and
 * no aardvark-dns runs for the sandbox at all (rootful Podman shares one across network namespaces).
 */
export function construction(kind: EngineKind, subnet: Cidr, version: string | undefined): Construction {
  if (kind === 'docker') {
    const isolated = supportsIsolatedGateway(version)
    const lastUsable = formatIp({ family: 4, value: subnet.base + (1n << BigInt(32 - subnet.prefix)) - 2n })
    return {
      driverOpts: { 'com.docker.network.bridge.inhibit_ipv4': 'true', ...(isolated ? { 'com.docker.network.bridge.gateway_mode_ipv4': 'isolated' } : {}) },
      disableDns: false,
      ipRange: undefined,
      auxAddresses: isolated ? {} : { DefaultGatewayIPv4: lastUsable },
      proxySysctls: {},
      workloadSysctls: {},
      workloadCapDrop: ['NET_RAW'],
    }
  }
  const upperHalf = formatCidr({ family: 4, base: subnet.base + (1n << BigInt(31 - subnet.prefix)), prefix: subnet.prefix + 1 })
  return {
    driverOpts: {},
    disableDns: true,
    ipRange: upperHalf,
    auxAddresses: {},
    proxySysctls: { 'net.ipv4.ip_unprivileged_port_start': '0' },
    workloadSysctls: { 'net.ipv6.conf.eth0.disable_ipv6': '1' },
    workloadCapDrop: ['NET_RAW'],
  }
}

const sysctlArgs = (sysctls: Readonly<Record<string, string>>): string[] => Object.entries(sysctls).flatMap(([k, v]) => ['--sysctl', `${k}=${v}`])

/** The internal network's options after `--internal --ipv6=false --subnet`, in the engine's words. */
export function internalNetworkArgs(c: Construction): string[] {
  return [
    ...(c.disableDns ? ['--disable-dns'] : []),
    ...(c.ipRange ? ['--ip-range', c.ipRange] : []),
    ...Object.entries(c.driverOpts).flatMap(([k, v]) => ['-o', `${k}=${v}`]),
    ...Object.entries(c.auxAddresses).flatMap(([k, v]) => ['--aux-address', `${k}=${v}`]),
  ]
}

export function egressNetworkArgs(c: Construction): string[] {
  return c.disableDns ? ['--disable-dns'] : []
}

export function proxyArgs(c: Construction): string[] {
  return sysctlArgs(c.proxySysctls)
}

export function workloadArgs(c: Construction): string[] {
  return [...sysctlArgs(c.workloadSysctls), ...c.workloadCapDrop.flatMap((cap) => ['--cap-drop', cap])]
}

/** `network inspect -f` for a network's subnets, one per space: the engines shape it differently. */
export function subnetTemplate(kind: EngineKind): string {
  return kind === 'docker' ? '{{range .IPAM.Config}}{{.Subnet}} {{end}}' : '{{range .Subnets}}{{.Subnet}} {{end}}'
}

/**
 * Why an existing Podman network (`podman network inspect` JSON) is not one `up` would make, so
 * that `up` does not put proxy-gate on a network that leaks; empty when it is.
 */
export function podmanNetworkProblems(inspect: string): string[] {
  let network: Json | undefined
  try {
    const parsed: unknown = JSON.parse(inspect)
    network = record(Array.isArray(parsed) ? parsed[0] : parsed)
  } catch {
    network = undefined
  }
  if (!network) return ['podman network inspect said nothing readable']
  const problems: string[] = []
  if (network.internal !== true) problems.push('it is not internal')
  if (network.dns_enabled !== false) problems.push("Podman's DNS is on (aardvark-dns on the gateway address, which is the host's, forwarding names to the host's resolvers)")
  const subnets = Array.isArray(network.subnets) ? network.subnets.map(record) : []
  for (const gateway of subnets.map((s) => s?.gateway).filter((g) => g !== undefined)) problems.push(`its gateway ${text(gateway)} is an address of the host on the network's bridge`)
  if (network.ipv6_enabled === true) problems.push('it has IPv6')
  return problems
}
