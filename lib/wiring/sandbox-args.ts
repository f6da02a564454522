// Which `docker run` / `podman run` arguments given to `sandbox run` would undo the confinement:
// another network, the host's, privileges or capabilities that can change routes, another DNS
// server, host entries that point past proxy-gate, the host's user namespace, IPv6 turned back
// on, the engine's own socket. Only the options before the image are read: what follows the image
// is the container's command, the user's business. Pure.
import { cidrContains, formatIp, parseCidr, parseIp } from '../policy/ip.js'
import type { SandboxPlan } from './sandbox.js'

export interface Escape {
  /** the argument as given */
  readonly arg: string
  readonly reason: string
}

/** Long options that take no value (Docker's and Podman's); every other long option takes one. */
const FLAGS = new Set([
  'detach', 'interactive', 'tty', 'privileged', 'rm', 'read-only', 'init', 'publish-all', 'disable-content-trust', 'no-healthcheck', 'oom-kill-disable',
  'sig-proxy', 'quiet', 'help', 'use-api-socket', 'replace', 'rmi', 'env-host', 'no-hosts', 'http-proxy', 'read-only-tmpfs', 'tls-verify', 'passwd',
])
/** Short options that take a value; the other letters are flags (`-it`, `-d`, `-P`). */
const SHORT_WITH_VALUE = new Set(['a', 'c', 'e', 'h', 'l', 'm', 'p', 'u', 'v', 'w'])
const SHORT_NAMES: Record<string, string> = { v: 'volume' }
const RAW_CAPS = new Set(['NET_ADMIN', 'NET_RAW', 'ALL'])
const SOCKETS = /(docker|podman)\.sock/

interface Option {
  readonly name: string
  readonly value: string | undefined
  readonly arg: string
}

/** A value for the option, unless the next argument is an option itself (then the user forgot it, and that option is read as one). */
function takeValue(args: readonly string[], at: number): string | undefined {
  const next = args[at]
  return next === undefined || (next.startsWith('-') && next !== '-') ? undefined : next
}

/** The options before the image, with their values. */
function runOptions(args: readonly string[]): Option[] {
  const options: Option[] = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? ''
    if (arg === '--' || !arg.startsWith('-') || arg === '-') break
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=')
      const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq)
      let value = eq < 0 ? undefined : arg.slice(eq + 1)
      if (value === undefined && !FLAGS.has(name) && (value = takeValue(args, i + 1)) !== undefined) i++
      options.push({ name, value, arg: value === undefined || eq >= 0 ? arg : `${arg} ${value}` })
      continue
    }
    for (let j = 1; j < arg.length; j++) {
      const letter = arg[j] ?? ''
      if (!SHORT_WITH_VALUE.has(letter)) continue
      let value: string | undefined = arg.slice(j + 1) || undefined
      if (value === undefined && (value = takeValue(args, i + 1)) !== undefined) i++
      options.push({ name: SHORT_NAMES[letter] ?? letter, value, arg: `-${letter} ${value ?? ''}`.trim() })
      break
    }
  }
  return options
}

const isTrue = (value: string | undefined): boolean => value === undefined || value.toLowerCase() === 'true'

/** `--network NAME` or Docker 25's `--network name=NAME,alias=...`. */
function networkName(value: string): string {
  const named = value.split(',').find((part) => part.startsWith('name='))
  return named === undefined ? value : named.slice(5)
}

/** The address of `--add-host NAME:ADDRESS` (or `NAME=ADDRESS`, `NAME:[IPV6]`). */
function hostEntryAddress(value: string): string {
  const at = value.search(/[:=]/)
  return at < 0 ? '' : value.slice(at + 1).replace(/^\[(.*)\]$/, '$1')
}

function aroundProxyGate(plan: SandboxPlan, address: string): boolean {
  const ip = parseIp(address)
  const subnet = parseCidr(plan.subnet)
  if (!ip || typeof subnet === 'string') return true
  const first = formatIp({ family: subnet.family, value: subnet.base + 1n })
  return !cidrContains(subnet, ip) || formatIp(ip) === first
}

function reason(plan: SandboxPlan, o: Option): string | undefined {
  const value = o.value ?? ''
  switch (o.name) {
    case 'network':
    case 'net':
      return networkName(value) === plan.network ? undefined : `workloads join only the sandbox network "${plan.network}": another network (host, none, container:..., a normal one) is a way around proxy-gate`
    case 'privileged':
      return isTrue(o.value) ? 'a privileged container can change its routes and addresses' : undefined
    case 'cap-add':
      return value.split(',').some((c) => RAW_CAPS.has(c.trim().toUpperCase().replace(/^CAP_/, ''))) ? 'NET_ADMIN changes routes and addresses, NET_RAW sends packets of any kind (ALL has both)' : undefined
    case 'dns':
      return value === plan.address ? undefined : `proxy-gate (${plan.address}) is the workloads' only DNS server: another one resolves names the rules deny`
    case 'add-host':
      return aroundProxyGate(plan, hostEntryAddress(value)) ? `a host entry may point only into the sandbox network ${plan.subnet}: this one points past proxy-gate` : undefined
    case 'userns':
      return value === 'host' ? "the host's user namespace makes root in the container root on the host" : undefined
    case 'sysctl':
      return /^net\.ipv6\.conf\.[^.=]+\.disable_ipv6=0$/.test(value) ? "IPv6 on reaches the host's link-local address on the bridge, and its services on [::] with it" : undefined
    case 'volume':
    case 'mount':
      return SOCKETS.test(value) ? "the engine's socket lets the workload start containers on any network" : undefined
    case 'use-api-socket':
      return isTrue(o.value) ? "the engine's socket lets the workload start containers on any network" : undefined
    default:
      return undefined
  }
}

/** Every argument before the image that would undo the confinement, with why. */
export function escapes(plan: SandboxPlan, args: readonly string[]): Escape[] {
  return runOptions(args).flatMap((o) => {
    const why = reason(plan, o)
    return why === undefined ? [] : [{ arg: o.arg, reason: why }]
  })
}

/**
 * Arguments before the image that copy one of `names` from the caller's environment into the
 * workload (`-e VAR`, `--env VAR` without a value) or all of it (Podman's `--env-host`): the way a
 * secret's value would enter it.
 */
export function copiedVariables(args: readonly string[], names: ReadonlySet<string>): string[] {
  const copies = (o: Option): boolean => (o.name === 'e' || o.name === 'env') && o.value !== undefined && !o.value.includes('=') && names.has(o.value)
  return runOptions(args)
    .filter((o) => copies(o) || (o.name === 'env-host' && isTrue(o.value)))
    .map((o) => o.arg)
}
