// ci: floor line only: it drives a real container engine, whose confinement is the same under any Node
// The sandbox end to end on Podman (rootful, netavark), in the loopback-only namespace test/run.sh
// made: `sandbox build --engine podman` makes the image with no network, `up` makes an internal
// network whose bridge has no address of the host on it, and from a workload that `run` starts
// allowed names work (through the proxy variables and transparently) while nothing else does: denied
// names, the host's services (listeners on 0.0.0.0 and [::] in the namespace) through the subnet's
// first address, the egress gateway or IPv6, the metadata address, a public stand-in, and every DNS
// server but proxy-gate (aardvark-dns, the upstream resolver). `up` verifies before it says the
// sandbox is up and `verify` passes; with the subnet's first address put on the bridge by hand, the
// workload reaches the host service there (and nothing else), verify names that address and `up`
// refuses the network and removes it. `down` leaves nothing behind.
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { CLI_PATH } from './helpers/cli.js'
import { importNodeImage } from './helpers/docker.js'
import { startDns } from './helpers/dns.js'
import { startHttpsUpstream, startHttpUpstream } from './helpers/net.js'
import { holdPodmanLock, podmanMissing, startPodman, type Podman } from './helpers/podman.js'
import { probes, WORKLOAD, type Probe } from './helpers/sandbox-workload.js'

// stand-ins on the namespace's loopback; sandbox.test.ts (Docker) takes 11.22.33.44 and .46 on the same ports
const ORIGIN = '11.22.33.45'
// rootful Podman keeps one IPAM database for every network namespace (/run/containers/networks):
// the suites that CI runs side by side name their networks apart
const NAME = `pgpod${process.pid}`
const SUBNET = '10.252.0.0/24'
const FIRST = '10.252.0.1'
const BASE = 'local/node-base:pod'
// host services on every address of the namespace; sandbox.test.ts (Docker) listens on 7777
const HOST_V4 = 7787
const HOST_V6 = 7788
const IMAGE = 'proxy-gate:sandbox-pod'

/** `proxy-gate sandbox VERB --engine podman ARGS` with this Podman's storage, to its end. */
async function cli(podman: Podman, [verb, ...args]: readonly string[]): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, [CLI_PATH, 'sandbox', verb ?? '', '--engine', 'podman', ...args], { env: podman.env })
  const chunks: Buffer[] = []
  child.stdout.on('data', (c: Buffer) => chunks.push(c))
  child.stderr.on('data', (c: Buffer) => chunks.push(c))
  const [code] = (await once(child, 'close')) as [number | null]
  return { code, out: Buffer.concat(chunks).toString('utf8') }
}

/** A host service: a listener on every address of the namespace that counts who reached it. */
async function hostService(host: string, port: number): Promise<{ server: Server; reached: () => number }> {
  let reached = 0
  const server = createServer((socket) => {
    reached++
    socket.on('error', () => undefined) // a probe that resets is not the host's problem
    socket.end('host service\n')
  })
  server.listen({ host, port, ipv6Only: host === '::' })
  await once(server, 'listening')
  return { server, reached: () => reached }
}

/** `ip ARGS` in the namespace, as text (empty for a device that is not there). */
function ip(args: readonly string[]): string {
  return spawnSync('ip', args, { encoding: 'utf8' }).stdout.trim()
}

// building the image and starting containers takes longer than tap's 60 s per file on two cores
t.setTimeout(240_000)

t.test('sandbox on Podman: the only way out is proxy-gate', { skip: podmanMissing() }, async (t) => {
  const release = await holdPodmanLock()
  const podman = startPodman()
  t.teardown(() => {
    podman.stop()
    release()
  })
  const upstreamDns = await startDns({ 'allowed.test': { A: [ORIGIN] }, 'denied.test': { A: [ORIGIN] } }, { host: ORIGIN, port: 53 })
  t.teardown(() => upstreamDns.close())
  const answer = (req: { url?: string }, res: { end(text: string): void }) => res.end(`origin ${req.url ?? ''}`)
  const http = await startHttpUpstream(ORIGIN, (req, res) => answer(req, res), 80)
  const https = await startHttpsUpstream(ORIGIN, ['allowed.test'], (req, res) => answer(req, res), 443)
  t.teardown(() => Promise.all([http.close(), https.close()]))
  const v4 = await hostService('0.0.0.0', HOST_V4)
  const v6 = await hostService('::', HOST_V6)
  t.teardown(() => Promise.all([v4.server, v6.server].map((s) => new Promise((done) => s.close(done)))))

  importNodeImage(podman, BASE, 'podman')
  const built = await cli(podman, ['build', '--base', BASE, '--tag', IMAGE])
  t.equal(built.code, 0, `sandbox build: ${built.out.slice(-500)}`)
  t.match(built.out, `Successfully tagged localhost/${IMAGE}`, 'built with Podman (--network none)')

  const rulesDir = mkdtempSync(join(tmpdir(), 'pg-sandbox-rules-'))
  t.teardown(() => rmSync(rulesDir, { recursive: true, force: true }))
  chmodSync(rulesDir, 0o755)
  writeFileSync(join(rulesDir, 'rules.json'), JSON.stringify({ allow: ['allowed.test:80,443'], dns: { servers: [upstreamDns.server] } }), { mode: 0o644 })
  const upArgs = ['up', '--name', NAME, '--rules', join(rulesDir, 'rules.json'), '--image', IMAGE, '--subnet', SUBNET]
  const up = await cli(podman, upArgs)
  t.equal(up.code, 0, `sandbox up: ${up.out.slice(-500)}`)
  t.match(up.out, /verified: \d+ probes, no way out but proxy-gate\n[^]*is up on Podman 4\./, 'up verified the network before it said so, and names the engine its CLI drives')
  const again = await cli(podman, upArgs)
  t.equal(again.code, 0, `sandbox up twice is fine: ${again.out.slice(-300)}`)
  t.teardown(() => cli(podman, ['down', '--name', NAME]))

  const bridge = podman.podman(['network', 'inspect', '-f', '{{.NetworkInterface}}', NAME]).stdout.trim()
  t.match(bridge, /^podman\d+$/, 'the sandbox network has its own bridge')
  t.equal(ip(['-4', '-o', 'addr', 'show', 'dev', bridge]), '', 'no IPv4 address of the host on the sandbox bridge')
  const linkLocal = /inet6 (fe80::[0-9a-f:]+)/.exec(ip(['-6', '-o', 'addr', 'show', 'dev', bridge]))?.[1]
  t.ok(linkLocal, 'the bridge has an IPv6 link-local address, which a workload must not reach')
  const egressGateway = podman.podman(['network', 'inspect', '-f', '{{range .Subnets}}{{.Gateway}}{{end}}', `${NAME}-egress`]).stdout.trim()
  t.ok(egressGateway, 'the egress network has a gateway (an address of the host)')

  const closed = [`${FIRST}|${HOST_V4}`, `${egressGateway}|${HOST_V4}`, `${egressGateway}|53`, `${ORIGIN}|${HOST_V4}`, `10.0.0.1|${HOST_V4}`, '169.254.169.254|80', `${linkLocal ?? 'fe80::1'}%eth0|${HOST_V6}`]
  const silent = [FIRST, egressGateway, ORIGIN, `${linkLocal ?? 'fe80::1'}%eth0`]
  const workload = async (t: Test): Promise<Probe[]> => {
    const run = await cli(podman, ['run', '--name', NAME, '--', '-e', `CLOSED=${closed.join(',')}`, '-e', `SILENT_DNS=${silent.join(',')}`, BASE, 'node', '-e', WORKLOAD])
    t.equal(run.code, 0, 'the workload ran')
    const found = probes(run.out)
    t.equal(found.length, 10 + closed.length + silent.length, `every probe reported: ${run.out.slice(-800)}`)
    return found
  }
  const verify = async (): Promise<{ code: number | null; open: string[]; probes: { pass: boolean; probe: string; result: string }[] }> => {
    const run = await cli(podman, ['verify', '--name', NAME, '--json', '--probe-address', ORIGIN])
    return { ...(JSON.parse(run.out.slice(run.out.indexOf('{'))) as { open: string[]; probes: { pass: boolean; probe: string; result: string }[] }), code: run.code }
  }
  await t.test('probes from a workload', async (t) => {
    const found = await workload(t)
    for (const p of found) t.ok(p.ok, `${p.probe}: ${p.detail}`)
    if (found.some((p) => !p.ok)) t.comment(`proxy-gate's log:\n${podman.podman(['logs', '--tail', '40', `${NAME}-proxy`]).stdout}`)
  })
  t.equal(v4.reached() + v6.reached(), 0, 'the host services on 0.0.0.0 and [::] saw no connection')

  await t.test('verify: every probe passes, proxy-gate is the only resolver', async (t) => {
    const verified = await verify()
    t.same([verified.code, verified.open], [0, []], verified.probes.filter((p) => !p.pass).map((p) => `${p.probe}: ${p.result}`).join('\n'))
    const line = (pattern: RegExp) => verified.probes.find((p) => pattern.test(p.probe))
    t.match(line(/^IPv6 in the workload$/), { pass: true, result: 'off (no address but loopback)' })
    t.match(line(/^TCP 10\.252\.0\.1:22 /), { pass: true }, "the subnet's first address is probed")
    t.match(line(/^DNS 11\.22\.33\.45 .* allowed\.test /), { pass: true }, 'the upstream resolver, which answers every name, is out of reach')
    t.notOk(verified.probes.some((p) => /^DNS /.test(p.probe) && !/^DNS (10\.252\.0\.2|11\.22\.33\.45) /.test(p.probe)), 'no resolver in the workload but proxy-gate')
  })
  t.equal(upstreamDns.queries('denied.test'), 0, 'the upstream resolver never saw the denied name')
  t.ok(upstreamDns.queries('allowed.test') > 0, 'proxy-gate resolved the allowed name through its own resolver')

  const exit = await cli(podman, ['run', '--name', NAME, '--', BASE, 'node', '-e', 'process.exit(7)'])
  t.equal(exit.code, 7, 'sandbox run passes the exit code back')
  const logs = podman.podman(['logs', `${NAME}-proxy`])
  const log = (logs.stdout + logs.stderr).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
  t.ok(log.some((l) => l.message === 'decision' && l.target === 'denied.test:80' && l.decision === 'deny'), "the proxied denial is in proxy-gate's log")
  t.ok(log.some((l) => l.message === 'dns' && l.name === 'denied.test' && l.answer === 'deny'), 'so is the DNS query it refused')

  const down = await cli(podman, ['down', '--name', NAME])
  t.equal(down.code, 0, `sandbox down: ${down.out.slice(-300)}`)
  t.equal(podman.podman(['ps', '-aq']).stdout.trim(), '', 'no container left')
  t.equal(podman.podman(['network', 'ls', '--filter', `label=proxy-gate.sandbox=${NAME}`, '-q']).stdout.trim(), '', 'no sandbox network left')
  t.equal(ip(['-o', 'link', 'show', 'dev', bridge]), '', 'and no bridge')

  await t.test("the subnet's first address on the bridge: the workload reaches that address only, verify names it, up refuses the network and removes it", async (t) => {
    const again = await cli(podman, upArgs)
    t.equal(again.code, 0, `up once more: ${again.out.slice(-300)}`)
    const bridgeNow = podman.podman(['network', 'inspect', '-f', '{{.NetworkInterface}}', NAME]).stdout.trim()
    // Podman deletes a bridge that has no port left, with whatever address it had: a port of the test's
    // own keeps this one (and the address put on it) while up replaces the proxy-gate container
    const keep = `pgkeep${process.pid}`
    t.teardown(() => {
      for (const device of [keep, bridgeNow]) spawnSync('ip', ['link', 'del', device], { stdio: 'ignore' })
    })
    for (const args of [['link', 'add', keep, 'type', 'veth', 'peer', 'name', `${keep}p`], ['link', 'set', keep, 'master', bridgeNow], ['addr', 'add', `${FIRST}/24`, 'dev', bridgeNow]]) {
      const done = spawnSync('ip', args, { encoding: 'utf8' })
      t.equal(done.status, 0, `ip ${args.join(' ')}: ${done.stderr}`)
    }
    const found = await workload(t)
    t.match(found.find((p) => p.probe === `direct ${FIRST} port ${HOST_V4}`), { ok: false, detail: 'connected' }, 'the host service is now reachable through that address')
    t.ok(found.filter((p) => p.probe !== `direct ${FIRST} port ${HOST_V4}`).every((p) => p.ok), 'and nothing else: the workload has no route out of the subnet')
    const reached = v4.reached()
    const verified = await verify()
    t.equal(verified.code, 1, 'verify: a path is open')
    t.same(verified.open, [`${FIRST}:22 reachable`, `${FIRST}:53 reachable`, `${FIRST}:80 reachable`, `${FIRST}:443 reachable`], 'naming the address and nothing else')
    const refused = await cli(podman, upArgs)
    t.equal(refused.code, 1, 'up refuses such a network')
    t.match(refused.out, /NOT CONFINED: 4 open paths: 10\.252\.0\.1:22 reachable/)
    t.notOk(refused.out.includes('is up on'), 'and never says it is up')
    t.equal(podman.podman(['ps', '-aq']).stdout.trim(), '', 'no container left')
    t.equal(podman.podman(['network', 'ls', '--filter', `label=proxy-gate.sandbox=${NAME}`, '-q']).stdout.trim(), '', 'no sandbox network left for run to use')
    t.equal(v4.reached(), reached, "verify's probes never touch the host service's port")
  })
})
