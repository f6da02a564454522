// ci: floor line only: pure functions, no I/O: the same under any Node
// lib/wiring/sandbox-verify.ts and sandbox-facts.ts, lib/dns/query.ts: which probes `sandbox
// verify` makes from the engine's facts and the probe container's own, how each outcome is judged
// (any answer from an address but proxy-gate's is an open path; a resolver must answer as
// proxy-gate would or not at all), and the parsers of what the engine and /proc say.
// (test/sandbox.test.ts runs verify against a real engine.)
import t from 'tap'
import { encodeQuery, readResponse } from '../lib/dns/query.js'
import { parseConfig, type Config } from '../lib/rules/config.js'
import { containerFacts, ipv6RouteGateways, networkFacts, resolvNameservers, routeGateways, type NetworkFacts } from '../lib/wiring/sandbox-facts.js'
import { expectFromRules, formatLines, judge, probeNames, probeSpec, withLocal, type DnsOutcome, type ProbeReport, type ProbeSpec, type TcpOutcome } from '../lib/wiring/sandbox-verify.js'

function net(name: string, subnet: string, gateways: string[]): NetworkFacts {
  const facts = networkFacts([{ Name: name, IPAM: { Config: [{ Subnet: subnet }] } }])
  if (typeof facts === 'string') throw new Error(facts)
  return { ...facts, gateways }
}

function config(doc: unknown): Config {
  const parsed = parseConfig(doc)
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors))
  return parsed.value
}

const PROXY = '10.250.0.2'
const spec = probeSpec({
  proxy: PROXY,
  network: net('box', '10.250.0.0/24', ['10.250.0.254']),
  egress: net('box-egress', '172.18.0.0/16', ['172.18.0.1']),
  proxyOther: ['172.18.0.2'],
  probeAddresses: ['1.1.1.1', '2606:4700:4700::1111'],
  names: ['x.invalid', 'allowed.test'],
})

t.test('the probes: every host address on both networks, proxy-gate elsewhere, metadata, public addresses; never proxy-gate itself', async (t) => {
  const targets = new Set(spec.tcp.map((p) => `${p.kind} ${p.address}:${p.port}`))
  for (const port of [22, 53, 80, 443]) {
    t.ok(targets.has(`sandbox-host 10.250.0.1:${port}`), `the subnet's first address, port ${port}`)
    t.ok(targets.has(`sandbox-host 10.250.0.254:${port}`), `the gateway the engine reports, port ${port}`)
    t.ok(targets.has(`egress-host 172.18.0.1:${port}`), `the egress network's first address and gateway, port ${port}`)
    t.ok(targets.has(`proxy-other 172.18.0.2:${port}`), `proxy-gate's egress address, port ${port}`)
  }
  for (const target of ['metadata 169.254.169.254:80', 'metadata fd00:ec2::254:80', 'outside 1.1.1.1:443', 'outside 2606:4700:4700::1111:53']) t.ok(targets.has(target), target)
  t.equal(spec.tcp.filter((p) => p.address === '172.18.0.1').length, 4, 'an address that is both first address and gateway is probed once per port')
  const withSelf = probeSpec({ proxy: PROXY, network: net('box', '10.250.0.0/24', [PROXY]), egress: net('e', '172.18.0.0/16', []), proxyOther: [], probeAddresses: [], names: [] })
  t.notOk(withSelf.tcp.some((p) => p.address === PROXY), "proxy-gate's own address is the way out, not a failure")
  t.same(spec.dns.map((d) => `${d.kind} ${d.server}`), [`proxy-gate ${PROXY}`, 'outside 1.1.1.1', 'outside 2606:4700:4700::1111'])
  t.ok(spec.timeoutMs <= 2000, 'short timeouts: verify takes a few seconds')
})

t.test("the probe container adds its own routes' gateways and resolv.conf's resolvers", async (t) => {
  const full = withLocal(spec, { addresses: ['10.250.0.3'], gateways: ['10.250.0.254', '10.250.0.77', 'fe80::1%eth0'], nameservers: ['127.0.0.11', PROXY] })
  t.same(full.tcp.filter((p) => p.kind === 'route-gateway').map((p) => `${p.address}:${p.port}`), ['10.250.0.77:22', '10.250.0.77:53', '10.250.0.77:80', '10.250.0.77:443', 'fe80::1%eth0:22', 'fe80::1%eth0:53', 'fe80::1%eth0:80', 'fe80::1%eth0:443'], 'new gateways only')
  t.same(full.dns.filter((d) => d.kind === 'nameserver').map((d) => d.server), ['127.0.0.11'], "proxy-gate's address is already probed as proxy-gate")
})

type Tcp = ProbeReport['tcp'][number]
type Dns = ProbeReport['dns'][number]

function tcpResult(address: string, port: number, outcome: TcpOutcome, code?: string): Tcp {
  const probe = spec.tcp.find((p) => p.address === address && p.port === port)
  if (!probe) throw new Error(`no probe ${address}:${port}`)
  return { ...probe, outcome, code }
}

function dnsResult(kind: Dns['kind'], server: string, name: string, outcome: DnsOutcome): Dns {
  return { kind, server, what: 'w', name, outcome }
}

const rules = config({ allow: ['allowed.test:443'] })
const expect = expectFromRules(rules.policies, { mode: rules.mode, self: [], tls: rules.tls })
const local = { addresses: ['10.250.0.3'], gateways: [], nameservers: ['127.0.0.11'] }

function lines(report: Partial<ProbeReport>, probeSpecUsed: ProbeSpec = spec) {
  return judge(probeSpecUsed, { local, tcp: [], dns: [], ...report }, expect)
}

t.test('TCP: a connection or a refusal is an open path, named; unreachable or silence passes', async (t) => {
  const [, refused, connected, unreachable, silent, reset] = lines({
    tcp: [tcpResult('10.250.0.1', 22, 'refused'), tcpResult('1.1.1.1', 443, 'connected'), tcpResult('172.18.0.1', 80, 'unreachable', 'EHOSTUNREACH'), tcpResult('169.254.169.254', 80, 'timeout'), tcpResult('172.18.0.2', 53, 'reset')],
  })
  t.same([refused?.pass, refused?.open], [false, '10.250.0.1:22 reachable'], 'an RST: the address answers')
  t.match(refused?.advice, /host has this address on the sandbox network/)
  t.same([connected?.pass, connected?.open], [false, '1.1.1.1:443 reachable'])
  t.match(connected?.advice, /internet without proxy-gate/)
  t.same([unreachable?.pass, unreachable?.result], [true, 'unreachable (EHOSTUNREACH)'])
  t.same([silent?.pass, silent?.result], [true, 'no answer'])
  t.equal(reset?.pass, false, 'a reset is an answer too')
  t.equal(lines({ tcp: [tcpResult('2606:4700:4700::1111', 443, 'connected')] })[1]?.open, '[2606:4700:4700::1111]:443 reachable', 'IPv6 in brackets')
})

t.test('DNS: proxy-gate answers as its rules say; another resolver must answer the same or not at all; an outside one not at all', async (t) => {
  const proxyAnswer: DnsOutcome = { kind: 'answer', rcode: 0, addresses: [PROXY] }
  const nx: DnsOutcome = { kind: 'answer', rcode: 3, addresses: [] }
  const real: DnsOutcome = { kind: 'answer', rcode: 0, addresses: ['11.22.33.44'] }
  const judged = lines({
    dns: [
      dnsResult('proxy-gate', PROXY, 'allowed.test', proxyAnswer),
      dnsResult('proxy-gate', PROXY, 'x.invalid', nx),
      dnsResult('nameserver', '127.0.0.11', 'allowed.test', proxyAnswer),
      dnsResult('nameserver', '127.0.0.11', 'x.invalid', nx),
      dnsResult('nameserver', '10.250.0.1', 'allowed.test', real),
      dnsResult('nameserver', '10.250.0.1', 'x.invalid', nx),
      dnsResult('nameserver', '10.250.0.9', 'allowed.test', { kind: 'timeout' }),
      dnsResult('outside', '1.1.1.1', 'x.invalid', nx),
      dnsResult('outside', '1.1.1.1', 'allowed.test', { kind: 'refused' }),
      dnsResult('outside', '2606:4700:4700::1111', 'x.invalid', { kind: 'unreachable', code: 'ENETUNREACH' }),
      dnsResult('proxy-gate', PROXY, 'x.invalid', real),
    ],
  }).slice(1)
  t.same(judged.map((l) => l.pass), [true, true, true, true, false, true, true, false, false, true, false])
  t.match(judged[2]?.probe, /allowed\.test \(allowed by the rules\)/)
  t.equal(judged[4]?.open, 'DNS 10.250.0.1 answers allowed.test with 11.22.33.44, not 10.250.0.2', 'a forwarder that resolves for itself is told apart by the allowed name')
  t.match(judged[4]?.advice, /forwards them elsewhere/)
  t.match(judged[6]?.result, /not a way out/, 'a resolver that never answers is no way out')
  t.equal(judged[7]?.open, 'DNS 1.1.1.1 answers', 'an outside resolver answering at all (even NXDOMAIN) is a way out')
  t.equal(judged[8]?.pass, false, 'so is an ICMP refusal from it: the address is reachable')
  t.match(judged[10]?.advice, /proxy-gate's DNS does not answer as its rules say/)
})

t.test('report mode: proxy-gate answers every name with its address, and that is what is expected', async (t) => {
  const report = config({ mode: 'report', allow: ['allowed.test:443'] })
  const expectReport = expectFromRules(report.policies, { mode: report.mode, self: [], tls: report.tls })
  t.equal(expectReport('x.invalid', undefined), 'allow')
  t.equal(expect('x.invalid', undefined), 'deny')
})

t.test('IPv6 in the workload: off passes; any address but loopback is a failure', async (t) => {
  t.same(lines({})[0], { pass: true, probe: 'IPv6 in the workload', result: 'off (no address but loopback)' })
  const on = judge(spec, { local: { ...local, addresses: ['10.250.0.3', 'fe80::42:aff:fefa:3%eth0'] }, tcp: [], dns: [] }, expect)[0]
  t.equal(on?.pass, false)
  t.equal(on?.open, 'IPv6 on (fe80::42:aff:fefa:3%eth0)')
  t.match(on?.advice, /link-local/)
})

t.test('the names asked: one no rule allows, and one each policy allows (wildcards get a label)', async (t) => {
  const c = config({ allow: ['*.example.com:443', 'api.test:443', '10.0.0.0/8:443'], policies: { ci: { allow: ['ci.test:443'], deny: [] } }, clients: [{ source: '10.9.0.0/16', policy: 'ci' }] })
  const ctx = { mode: c.mode, self: [], tls: c.tls }
  t.same(probeNames(c.policies, ctx, 'abcd'), ['proxy-gate-verify-abcd.invalid', 'proxy-gate-verify.example.com', 'ci.test'])
  const allowNothing = config({ allow: ['10.0.0.0/8:443'] })
  t.same(probeNames(allowNothing.policies, ctx, 'x'), ['proxy-gate-verify-x.invalid'], 'rules without names: only the denied one')
  const byClient = expectFromRules(c.policies, ctx)
  t.equal(byClient('ci.test', { family: 4, value: (10n << 24n) | (9n << 16n) | 5n }), 'allow', "a workload in the ci clients' range gets ci's answers")
  t.equal(byClient('ci.test', undefined), 'deny')
})

t.test('the lines: a failure says what it means once, later ones that mean the same say "as above"', async (t) => {
  const text = formatLines(lines({ tcp: [tcpResult('10.250.0.1', 22, 'refused'), tcpResult('10.250.0.1', 80, 'refused'), tcpResult('1.1.1.1', 53, 'timeout')] }))
  t.match(text[1], /^FAIL TCP 10\.250\.0\.1:22 \(the host's side of box\): reachable: refused.*\n {7}the host has this address/s)
  t.match(text[2], /^FAIL TCP 10\.250\.0\.1:80 .*\(as above\)$/)
  t.match(text[3], /^ok {3}TCP 1\.1\.1\.1:53 \(a public address\): no answer$/)
})

t.test("the engine's facts: Docker's and Podman's inspect output, /proc's routes, resolv.conf", async (t) => {
  const docker = networkFacts([{ Name: 'box', IPAM: { Config: [{ Subnet: '10.250.0.0/24', Gateway: '10.250.0.1', AuxiliaryAddresses: { DefaultGatewayIPv4: '10.250.0.254' } }] } }])
  t.match(docker, { name: 'box', gateways: ['10.250.0.1', '10.250.0.254'] })
  const podman = networkFacts([{ name: 'box', subnets: [{ subnet: '10.89.0.0/24', gateway: '10.89.0.1' }] }])
  t.match(podman, { name: 'box', gateways: ['10.89.0.1'] })
  t.type(networkFacts([]), 'string', 'no network: a reason')
  const c = containerFacts([
    {
      Image: 'sha256:abc',
      State: { Running: true },
      Args: ['start', '--rules', '/etc/proxy-gate/rules.json'],
      Mounts: [{ Source: '/home/me/box', Destination: '/etc/proxy-gate' }],
      NetworkSettings: { Networks: { box: { IPAddress: '10.250.0.2' }, 'box-egress': { IPAddress: '172.18.0.2', GlobalIPv6Address: 'fd00::2' } } },
    },
  ])
  if (typeof c === 'string') throw new Error(c)
  t.same([c.image, c.running, c.rulesFile], ['sha256:abc', true, '/home/me/box/rules.json'], "the rules file's host path, through the mount")
  t.same(c.addresses.get('box-egress'), ['172.18.0.2', 'fd00::2'])
  const route = 'Iface\tDestination\tGateway \tFlags\neth0\t00000000\tFE00FA0A\t0003\neth0\t0000FA0A\t00000000\t0001\n'
  t.same(routeGateways(route), ['10.250.0.254'], 'little-endian hex; a link route has none')
  const route6 = '00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\nfe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n'
  t.same(ipv6RouteGateways(route6), ['fe80::1%eth0'], 'a link-local next hop keeps its interface')
  t.same(resolvNameservers('# c\nnameserver 127.0.0.11\nnameserver fe80::1%eth0\noptions ndots:0\nnameserver  10.0.0.1 \n'), ['127.0.0.11', 'fe80::1', '10.0.0.1'])
})

t.test('the DNS client: a query for A, and the rcode and addresses of a response (compressed names skipped)', async (t) => {
  const query = encodeQuery(0x1234, 'allowed.test')
  t.same([...query.subarray(0, 6)], [0x12, 0x34, 0x01, 0x00, 0, 1], 'id, RD, one question')
  t.equal(query.subarray(12).toString('latin1'), '\x07allowed\x04test\x00\x00\x01\x00\x01')
  const answer = Buffer.concat([Buffer.from([0x12, 0x34, 0x85, 0x00, 0, 1, 0, 1, 0, 0, 0, 0]), query.subarray(12), Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 250, 0, 2])])
  t.same(readResponse(answer, 0x1234), { rcode: 0, addresses: ['10.250.0.2'] })
  const nx = Buffer.concat([Buffer.from([0x12, 0x34, 0x85, 0x03, 0, 1, 0, 0, 0, 0, 0, 0]), query.subarray(12)])
  t.same(readResponse(nx, 0x1234), { rcode: 3, addresses: [] })
  t.equal(readResponse(nx, 0x4321), undefined, 'another id: not the answer')
  t.equal(readResponse(query, 0x1234), undefined, 'a query is no answer')
  t.equal(readResponse(answer.subarray(0, answer.length - 2), 0x1234), undefined, 'cut short')
})
