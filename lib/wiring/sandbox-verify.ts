// What `proxy-gate sandbox verify` tries from inside the sandbox network, and how each outcome is
// judged. Any answer from an address but proxy-gate's is a way out: a connection, and also a
// refusal (the address is reachable, only that port is closed); only "unreachable" or silence
// passes. DNS must come from proxy-gate or from nothing: a resolver that answers otherwise is a way
// out. Pure: lib/cli/sandbox-probe.ts runs the probes in the container, lib/cli/sandbox-verify.ts
// drives the engine and prints what `judge` says.
import { choosePolicy, type PolicySet } from '../policy/clients.js'
import { decideName, type DecisionContext } from '../policy/decide.js'
import { formatIp, formatIpPort, parseIp, type Cidr, type Ip } from '../policy/ip.js'
import type { NetworkFacts } from './sandbox-facts.js'

/** Where an address came from: it decides what an answer from it means. */
export type TargetKind = 'sandbox-host' | 'egress-host' | 'proxy-other' | 'route-gateway' | 'metadata' | 'outside'

export interface TcpProbe {
  readonly kind: TargetKind
  readonly address: string
  readonly port: number
  readonly what: string
}

export type ResolverKind = 'proxy-gate' | 'nameserver' | 'outside'

export interface DnsProbe {
  readonly kind: ResolverKind
  readonly server: string
  readonly what: string
}

/** What the probe container is given (as JSON on its command line). */
export interface ProbeSpec {
  /** proxy-gate's address on the sandbox network: never a failure to reach */
  readonly proxy: string
  readonly tcp: readonly TcpProbe[]
  readonly dns: readonly DnsProbe[]
  /** asked of every resolver (A records over UDP) */
  readonly names: readonly string[]
  readonly timeoutMs: number
}

const PROBE_TIMEOUT_MS = 1500
/** Ports tried on every address of the host: a refusal on any of them shows the address is reachable. */
const HOST_PORTS = [22, 53, 80, 443]
const OUTSIDE_PORTS = [53, 443]
const METADATA = ['169.254.169.254', 'fd00:ec2::254']
/** Well-known public resolvers: TCP and DNS to them must go nowhere (`--probe-address` replaces them). */
export const DEFAULT_PROBE_ADDRESSES = ['1.1.1.1', '2606:4700:4700::1111']

export interface SandboxFacts {
  readonly proxy: string
  readonly network: NetworkFacts
  readonly egress: NetworkFacts
  /** proxy-gate's addresses on its networks other than the sandbox network */
  readonly proxyOther: readonly string[]
  readonly probeAddresses: readonly string[]
  readonly names: readonly string[]
}

const first = (cidr: Cidr): string => formatIp({ family: cidr.family, value: cidr.base + 1n })

function hostAddresses(net: NetworkFacts): string[] {
  return [...net.subnets.map(first), ...net.gateways]
}

function tcp(kind: TargetKind, what: string, addresses: readonly string[], ports: readonly number[]): TcpProbe[] {
  return addresses.flatMap((address) => ports.map((port) => ({ kind, address, port, what })))
}

/** Keeps the first probe of each address and port (the most specific meaning), never proxy-gate's own. */
function distinct(probes: readonly TcpProbe[], proxy: string): TcpProbe[] {
  const seen = new Set<string>([proxy])
  const kept: TcpProbe[] = []
  for (const p of probes) {
    const key = `${p.address} ${p.port}`
    if (seen.has(p.address) || seen.has(key)) continue
    seen.add(key)
    kept.push(p)
  }
  return kept
}

/** Every probe the engine's facts call for; the probe container adds its own routes' gateways and resolvers. */
export function probeSpec(facts: SandboxFacts): ProbeSpec {
  const probes = [
    ...tcp('sandbox-host', `the host's side of ${facts.network.name}`, hostAddresses(facts.network), HOST_PORTS),
    ...tcp('egress-host', `the host's side of ${facts.egress.name}`, hostAddresses(facts.egress), HOST_PORTS),
    ...tcp('proxy-other', "proxy-gate's address on another network", facts.proxyOther, HOST_PORTS),
    ...tcp('metadata', 'the cloud metadata address', METADATA, [80]),
    ...tcp('outside', 'a public address', facts.probeAddresses, OUTSIDE_PORTS),
  ]
  const dns: DnsProbe[] = [
    { kind: 'proxy-gate', server: facts.proxy, what: "proxy-gate's DNS" },
    ...facts.probeAddresses.map((server) => ({ kind: 'outside' as const, server, what: 'a public resolver, straight' })),
  ]
  return { proxy: facts.proxy, tcp: distinct(probes, facts.proxy), dns, names: facts.names, timeoutMs: PROBE_TIMEOUT_MS }
}

/** What the probe container finds about itself. */
export interface LocalFacts {
  /** its own addresses, but loopback */
  readonly addresses: readonly string[]
  readonly gateways: readonly string[]
  readonly nameservers: readonly string[]
}

/** The spec with the container's own route gateways and resolv.conf nameservers added. */
export function withLocal(spec: ProbeSpec, local: LocalFacts): ProbeSpec {
  const gateways = tcp('route-gateway', "a gateway in the workload's routing table", local.gateways, HOST_PORTS)
  const known = new Set(spec.dns.map((d) => d.server))
  const resolvers = local.nameservers.filter((s) => !known.has(s)).map((server) => ({ kind: 'nameserver' as const, server, what: "a resolver in the workload's resolv.conf" }))
  return { ...spec, tcp: distinct([...spec.tcp, ...gateways], spec.proxy), dns: [...spec.dns, ...resolvers] }
}

export type TcpOutcome = 'connected' | 'refused' | 'reset' | 'unreachable' | 'timeout'

export type DnsOutcome =
  | { readonly kind: 'answer'; readonly rcode: number; readonly addresses: readonly string[] }
  | { readonly kind: 'refused' } // ICMP port unreachable: the address answered
  | { readonly kind: 'unreachable'; readonly code: string }
  | { readonly kind: 'timeout' }

/** What the probe container prints (one JSON document). */
export interface ProbeReport {
  readonly local: LocalFacts
  readonly tcp: readonly (TcpProbe & { readonly outcome: TcpOutcome; readonly code?: string | undefined })[]
  readonly dns: readonly (DnsProbe & { readonly name: string; readonly outcome: DnsOutcome })[]
}

export interface VerifyLine {
  readonly pass: boolean
  /** what was tried, e.g. `TCP 10.250.0.1:22 (the host's side of box)` */
  readonly probe: string
  readonly result: string
  /** for a failure: the open path in a few words (`10.250.0.1:22 reachable`) */
  readonly open?: string
  /** for a failure: what it means and what to do */
  readonly advice?: string
}

const NXDOMAIN = 3

const TCP_ADVICE: Record<TargetKind, string> = {
  'sandbox-host': 'the host has this address on the sandbox network: every service it runs on all interfaces is open to workloads. Remove the address from the bridge, or run "proxy-gate sandbox down" and "up" again on an engine that leaves internal bridges without an address (see the README)',
  'egress-host': 'workloads route to the host through the egress network: every service the host runs on all interfaces is open to them. Recreate the sandbox ("sandbox down", then "up") and check the engine',
  'proxy-other': "workloads reach proxy-gate's other networks: traffic is routed past proxy-gate. Recreate the sandbox and check the host's routing",
  'route-gateway': "the workload's default gateway answers: it routes to the host and past it. Recreate the sandbox on an engine that gives internal networks no usable gateway",
  metadata: 'the cloud metadata service is reachable: the machine\'s credentials are exposed to workloads. The network is not confined: recreate it and check the engine',
  outside: 'workloads reach the internet without proxy-gate. The network is not confined: recreate it and check the engine',
}

function tcpLine(p: ProbeReport['tcp'][number]): VerifyLine {
  const target = formatTarget(p.address, p.port)
  const probe = `TCP ${target} (${p.what})`
  const detail = p.code ? ` (${p.code})` : ''
  if (p.outcome === 'unreachable' || p.outcome === 'timeout') return { pass: true, probe, result: `${p.outcome === 'timeout' ? 'no answer' : 'unreachable'}${detail}` }
  const how = p.outcome === 'connected' ? 'a connection was accepted' : 'refused: the address answers, only this port is closed'
  return { pass: false, probe, result: `reachable: ${how}`, open: `${target} reachable`, advice: TCP_ADVICE[p.kind] }
}

function formatTarget(address: string, port: number): string {
  const ip = parseIp(address)
  if (ip) return formatIpPort(ip, port)
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`
}

/** What proxy-gate answers a name with under its rules, for a client at `source`. */
export type Expect = (name: string, source: Ip | undefined) => 'allow' | 'deny'

/** A name no rule should allow (`.invalid` never resolves anywhere), and up to three the rules allow. */
export function probeNames(policies: PolicySet, ctx: DecisionContext, random: string): string[] {
  const allowed = new Set<string>()
  for (const policy of [policies.fallback, ...policies.named.values()]) {
    const names = policy.allow.map((r) => (r.pattern.kind === 'exact' ? r.pattern.name : r.pattern.kind === 'wildcard' ? `proxy-gate-verify.${r.pattern.suffix}` : undefined))
    const name = names.find((n) => n !== undefined && decideName(policy, ctx, n).verdict === 'allow')
    if (name !== undefined && allowed.size < 3) allowed.add(name)
  }
  return [`proxy-gate-verify-${random}.invalid`, ...allowed]
}

export function expectFromRules(policies: PolicySet, ctx: DecisionContext): Expect {
  return (name, source) => decideName(choosePolicy(policies, { source, user: undefined }).policy, ctx, name).verdict
}

function describe(outcome: DnsOutcome): string {
  switch (outcome.kind) {
    case 'answer':
      return outcome.rcode === NXDOMAIN ? 'NXDOMAIN' : outcome.rcode !== 0 ? `rcode ${outcome.rcode}` : outcome.addresses.length > 0 ? outcome.addresses.join(', ') : 'no address'
    case 'refused':
      return 'refused (ICMP port unreachable): the address answers'
    case 'unreachable':
      return `unreachable (${outcome.code})`
    case 'timeout':
      return 'no answer'
  }
}

/** True when the answer is the one proxy-gate gives: its own address for an allowed name, NXDOMAIN for a denied one. */
function asProxyGate(outcome: DnsOutcome, verdict: 'allow' | 'deny', proxy: string): boolean {
  if (outcome.kind !== 'answer') return false
  if (verdict === 'deny') return outcome.rcode === NXDOMAIN
  return outcome.rcode === 0 && outcome.addresses.length === 1 && outcome.addresses[0] === proxy
}

const DNS_ADVICE: Record<ResolverKind, string> = {
  'proxy-gate': 'proxy-gate\'s DNS does not answer as its rules say: check its log ("docker logs" of the proxy-gate container) and that "sandbox up" ran with these rules',
  nameserver: 'a resolver the workloads use answers otherwise than proxy-gate: it resolves names itself or forwards them elsewhere, so DNS is a way out. Run workloads with proxy-gate as their only DNS server ("sandbox run" does) and recreate the network on an engine whose resolver forwards only to it',
  outside: 'DNS reaches an outside resolver directly: names the rules deny resolve, and data can leave inside queries. The network is not confined: recreate it and check the engine',
}

function dnsLine(d: ProbeReport['dns'][number], expect: Expect, source: Ip | undefined, proxy: string): VerifyLine {
  const verdict = expect(d.name, source)
  const probe = `DNS ${d.server} (${d.what}) ${d.name} (${verdict === 'allow' ? 'allowed' : 'denied'} by the rules)`
  const result = describe(d.outcome)
  const silent = d.outcome.kind === 'timeout' || d.outcome.kind === 'unreachable'
  const pass = d.kind === 'outside' ? silent : asProxyGate(d.outcome, verdict, proxy) || (d.kind === 'nameserver' && silent)
  if (pass) return { pass, probe, result: d.kind === 'nameserver' && silent ? `${result}: not a way out (but workloads that ask it get no answers)` : result }
  const wanted = verdict === 'allow' ? proxy : 'NXDOMAIN'
  const open = d.kind === 'outside' ? `DNS ${d.server} answers` : `DNS ${d.server} answers ${d.name} with ${result}, not ${wanted}`
  return { pass, probe, result: `${result} (proxy-gate answers ${wanted})`, open, advice: DNS_ADVICE[d.kind] }
}

function ipv6Line(local: LocalFacts): VerifyLine {
  const v6 = local.addresses.filter((a) => parseIp(a.split('%')[0] ?? '')?.family === 6)
  const probe = 'IPv6 in the workload'
  if (v6.length === 0) return { pass: true, probe, result: 'off (no address but loopback)' }
  return {
    pass: false,
    probe,
    result: `on: ${v6.join(', ')}`,
    open: `IPv6 on (${v6.join(', ')})`,
    advice: "the host's bridge has an IPv6 link-local address that workloads can reach (its services on [::] with it); the sandbox creates its network with IPv6 off: recreate it (\"sandbox down\", then \"up\")",
  }
}

/** One line per probe, in the order they were tried. */
export function judge(spec: ProbeSpec, report: ProbeReport, expect: Expect): VerifyLine[] {
  const source = report.local.addresses.map((a) => parseIp(a)).find((ip) => ip?.family === 4)
  return [ipv6Line(report.local), ...report.tcp.map(tcpLine), ...report.dns.map((d) => dnsLine(d, expect, source, spec.proxy))]
}

/** `ok   ...` / `FAIL ...`, a failure followed by what it means (once: the next failures that mean the same say so). */
export function formatLines(lines: readonly VerifyLine[]): string[] {
  const told = new Set<string>()
  return lines.map((line) => {
    const head = `${line.pass ? 'ok  ' : 'FAIL'} ${line.probe}: ${line.result}`
    if (line.advice === undefined) return head
    const seen = told.has(line.advice)
    told.add(line.advice)
    return seen ? `${head} (as above)` : `${head}\n       ${line.advice}`
  })
}
