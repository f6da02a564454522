// lib/wiring/sandbox.ts and engine.ts: the sandbox topology as engine arguments, in each engine's
// words, and the checks on --name and --subnet. (test/sandbox.test.ts and sandbox-podman.test.ts
// run the same plan on real engines; the Compose file has its own test.)
import t from 'tap'
import { construction, internalNetworkArgs, podmanNetworkProblems, supportsIsolatedGateway } from '../lib/wiring/engine.js'
import { downCommands, networkCommands, proxyCommands, runArgs, sandboxPlan, type SandboxPlan } from '../lib/wiring/sandbox.js'
import { parseCidr, type Cidr } from '../lib/policy/ip.js'
import { parseSandbox, sandboxSocksListen } from '../lib/rules/sandbox.js'
import { runCli } from './helpers/cli.js'

function plan(overrides: Partial<Parameters<typeof sandboxPlan>[0]> = {}): SandboxPlan {
  const planned = sandboxPlan({ name: 'box', subnet: '10.250.0.0/24', image: 'proxy-gate:1', rulesDir: '/srv/rules', rulesFile: 'rules.json', user: '1000:1000', engine: 'docker', engineVersion: '20.10.24+dfsg1', ...overrides })
  if (!planned.ok) throw new Error(planned.error)
  return planned.value
}

function cidr(text: string): Cidr {
  const parsed = parseCidr(text)
  if (typeof parsed === 'string') throw new Error(parsed)
  return parsed
}

t.test('names and subnets are checked before anything runs', async (t) => {
  const base = { image: 'i', rulesDir: '/r', rulesFile: 'f', user: undefined, engine: 'docker', engineVersion: undefined } as const
  for (const name of ['', '-x', 'a b', 'x'.repeat(42), 'a/b']) t.notOk(sandboxPlan({ ...base, name, subnet: '10.250.0.0/24' }).ok, `name ${JSON.stringify(name)}`)
  for (const subnet of ['10.250.0.0/30', 'fd00::/64', '10.250.0.1/24', 'nonsense']) t.notOk(sandboxPlan({ ...base, name: 'box', subnet }).ok, `subnet ${subnet}`)
  t.equal(plan({ subnet: '172.31.8.0/29' }).address, '172.31.8.2', 'proxy-gate takes the second address')
})

t.test('Docker: the internal network has no route to the host; proxy-gate runs locked down on both networks', async (t) => {
  const p = plan()
  const [internal, egress] = networkCommands(p)
  t.match(internal?.create.join(' '), /network create --driver bridge --internal --ipv6=false --subnet 10\.250\.0\.0\/24 -o com\.docker\.network\.bridge\.inhibit_ipv4=true --aux-address DefaultGatewayIPv4=10\.250\.0\.254 .* box$/)
  t.notMatch(internal?.create.join(' '), /gateway_mode/, 'no gateway mode for an engine that may not know it')
  t.notMatch(egress?.create.join(' '), /--internal/)
  t.same(construction('docker', cidr('172.31.8.0/29'), undefined).auxAddresses, { DefaultGatewayIPv4: '172.31.8.6' }, "the workloads' gateway is the subnet's last usable address, held by nothing")
  const isolated = networkCommands(plan({ engineVersion: '28.0.1' }))[0]?.create.join(' ')
  t.match(isolated, /-o com\.docker\.network\.bridge\.inhibit_ipv4=true -o com\.docker\.network\.bridge\.gateway_mode_ipv4=isolated /)
  t.notMatch(isolated, /aux-address/, 'an isolated network has no gateway to reserve')
  t.same(['20.10.24+dfsg1', '27.5.1', '28.0.0', '29.1.2', '', 'podman'].map(supportsIsolatedGateway), [false, false, true, true, false, false], 'gateway mode "isolated": Docker 28 and later')
  const [run, connect] = proxyCommands(p)
  const args = run?.join(' ') ?? ''
  for (const part of ['--network box', '--ip 10.250.0.2', '--read-only', '--cap-drop ALL', 'no-new-privileges', '--user 1000:1000', '/srv/rules:/etc/proxy-gate:ro', '--sandbox 10.250.0.2', '--rules /etc/proxy-gate/rules.json']) t.ok(args.includes(part), part)
  t.notOk(args.includes('--sysctl'), 'Docker lets containers bind low ports by itself')
  t.same(connect, ['network', 'connect', 'box-egress', 'box-proxy'])
  t.notOk(proxyCommands(plan({ user: undefined }))[0]?.includes('--user'), 'a root-owned rules file: the image user')
  t.same(downCommands(p).map((r) => r.name), ['box-proxy', 'box', 'box-egress'], 'the container goes before its networks')
})

t.test('Podman: no DNS (and so no gateway address on the bridge), workloads from the upper half, no IPv6, no NET_RAW', async (t) => {
  const p = plan({ engine: 'podman', engineVersion: '4.3.1' })
  const [internal, egress] = networkCommands(p)
  t.same(egress?.create, ['network', 'create', '--driver', 'bridge', '--disable-dns', '--label', 'proxy-gate.sandbox=box', 'box-egress'], 'no aardvark-dns for the egress network either')
  t.same(internal?.create, ['network', 'create', '--driver', 'bridge', '--internal', '--ipv6=false', '--subnet', '10.250.0.0/24', '--disable-dns', '--ip-range', '10.250.0.128/25', '--label', 'proxy-gate.sandbox=box', 'box'])
  t.notMatch(internal?.create.join(' '), /inhibit_ipv4|aux-address/, "Podman refuses Docker's options")
  const [run] = proxyCommands(p)
  t.match(run?.join(' '), /--sysctl net\.ipv4\.ip_unprivileged_port_start=0/, 'proxy-gate may listen on 53, 80 and 443 without a capability')
  const work = runArgs(p, ['alpine'])
  t.match(work.join(' '), /--sysctl net\.ipv6\.conf\.eth0\.disable_ipv6=1 --cap-drop NET_RAW/)
  t.same(work.slice(-1), ['alpine'], 'the user arguments still come last')
  t.same(internalNetworkArgs(construction('podman', cidr('172.31.8.0/29'), '4.3.1')), ['--disable-dns', '--ip-range', '172.31.8.4/30'], 'the upper half of a small subnet')
  t.same(internalNetworkArgs(construction('podman', cidr('10.0.0.0/8'), '4.3.1')), ['--disable-dns', '--ip-range', '10.128.0.0/9'])
})

t.test('an existing Podman network is used only when it was made the airtight way', async (t) => {
  const made = { internal: true, dns_enabled: false, ipv6_enabled: false, subnets: [{ subnet: '10.250.0.0/24', lease_range: { start_ip: '10.250.0.129', end_ip: '10.250.0.255' } }] }
  t.same(podmanNetworkProblems(JSON.stringify([made])), [])
  const leaky = podmanNetworkProblems(JSON.stringify([{ ...made, internal: false, dns_enabled: true, ipv6_enabled: true, subnets: [{ subnet: '10.250.0.0/24', gateway: '10.250.0.1' }] }]))
  t.equal(leaky.length, 4, leaky.join('; '))
  t.match(leaky.join('; '), /not internal.*DNS is on.*gateway 10\.250\.0\.1.*IPv6/)
  t.same(podmanNetworkProblems(''), ['podman network inspect said nothing readable'])
})

t.test('a workload joins the internal network only, with DNS and both spellings of the proxy variables', async (t) => {
  const args = runArgs(plan(), ['-it', 'alpine', 'sh'])
  t.same(args.slice(0, 8), ['run', '--rm', '--network', 'box', '--dns', '10.250.0.2', '--cap-drop', 'NET_RAW'], 'no raw frames to the bridge')
  for (const v of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy']) t.ok(args.includes(`${v}=http://10.250.0.2:3128`), v)
  for (const v of ['ALL_PROXY', 'all_proxy']) t.ok(args.includes(`${v}=socks5h://10.250.0.2:1080`), `${v}: SOCKS5 with the name sent (socks5h)`)
  for (const v of ['NO_PROXY', 'no_proxy']) t.ok(args.includes(`${v}=localhost,127.0.0.1`), v)
  t.same(args.slice(-3), ['-it', 'alpine', 'sh'], 'the user arguments come last, as given')
})

t.test("ALL_PROXY names the SOCKS5 listener that proxy-gate's `start --sandbox ADDRESS` opens", async (t) => {
  const p = plan({ subnet: '172.31.8.0/29' })
  t.same(proxyCommands(p)[0]?.slice(-2), ['--sandbox', '172.31.8.2'], 'the container is started with the sandbox address alone: every port is the default')
  const errors: Parameters<typeof parseSandbox>[0] = []
  const started = parseSandbox(errors, { address: p.address })
  t.same(errors, [])
  const listen = started && sandboxSocksListen(started)
  t.same(listen, { host: '172.31.8.2', port: 1080 }, "sandbox.socks's default")
  t.ok(runArgs(p, ['alpine']).includes(`ALL_PROXY=socks5h://${listen?.host ?? ''}:${String(listen?.port)}`), 'the workload is sent there')
  const off = parseSandbox(errors, { address: '10.0.0.2', socks: false })
  t.equal(off && sandboxSocksListen(off), undefined, '"socks": false: no listener')
  const v6 = parseSandbox(errors, { address: 'fd00:0::2', socks: 1081 })
  t.same(v6 && sandboxSocksListen(v6), { host: 'fd00::2', port: 1081 }, 'an IP literal, as "listen" holds it')
})

t.test('a bad subnet is a usage error before any engine is asked to do anything', async (t) => {
  for (const args of [['--subnet', '10.250.0.0/31'], ['--name', 'a b']]) {
    const bad = await runCli(['sandbox', 'up', ...args], { env: { PATH: '/nonexistent' } })
    t.equal(bad.code, 2, `${args.join(' ')}: a usage error`)
    t.match(bad.stderr, args[0] ?? '')
    t.notMatch(bad.stderr, /cannot run/, 'no engine was looked for')
  }
})
