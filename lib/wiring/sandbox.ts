// The sandbox topology as docker commands and as a Compose file: an internal network whose only
// way out is proxy-gate, dual-homed on it and on a normal egress network. Pure: the command line
// runs what this plans (lib/cli/sandbox.ts).
import { formatIp, parseCidr, type Cidr, type Ip } from '../policy/ip.js'
import type { Result } from '../policy/target.js'

export interface SandboxPlan {
  readonly name: string
  /** the internal network workloads join */
  readonly network: string
  /** the normal network proxy-gate leaves through */
  readonly egress: string
  readonly container: string
  readonly subnet: string
  /** proxy-gate's fixed address on the internal network: its DNS, proxy and transparent listeners */
  readonly address: string
  readonly image: string
  /** the folder mounted read-only at /etc/proxy-gate (a folder, so that edits that replace the file reload) */
  readonly rulesDir: string
  readonly rulesFile: string
  /** `UID:GID` proxy-gate runs as, so that it can read the mounted rules; undefined: the image's (1000) */
  readonly user: string | undefined
}

export const DEFAULT_SUBNET = '10.250.0.0/24'
const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,40}$/
const MOUNT = '/etc/proxy-gate'
/** with no IPv4 address on the bridge, the host itself is out of the workloads' reach (Docker's --internal alone is not) */
const NO_HOST_ROUTE = 'com.docker.network.bridge.inhibit_ipv4'
const GATEWAY_MODE = 'com.docker.network.bridge.gateway_mode_ipv4'

function secondAddress(cidr: Cidr): Ip {
  return { family: 4, value: cidr.base + 2n }
}

export function sandboxPlan(options: { name: string; subnet: string; image: string; rulesDir: string; rulesFile: string; user: string | undefined }): Result<SandboxPlan> {
  if (!NAME.test(options.name)) return { ok: false, error: `--name "${options.name}": letters, digits, "_", "." and "-", at most 41` }
  const cidr = parseCidr(options.subnet)
  if (typeof cidr === 'string') return { ok: false, error: `--subnet: ${cidr}` }
  if (cidr.family !== 4 || cidr.prefix > 29) return { ok: false, error: '--subnet must be an IPv4 range of /29 or wider, such as 10.250.0.0/24' }
  const { name } = options
  const address = formatIp(secondAddress(cidr))
  return { ok: true, value: { ...options, network: name, egress: `${name}-egress`, container: `${name}-proxy`, subnet: options.subnet, address } }
}

const label = (plan: SandboxPlan): string[] => ['--label', `proxy-gate.sandbox=${plan.name}`]

export function proxyUrl(plan: SandboxPlan): string {
  return `http://${plan.address}:3128`
}

function startArgs(plan: SandboxPlan): string[] {
  return ['start', '--rules', `${MOUNT}/${plan.rulesFile}`, '--listen', '0.0.0.0:3128', '--advertise', `${plan.address}:3128`, '--insecure-open', '--admin-listen', 'off', '--sandbox', plan.address]
}

/**
 * The subnet's last usable address, reserved as the workloads' default gateway and held by nothing:
 * should the host's side of the bridge ever get an address (an engine that ignores inhibit_ipv4,
 * a person), workloads reach that one address but still route nowhere else. Docker 20.10 gives
 * containers on internal networks a default route; newer engines give them none.
 */
export function deadGateway(plan: SandboxPlan): string {
  const cidr = parseCidr(plan.subnet) as Cidr
  return formatIp({ family: 4, value: cidr.base + (1n << BigInt(32 - cidr.prefix)) - 2n })
}

/** Docker 28 added the gateway mode "isolated" for internal networks: no address on the bridge, no gateway. */
export function supportsIsolatedGateway(dockerVersion: string | undefined): boolean {
  const major = /^(\d+)\./.exec(dockerVersion ?? '')?.[1]
  return major !== undefined && Number(major) >= 28
}

/**
 * Creates the networks (the caller skips those that exist) and the proxy-gate container. On an
 * engine with the gateway mode "isolated" the network has no gateway at all; on older ones the
 * workloads' gateway is the reserved dead address.
 */
export function networkCommands(plan: SandboxPlan, options: { readonly isolatedGateway: boolean } = { isolatedGateway: false }): { readonly name: string; readonly create: string[] }[] {
  const gateway = options.isolatedGateway ? ['-o', `${GATEWAY_MODE}=isolated`] : ['--aux-address', `DefaultGatewayIPv4=${deadGateway(plan)}`]
  const internal = ['--internal', '--ipv6=false', '--subnet', plan.subnet, '-o', `${NO_HOST_ROUTE}=true`, ...gateway]
  return [
    { name: plan.network, create: ['network', 'create', '--driver', 'bridge', ...internal, ...label(plan), plan.network] },
    { name: plan.egress, create: ['network', 'create', '--driver', 'bridge', ...label(plan), plan.egress] },
  ]
}

export function proxyCommands(plan: SandboxPlan): string[][] {
  const security = ['--read-only', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges']
  return [
    ['run', '-d', '--name', plan.container, ...label(plan), '--restart', 'unless-stopped', '--network', plan.network, '--ip', plan.address, ...security, ...(plan.user ? ['--user', plan.user] : []), '-v', `${plan.rulesDir}:${MOUNT}:ro`, plan.image, ...startArgs(plan)],
    ['network', 'connect', plan.egress, plan.container],
  ]
}

/**
 * `docker run` for a workload: on the internal network only, DNS and proxy variables set to
 * proxy-gate, and without NET_RAW (which Docker grants by default): a hand-made frame to the
 * bridge reaches the host's own addresses, whose INPUT no rule of Docker's filters.
 */
export function runArgs(plan: SandboxPlan, userArgs: readonly string[]): string[] {
  const proxy = proxyUrl(plan)
  const env = [`HTTP_PROXY=${proxy}`, `HTTPS_PROXY=${proxy}`, `http_proxy=${proxy}`, `https_proxy=${proxy}`, 'NO_PROXY=localhost,127.0.0.1', 'no_proxy=localhost,127.0.0.1']
  return ['run', '--rm', '--network', plan.network, '--dns', plan.address, '--cap-drop', 'NET_RAW', ...env.flatMap((e) => ['-e', e]), ...userArgs]
}

export interface Removal {
  readonly kind: 'container' | 'network'
  readonly name: string
  readonly remove: string[]
}

/** The container first: a network with a container on it cannot go. */
export function downCommands(plan: SandboxPlan): Removal[] {
  return [
    { kind: 'container', name: plan.container, remove: ['rm', '-f', plan.container] },
    { kind: 'network', name: plan.network, remove: ['network', 'rm', plan.network] },
    { kind: 'network', name: plan.egress, remove: ['network', 'rm', plan.egress] },
  ]
}

const q = (text: string): string => JSON.stringify(text)

/** The same topology for Compose users: add services to the sandbox network the way `workload` is. */
export function composeFile(plan: SandboxPlan): string {
  const proxy = proxyUrl(plan)
  return `# proxy-gate sandbox "${plan.name}": workloads on ${plan.network} reach only what rules.json allows.
name: ${q(plan.name)}
services:
  proxy-gate:
    image: ${q(plan.image)}
    command: [${startArgs(plan).map(q).join(', ')}]
    read_only: true
${plan.user ? `    user: ${q(plan.user)}\n` : ''}    cap_drop: [ALL]
    security_opt: [no-new-privileges]
    restart: unless-stopped
    volumes: [${q(`${plan.rulesDir}:${MOUNT}:ro`)}]
    networks:
      sandbox: { ipv4_address: ${q(plan.address)} }
      egress: {}
  workload:
    image: "alpine"   # your image here
    dns: [${q(plan.address)}]
    environment:
      HTTP_PROXY: ${q(proxy)}
      HTTPS_PROXY: ${q(proxy)}
      NO_PROXY: "localhost,127.0.0.1"
    networks: [sandbox]
    depends_on: [proxy-gate]
networks:
  sandbox:
    name: ${q(plan.network)}
    internal: true
    enable_ipv6: false
    driver_opts: { ${q(NO_HOST_ROUTE)}: "true" }
    ipam: { config: [{ subnet: ${q(plan.subnet)}, aux_addresses: { DefaultGatewayIPv4: ${q(deadGateway(plan))} } }] }
  egress:
    name: ${q(plan.egress)}
`
}
