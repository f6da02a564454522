// ci: floor line only: pure functions, no I/O: the same under any Node
// The second wall matches the first: the egress NetworkPolicy of proxy-gate's pods (deploy/kubernetes,
// rendered by kubectl) excludes every range the address guard refuses (lib/policy/ip.ts's own table,
// metadata addresses included) and nothing the guard lets through, in the form Kubernetes accepts.
import t from 'tap'
import { SPECIAL_RANGES, cidrWithin, formatCidr, formatIp, isSingleAddress, parseCidr, parseIp, type Cidr } from '../lib/policy/ip.js'
import { BASE, KUBECTL_MISSING, one, render, type Peer, type PolicySpec } from './helpers/kubernetes.js'

/** The first part of `range` (a whole CIDR) that none of `by` holds, or undefined when they hold all of it. */
function uncovered(range: Cidr, by: readonly Cidr[]): Cidr | undefined {
  if (by.some((c) => cidrWithin(range, c))) return undefined
  // two ranges are nested or apart: when none lies inside this one either, no address of it is held
  if (isSingleAddress(range) || !by.some((c) => cidrWithin(c, range))) return range
  const prefix = range.prefix + 1
  const upper = range.base | (1n << BigInt((range.family === 4 ? 32 : 128) - prefix))
  return uncovered({ ...range, prefix }, by) ?? uncovered({ ...range, base: upper, prefix }, by)
}

const REFUSED = SPECIAL_RANGES.map((r) => r.cidr)
const base = KUBECTL_MISSING ? [] : render(BASE)

const policy = (): PolicySpec => one(base, 'NetworkPolicy', 'proxy-gate-egress').spec

/** The peers of the first egress rule: the address blocks. */
const addressBlocks = (): readonly Peer[] => policy().egress?.[0]?.to ?? []

/** A CIDR from the manifest, which must parse. */
function cidrOf(text: string): Cidr {
  const cidr = parseCidr(text)
  if (typeof cidr === 'string') throw new Error(`${text}: ${cidr}`)
  return cidr
}

/** The except entries of every address block, parsed. */
const excepts = (): Cidr[] => addressBlocks().flatMap((p) => (p.ipBlock?.except ?? []).map(cidrOf))

t.test('proxy-gate may reach every port of all addresses but the excepted ones, and cluster DNS', { skip: KUBECTL_MISSING }, async (t) => {
  const { podSelector, policyTypes, egress = [] } = policy()
  t.same(podSelector.matchLabels, one(base, 'Deployment', 'proxy-gate').spec.template.metadata.labels)
  t.same(policyTypes, ['Egress'])
  const [addresses, dns, ...rest] = egress
  t.same(rest, [], 'no other way out')
  t.equal(addresses?.ports, undefined, 'the rules decide the ports')
  t.same(addresses?.to?.map((p) => Object.keys(p)), [['ipBlock'], ['ipBlock']])
  t.same(addresses?.to?.map((p) => p.ipBlock?.cidr), ['0.0.0.0/0', '::/0'])
  t.same(dns?.to, [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } }, podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } } }])
  t.same(dns?.ports, [{ port: 53, protocol: 'UDP' }, { port: 53, protocol: 'TCP' }])
})

t.test('every except entry is a canonical CIDR, strictly inside its block as Kubernetes requires', { skip: KUBECTL_MISSING }, async (t) => {
  for (const { ipBlock } of addressBlocks()) {
    const block = cidrOf(ipBlock?.cidr ?? '')
    for (const text of ipBlock?.except ?? []) {
      const cidr = cidrOf(text)
      // a lone address too: Kubernetes takes CIDRs only (a /32 or /128)
      t.equal(text, `${formatIp({ family: cidr.family, value: cidr.base })}/${cidr.prefix}`, `${text} is a canonical CIDR`)
      t.ok(cidrWithin(cidr, block) && cidr.prefix > block.prefix, `${text} is a strict subset of ${formatCidr(block)}`)
    }
  }
})

t.test('every range the guard refuses is excepted, IPv4 and IPv6', { skip: KUBECTL_MISSING }, async (t) => {
  const except = excepts()
  t.ok(SPECIAL_RANGES.some((r) => r.kind === 'metadata') && SPECIAL_RANGES.some((r) => r.cidr.family === 6), 'the guard table, metadata and IPv6 included')
  for (const range of SPECIAL_RANGES) {
    const gap = uncovered(range.cidr, except)
    t.notOk(gap, `${formatCidr(range.cidr)} (${range.label})${gap ? `: ${formatCidr(gap)} is let through` : ''}`)
  }
  // IPv4-mapped addresses are IPv4 to the guard, and IPv4 packets on the wire: the IPv4 excepts judge
  // them. No IPv6 packet carries one, and the range is excepted too (inside ::/8).
  t.equal(parseIp('::ffff:10.0.0.1')?.family, 4, 'the guard reads ::ffff:10.0.0.1 as 10.0.0.1')
  t.notOk(uncovered({ family: 6, base: 0xffffn << 32n, prefix: 96 }, except), '::ffff:0:0/96 is excepted')
})

t.test('every except entry holds only addresses the guard refuses', { skip: KUBECTL_MISSING }, async (t) => {
  const except = excepts()
  t.ok(except.length > 0)
  for (const cidr of except) {
    const gap = uncovered(cidr, REFUSED)
    t.notOk(gap, `${formatCidr(cidr)}${gap ? `: the guard lets ${formatCidr(gap)} through` : ''}`)
  }
})

t.test('uncovered finds the part of a range that nothing holds', async (t) => {
  const show = (gap: Cidr | undefined) => (gap ? formatCidr(gap) : undefined)
  t.equal(show(uncovered(cidrOf('10.0.0.0/8'), [cidrOf('10.0.0.0/8')])), undefined)
  t.equal(show(uncovered(cidrOf('10.1.0.0/16'), [cidrOf('10.0.0.0/8')])), undefined, 'inside a larger one')
  t.equal(show(uncovered(cidrOf('224.0.0.0/3'), [cidrOf('224.0.0.0/4'), cidrOf('240.0.0.0/4')])), undefined, 'held by two halves')
  t.equal(show(uncovered(cidrOf('224.0.0.0/3'), [cidrOf('224.0.0.0/4')])), '240.0.0.0/4')
  t.equal(show(uncovered(cidrOf('10.0.0.0/8'), [cidrOf('10.0.0.0/9'), cidrOf('10.128.0.0/10'), cidrOf('10.255.255.0/24')])), '10.192.0.0/11')
  t.equal(show(uncovered(cidrOf('168.63.129.16'), [cidrOf('10.0.0.0/8')])), '168.63.129.16')
  t.equal(show(uncovered(cidrOf('2002::/16'), [cidrOf('0.0.0.0/0')])), '2002::/16', 'families apart')
  t.equal(show(uncovered(cidrOf('::/0'), [cidrOf('::/1')])), '8000::/1')
})
