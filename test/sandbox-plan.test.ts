// lib/wiring/sandbox.ts: the sandbox topology as docker arguments and as a Compose file, and the
// checks on --name and --subnet. (test/sandbox.test.ts runs the same plan on a real engine.)
import t from 'tap'
import { composeFile, deadGateway, downCommands, networkCommands, proxyCommands, runArgs, sandboxPlan, supportsIsolatedGateway, type SandboxPlan } from '../lib/wiring/sandbox.js'
import { runCli } from './helpers/cli.js'

function plan(overrides: Partial<Parameters<typeof sandboxPlan>[0]> = {}): SandboxPlan {
  const planned = sandboxPlan({ name: 'box', subnet: '10.250.0.0/24', image: 'proxy-gate:1', rulesDir: '/srv/rules', rulesFile: 'rules.json', user: '1000:1000', ...overrides })
  if (!planned.ok) throw new Error(planned.error)
  return planned.value
}

t.test('names and subnets are checked before anything runs', async (t) => {
  for (const name of ['', '-x', 'a b', 'x'.repeat(42), 'a/b']) t.notOk(sandboxPlan({ name, subnet: '10.250.0.0/24', image: 'i', rulesDir: '/r', rulesFile: 'f', user: undefined }).ok, `name ${JSON.stringify(name)}`)
  for (const subnet of ['10.250.0.0/30', 'fd00::/64', '10.250.0.1/24', 'nonsense']) t.notOk(sandboxPlan({ name: 'box', subnet, image: 'i', rulesDir: '/r', rulesFile: 'f', user: undefined }).ok, `subnet ${subnet}`)
  t.equal(plan({ subnet: '172.31.8.0/29' }).address, '172.31.8.2', 'proxy-gate takes the second address')
})

t.test('the internal network has no route to the host; proxy-gate runs locked down on both networks', async (t) => {
  const p = plan()
  const [internal, egress] = networkCommands(p)
  t.match(internal?.create.join(' '), /network create --driver bridge --internal --ipv6=false --subnet 10\.250\.0\.0\/24 -o com\.docker\.network\.bridge\.inhibit_ipv4=true --aux-address DefaultGatewayIPv4=10\.250\.0\.254 .* box$/)
  t.notMatch(internal?.create.join(' '), /gateway_mode/, 'no gateway mode for an engine that may not know it')
  t.notMatch(egress?.create.join(' '), /--internal/)
  t.equal(deadGateway(plan({ subnet: '172.31.8.0/29' })), '172.31.8.6', "the workloads' gateway is the subnet's last usable address, held by nothing")
  const isolated = networkCommands(p, { isolatedGateway: true })[0]?.create.join(' ')
  t.match(isolated, /-o com\.docker\.network\.bridge\.inhibit_ipv4=true -o com\.docker\.network\.bridge\.gateway_mode_ipv4=isolated /)
  t.notMatch(isolated, /aux-address/, 'an isolated network has no gateway to reserve')
  t.same(['20.10.24+dfsg1', '27.5.1', '28.0.0', '29.1.2', '', 'podman'].map(supportsIsolatedGateway), [false, false, true, true, false, false], 'gateway mode "isolated": Docker 28 and later')
  const [run, connect] = proxyCommands(p)
  const args = run?.join(' ') ?? ''
  for (const part of ['--network box', '--ip 10.250.0.2', '--read-only', '--cap-drop ALL', 'no-new-privileges', '--user 1000:1000', '/srv/rules:/etc/proxy-gate:ro', '--sandbox 10.250.0.2', '--rules /etc/proxy-gate/rules.json']) t.ok(args.includes(part), part)
  t.same(connect, ['network', 'connect', 'box-egress', 'box-proxy'])
  t.notOk(proxyCommands(plan({ user: undefined }))[0]?.includes('--user'), 'a root-owned rules file: the image user')
  t.same(downCommands(p).map((r) => r.name), ['box-proxy', 'box', 'box-egress'], 'the container goes before its networks')
})

t.test('a workload joins the internal network only, with DNS and both spellings of the proxy variables', async (t) => {
  const args = runArgs(plan(), ['-it', 'alpine', 'sh'])
  t.same(args.slice(0, 8), ['run', '--rm', '--network', 'box', '--dns', '10.250.0.2', '--cap-drop', 'NET_RAW'], 'no raw frames to the bridge')
  for (const v of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy']) t.ok(args.includes(`${v}=http://10.250.0.2:3128`), v)
  t.same(args.slice(-3), ['-it', 'alpine', 'sh'], 'the user arguments come last, as given')
})

t.test('the Compose file says the same: static address, dns, env, internal network without host route', async (t) => {
  const text = composeFile(plan())
  for (const part of ['ipv4_address: "10.250.0.2"', 'dns: ["10.250.0.2"]', 'HTTP_PROXY: "http://10.250.0.2:3128"', 'internal: true', '"com.docker.network.bridge.inhibit_ipv4": "true"', 'subnet: "10.250.0.0/24"', 'aux_addresses: { DefaultGatewayIPv4: "10.250.0.254" }', 'enable_ipv6: false', 'read_only: true', 'user: "1000:1000"', '"--sandbox", "10.250.0.2"']) {
    t.ok(text.includes(part), part)
  }
  const cli = await runCli(['sandbox', 'compose', '--name', 'box', '--subnet', '10.250.0.0/24'])
  t.equal(cli.code, 0)
  t.match(cli.stdout, /name: "box"/)
  const bad = await runCli(['sandbox', 'up', '--subnet', '10.250.0.0/31'])
  t.equal(bad.code, 2, 'a bad subnet is a usage error')
  t.match(bad.stderr, /--subnet/)
})
