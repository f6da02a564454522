// The sandbox as a Compose file (the Compose Specification, as Compose v2 reads it), built the
// same way as `sandbox up` and `run` build it on each engine. Pure: `sandbox compose` prints it.
import { MOUNT, proxyEnvironment, startArgs, type SandboxPlan } from './sandbox.js'
import { NO_PROXY_GATE_SECRETS, NO_WORKLOAD_SECRETS, proxyGateSecretVolumes, workloadSecretEnvironment, workloadSecretVolumes, type ProxyGateSecrets, type WorkloadSecrets } from './sandbox-secrets.js'

/** The CA and secrets, for proxy-gate's service and for the workload's (as `up` and `run` give them). */
export interface ComposeSecrets {
  readonly proxyGate: ProxyGateSecrets
  readonly workload: WorkloadSecrets
}

const NO_SECRETS: ComposeSecrets = { proxyGate: NO_PROXY_GATE_SECRETS, workload: NO_WORKLOAD_SECRETS }

type Yaml = string | number | boolean | readonly Yaml[] | { readonly [key: string]: Yaml }
type Mapping = { readonly [key: string]: Yaml }

const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_.-]*$/
const YAML_WORDS = /^(true|false|yes|no|on|off|null|y|n)$/i

function key(text: string): string {
  return PLAIN_KEY.test(text) && !YAML_WORDS.test(text) ? text : JSON.stringify(text)
}

/** One line: strings double-quoted (JSON's quoting is YAML's), lists and mappings in flow style. */
function flow(value: Yaml): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value !== 'object') return String(value)
  if (Array.isArray(value)) return `[${(value as readonly Yaml[]).map(flow).join(', ')}]`
  const entries = Object.entries(value as Mapping)
  return entries.length === 0 ? '{}' : `{ ${entries.map(([k, v]) => `${key(k)}: ${flow(v)}`).join(', ')} }`
}

/** Mappings that hold mappings open a block; everything else stays on its key's line. */
function block(mapping: Mapping, indent: string): string[] {
  return Object.entries(mapping).flatMap(([k, v]) => {
    const nested = typeof v === 'object' && !Array.isArray(v) && Object.values(v as Mapping).some((x) => typeof x === 'object' && !Array.isArray(x))
    return nested ? [`${indent}${key(k)}:`, ...block(v as Mapping, `${indent}  `)] : [`${indent}${key(k)}: ${flow(v)}`]
  })
}

/** A service of the sandbox: proxy-gate's DNS and proxy, and what the engine takes away. */
function workload(plan: SandboxPlan, onDocker: boolean, secrets: WorkloadSecrets): Mapping {
  const { workloadSysctls, workloadCapDrop } = plan.construction
  const volumes = workloadSecretVolumes(secrets)
  return {
    image: 'alpine',
    dns: [plan.address],
    environment: Object.fromEntries([...proxyEnvironment(plan), ...workloadSecretEnvironment(secrets)]),
    ...(volumes.length > 0 ? { volumes } : {}),
    // as a list: podman-compose 1.0 passes a mapping's keys on without their values
    ...(Object.keys(workloadSysctls).length > 0 ? { sysctls: Object.entries(workloadSysctls).map(([k, v]) => `${k}=${v}`) } : {}),
    ...(workloadCapDrop.length > 0 ? { cap_drop: workloadCapDrop } : {}),
    networks: ['sandbox'],
    ...(onDocker ? { depends_on: ['proxy-gate'] } : {}),
  }
}

function proxyGate(plan: SandboxPlan, secrets: ProxyGateSecrets): Mapping {
  return {
    image: plan.image,
    command: startArgs(plan, secrets),
    // names only: Compose takes each value from its own environment, so the file never holds one
    ...(secrets.envNames.length > 0 ? { environment: [...secrets.envNames] } : {}),
    read_only: true,
    ...(plan.user ? { user: plan.user } : {}),
    cap_drop: ['ALL'],
    security_opt: ['no-new-privileges'],
    restart: 'unless-stopped',
    volumes: [`${plan.rulesDir}:${MOUNT}:ro`, ...proxyGateSecretVolumes(secrets)],
    networks: { sandbox: { ipv4_address: plan.address }, egress: {} },
  }
}

function dockerDocument(plan: SandboxPlan, secrets: ComposeSecrets): Mapping {
  const { driverOpts, auxAddresses } = plan.construction
  const ipam = { subnet: plan.subnet, ...(Object.keys(auxAddresses).length > 0 ? { aux_addresses: auxAddresses } : {}) }
  return {
    name: plan.name,
    services: { 'proxy-gate': proxyGate(plan, secrets.proxyGate), workload: workload(plan, true, secrets.workload) },
    networks: {
      sandbox: { name: plan.network, driver: 'bridge', internal: true, enable_ipv6: false, driver_opts: driverOpts, ipam: { config: [ipam] } },
      egress: { name: plan.egress },
    },
  }
}

/** On Podman the network and proxy-gate come from `sandbox up`: Compose cannot make that network there. */
function podmanDocument(plan: SandboxPlan, secrets: ComposeSecrets): Mapping {
  return { name: plan.name, services: { workload: workload(plan, false, secrets.workload) }, networks: { sandbox: { name: plan.network, external: true } } }
}

function header(plan: SandboxPlan): string[] {
  const intro = [
    `# proxy-gate sandbox "${plan.name}" for Compose (the Compose Specification, Compose v2): services on the`,
    '# network "sandbox" reach only what the rules allow, through proxy-gate. Add yours the way "workload"',
    '# is (its image is a placeholder): the DNS server, the proxy variables and what else it sets.',
  ]
  if (plan.engine === 'docker') return intro
  return [
    ...intro,
    `# On Podman the network and proxy-gate come from \`proxy-gate sandbox up --engine podman --name ${plan.name}\`:`,
    '# run that first. Compose cannot make this network on Podman: through Podman\'s Docker-compatible API',
    "# every bridge network gets Podman's DNS, which sits on an address of the host, and podman-compose",
    '# before 1.4 cannot turn it off (1.0 also drops `dns:`: then only the proxy variables lead out).',
  ]
}

export function composeFile(plan: SandboxPlan, secrets: ComposeSecrets = NO_SECRETS): string {
  const document = plan.engine === 'docker' ? dockerDocument(plan, secrets) : podmanDocument(plan, secrets)
  return [...header(plan), ...block(document, ''), ''].join('\n')
}
