// The sandbox topology as engine commands (the Compose file: sandbox-compose.ts): an internal
// network whose only way out is proxy-gate, dual-homed on it and on a normal egress network, built
// the way each engine needs (engine.ts). Pure: the command line runs what this plans (lib/cli/sandbox.ts).
import { formatIp, parseCidr, type Cidr, type Ip } from '../policy/ip.js'
import type { Result } from '../policy/target.js'
import { construction, egressNetworkArgs, internalNetworkArgs, proxyArgs, workloadArgs, type Construction, type EngineKind } from './engine.js'
import { NO_PROXY_GATE_SECRETS, NO_WORKLOAD_SECRETS, proxyGateSecretArgs, startSecretArgs, workloadSecretEnvironment, workloadSecretVolumes, type ProxyGateSecrets, type WorkloadSecrets } from './sandbox-secrets.js'

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
  readonly engine: EngineKind
  /** what keeps the internal network airtight on that engine */
  readonly construction: Construction
}

export const DEFAULT_SUBNET = '10.250.0.0/24'
const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,40}$/
export const MOUNT = '/etc/proxy-gate'

function secondAddress(cidr: Cidr): Ip {
  return { family: 4, value: cidr.base + 2n }
}

/** --name and --subnet as given, checked before any engine is asked anything. */
export function checkNameAndSubnet(name: string, subnet: string | undefined): Result<Cidr | undefined> {
  if (!NAME.test(name)) return { ok: false, error: `--name "${name}": letters, digits, "_", "." and "-", at most 41` }
  if (subnet === undefined) return { ok: true, value: undefined }
  const cidr = parseCidr(subnet)
  if (typeof cidr === 'string') return { ok: false, error: `--subnet: ${cidr}` }
  if (cidr.family !== 4 || cidr.prefix > 29) return { ok: false, error: '--subnet must be an IPv4 range of /29 or wider, such as 10.250.0.0/24' }
  return { ok: true, value: cidr }
}

/** `engineVersion`: the engine's own (the server's), for options that only newer engines take. */
export function sandboxPlan(options: { name: string; subnet: string; image: string; rulesDir: string; rulesFile: string; user: string | undefined; engine: EngineKind; engineVersion: string | undefined }): Result<SandboxPlan> {
  const checked = checkNameAndSubnet(options.name, options.subnet)
  if (!checked.ok) return checked
  const cidr = checked.value
  if (cidr === undefined) return { ok: false, error: '--subnet is missing' }
  const { name } = options
  const address = formatIp(secondAddress(cidr))
  const { engineVersion, ...rest } = options
  return { ok: true, value: { ...rest, network: name, egress: `${name}-egress`, container: `${name}-proxy`, subnet: options.subnet, address, construction: construction(options.engine, cidr, engineVersion) } }
}

const label = (plan: SandboxPlan): string[] => ['--label', `proxy-gate.sandbox=${plan.name}`]

export function proxyUrl(plan: SandboxPlan): string {
  return `http://${plan.address}:3128`
}

/**
 * The SOCKS5 listener `start --sandbox` opens on proxy-gate's address: `sandbox.socks`'s default
 * port, 1080 (test/sandbox-plan.test.ts holds the two together). socks5h: the client sends the
 * name, so that name rules decide it and proxy-gate resolves it.
 */
export function socksUrl(plan: SandboxPlan): string {
  return `socks5h://${plan.address}:1080`
}

export function startArgs(plan: SandboxPlan, secrets: ProxyGateSecrets = NO_PROXY_GATE_SECRETS): string[] {
  return ['start', '--rules', `${MOUNT}/${plan.rulesFile}`, '--listen', '0.0.0.0:3128', '--advertise', `${plan.address}:3128`, '--insecure-open', '--admin-listen', 'off', '--sandbox', plan.address, ...startSecretArgs(secrets)]
}

/** Creates the networks (the caller skips those that exist) and the proxy-gate container. */
export function networkCommands(plan: SandboxPlan): { readonly name: string; readonly create: string[] }[] {
  return [
    { name: plan.network, create: ['network', 'create', '--driver', 'bridge', '--internal', '--ipv6=false', '--subnet', plan.subnet, ...internalNetworkArgs(plan.construction), ...label(plan), plan.network] },
    { name: plan.egress, create: ['network', 'create', '--driver', 'bridge', ...egressNetworkArgs(plan.construction), ...label(plan), plan.egress] },
  ]
}

/** `secrets`: the CA folder and the secrets' sources proxy-gate reads (never a value: variables go by name). */
export function proxyCommands(plan: SandboxPlan, secrets: ProxyGateSecrets = NO_PROXY_GATE_SECRETS): string[][] {
  const security = ['--read-only', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges']
  return [
    ['run', '-d', '--name', plan.container, ...label(plan), '--restart', 'unless-stopped', '--network', plan.network, '--ip', plan.address, ...security, ...proxyArgs(plan.construction), ...(plan.user ? ['--user', plan.user] : []), '-v', `${plan.rulesDir}:${MOUNT}:ro`, ...proxyGateSecretArgs(secrets), plan.image, ...startArgs(plan, secrets)],
    ['network', 'connect', plan.egress, plan.container],
  ]
}

/**
 * What a workload is told, in both spellings: `run` and the Compose file set the same. ALL_PROXY is
 * for what is not HTTP(S) (ssh through `nc -X 5`, database clients): clients that read both use
 * the HTTP(S) variables for HTTP(S).
 */
export function proxyEnvironment(plan: SandboxPlan): [string, string][] {
  const proxy = proxyUrl(plan)
  const socks = socksUrl(plan)
  const bypass = 'localhost,127.0.0.1'
  return [
    ['HTTP_PROXY', proxy], ['HTTPS_PROXY', proxy], ['ALL_PROXY', socks], ['NO_PROXY', bypass],
    ['http_proxy', proxy], ['https_proxy', proxy], ['all_proxy', socks], ['no_proxy', bypass],
  ]
}

/** `run` for a workload: on the internal network only, DNS and proxy variables set to proxy-gate; `secrets`: placeholders and the CA bundle. */
export function runArgs(plan: SandboxPlan, userArgs: readonly string[], secrets: WorkloadSecrets = NO_WORKLOAD_SECRETS): string[] {
  const env = proxyEnvironment(plan).flatMap(([k, v]) => ['-e', `${k}=${v}`])
  const trust = [...workloadSecretEnvironment(secrets).flatMap(([k, v]) => ['-e', `${k}=${v}`]), ...workloadSecretVolumes(secrets).flatMap((v) => ['-v', v])]
  return ['run', '--rm', '--network', plan.network, '--dns', plan.address, ...workloadArgs(plan.construction), ...env, ...trust, ...userArgs]
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
