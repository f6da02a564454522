// ci: floor line only: it drives a real container engine, whose confinement is the same under any Node
// The sandbox end to end with a real Docker engine: `proxy-gate sandbox build` makes the image with
// no network, `sandbox up` makes an internal network whose only way out is proxy-gate, and from a
// workload container started by `sandbox run` allowed names work (through the proxy variables and
// transparently), everything else fails: denied names, direct TCP anywhere, the metadata address,
// the host's own addresses, DNS for denied names (which never reaches the upstream resolver), and
// a fronted TLS server name. `sandbox up` verifies the network before it reports success, and
// `sandbox verify` passes: no host service (a listener on 0.0.0.0) is reachable through the
// subnet's first address or any host address, and the workloads' only resolvers are proxy-gate and
// the engine's forwarder to it. With the subnet's first address put on the bridge by hand, verify
// names it and `up` refuses the network and removes it. `sandbox down` leaves nothing behind.
import { spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { networkInterfaces, tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { CLI_PATH } from './helpers/cli.js'
import { engineCli, engineMissing, importNodeImage, startEngine, type Engine } from './helpers/docker.js'
import { startDns } from './helpers/dns.js'
import { startHttpsUpstream, startHttpUpstream } from './helpers/net.js'

const ORIGIN = '11.22.33.44' // a stand-in public address on the namespace's loopback
const UPSTREAM_DNS = '11.22.33.46'
const NAME = 'pgsbx'
const BASE = 'local/node-base:test'
const IMAGE = 'proxy-gate:sandbox-test'
const SUBNET = '10.251.0.0/24'
const FIRST = '10.251.0.1' // the subnet's first address: the host's side of the bridge, if it ever has one
const HOST_SERVICE = 7777 // a host service on every address of the namespace (0.0.0.0)
/** verify's public addresses: the stand-in origin, and the upstream resolver that answers every name */
const PROBE_ADDRESSES = ['--probe-address', ORIGIN, '--probe-address', UPSTREAM_DNS]

/** Every IPv4 address the host (this namespace) has, but loopback's 127/8. */
function hostAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flatMap((list) => list ?? [])
    .filter((a) => a.family === 'IPv4' && !a.address.startsWith('127.'))
    .map((a) => a.address)
}

interface Verified {
  readonly ok: boolean
  readonly code: number
  readonly open: string[]
  readonly probes: { pass: boolean; probe: string; result: string }[]
}

/** The proxy-gate command line with the engine's DOCKER_HOST, to its end. */
const cli = (engine: Engine, args: readonly string[]): ReturnType<typeof engineCli> => engineCli(CLI_PATH, engine, args)

/** Runs in the workload container: each probe prints one JSON line { probe, ok, detail }. */
const WORKLOAD = String.raw`
const http = require('http'), https = require('https'), net = require('net'), tls = require('tls'), dns = require('dns')
const proxy = new URL(process.env.HTTP_PROXY)
const [origin, proxyIp, hosts] = [process.env.ORIGIN, proxy.hostname, process.env.HOSTS.split(',')]
const report = (probe, ok, detail) => console.log(JSON.stringify({ probe, ok, detail: String(detail) }))
const body = (res) => new Promise((done) => { let b = ''; res.on('data', (d) => (b += d)); res.on('end', () => done(res.statusCode + ' ' + b.trim())) })
const get = (mod, url, options = {}) => new Promise((done) => {
  const opts = { timeout: 3000, ...options }
  const req = typeof url === 'string' ? mod.get(url, opts, (res) => body(res).then(done)) : mod.get({ ...url, ...opts }, (res) => body(res).then(done))
  req.on('error', (e) => done('error ' + e.code)); req.on('timeout', () => { req.destroy(); done('timeout') })
})
const tcp = (host, port) => new Promise((done) => {
  const s = net.connect({ host, port, timeout: 2000 })
  s.on('connect', () => { s.destroy(); done('connected') }); s.on('error', (e) => done('error ' + e.code)); s.on('timeout', () => { s.destroy(); done('timeout') })
})
const viaConnect = (name) => new Promise((done) => {
  const req = http.request({ host: proxyIp, port: proxy.port, method: 'CONNECT', path: name + ':443', timeout: 3000 })
  req.on('connect', (res, socket) => {
    if (res.statusCode !== 200) return done('CONNECT ' + res.statusCode)
    const t = tls.connect({ socket, servername: name, rejectUnauthorized: false }, () => {
      t.write('GET / HTTP/1.1\r\nHost: ' + name + '\r\nConnection: close\r\n\r\n')
    })
    let b = ''; t.on('data', (d) => (b += d)); t.on('end', () => done(b.split('\r\n')[0] + ' ' + b.split('\r\n\r\n')[1])); t.on('error', (e) => done('error ' + e.code))
  })
  req.on('error', (e) => done('error ' + e.code)); req.end()
})
const fronted = () => new Promise((done) => {
  const t = tls.connect({ host: proxyIp, port: 443, servername: 'evil.test', rejectUnauthorized: false, timeout: 3000 })
  t.on('secureConnect', () => { t.destroy(); done('handshake completed') }); t.on('error', (e) => done('error ' + e.code)); t.on('close', () => done('closed')); t.on('timeout', () => { t.destroy(); done('timeout') })
})
;(async () => {
  const viaProxy = await get(http, { host: proxyIp, port: proxy.port, path: 'http://allowed.test/proxy', headers: { host: 'allowed.test' } })
  report('http via proxy', viaProxy.startsWith('200 '), viaProxy)
  const connect = await viaConnect('allowed.test')
  report('https via proxy', connect.startsWith('HTTP/1.1 200'), connect)
  const denied = await get(http, { host: proxyIp, port: proxy.port, path: 'http://denied.test/', headers: { host: 'denied.test' } })
  report('denied via proxy', denied.startsWith('403 '), denied)
  const plain = await get(http, 'http://allowed.test/transparent')
  report('http transparent', plain.startsWith('200 '), plain)
  const secure = await get(https, 'https://allowed.test/transparent', { rejectUnauthorized: false })
  report('https transparent', secure.startsWith('200 '), secure)
  const lookup = await new Promise((done) => dns.lookup('denied.test', (e, a) => done(e ? e.code : a)))
  report('denied name does not resolve', lookup === 'ENOTFOUND', lookup)
  const allowedLookup = await new Promise((done) => dns.lookup('allowed.test', (e, a) => done(e ? e.code : a)))
  report('allowed name resolves to proxy-gate', allowedLookup === proxyIp, allowedLookup)
  const direct = [[origin, 80], [origin, 443], ['169.254.169.254', 80], ...hosts.map((h) => [h, Number(process.env.HOST_SERVICE)])]
  await Promise.all(direct.map(async ([host, port]) => {
    const r = await tcp(host, port)
    report('direct ' + host + ':' + port, r !== 'connected' && r !== 'error ECONNREFUSED', r)
  }))
  const nameservers = require('fs').readFileSync('/etc/resolv.conf', 'utf8').split('\n').filter((l) => l.startsWith('nameserver')).map((l) => l.split(/\s+/)[1])
  report('only proxy-gate (or the forwarder to it) as DNS server', nameservers.length > 0 && nameservers.every((n) => n === proxyIp || n === '127.0.0.11'), nameservers.join(' '))
  const front = await fronted()
  report('fronted server name', front !== 'handshake completed', front)
})()
`

// building the image and starting containers takes longer than tap's 60 s per file on two cores
t.setTimeout(240_000)

t.test('sandbox: the only way out is proxy-gate', { skip: engineMissing() }, async (t) => {
  const engine = await startEngine()
  t.teardown(() => engine.stop())
  const upstreamDns = await startDns({ 'allowed.test': { A: [ORIGIN] }, 'denied.test': { A: [ORIGIN] } }, { host: UPSTREAM_DNS, port: 53 })
  t.teardown(() => upstreamDns.close())
  const answer = (req: { url?: string }, res: { end(text: string): void }) => res.end(`origin ${req.url ?? ''}`)
  const http = await startHttpUpstream(ORIGIN, (req, res) => answer(req, res), 80)
  const https = await startHttpsUpstream(ORIGIN, ['allowed.test'], (req, res) => answer(req, res), 443)
  t.teardown(() => Promise.all([http.close(), https.close()]))
  let hostServiceHits = 0
  const hostService = createServer((socket) => {
    hostServiceHits++
    socket.on('error', () => undefined) // the probes close at once: a reset is expected
    socket.end('a host service\n')
  })
  hostService.listen(HOST_SERVICE, '0.0.0.0')
  await once(hostService, 'listening')
  t.teardown(() => hostService.close())

  importNodeImage(engine, BASE)
  const built = await cli(engine, ['sandbox', 'build', '--base', BASE, '--tag', IMAGE])
  t.equal(built.code, 0, `sandbox build: ${built.out.slice(-500)}`)
  t.match(built.out, `Successfully tagged ${IMAGE}`, 'built (with --network none, in a namespace that has no way out anyway)')

  // a rules folder as root's usually is (0755, 0644); sandbox up runs proxy-gate as the file's owner otherwise
  const rulesDir = mkdtempSync(join(tmpdir(), 'pg-sandbox-rules-'))
  t.teardown(() => rmSync(rulesDir, { recursive: true, force: true }))
  chmodSync(rulesDir, 0o755)
  writeFileSync(join(rulesDir, 'rules.json'), JSON.stringify({ allow: ['allowed.test:80,443'], dns: { servers: [upstreamDns.server] } }), { mode: 0o644 })
  const upArgs = ['sandbox', 'up', '--name', NAME, '--rules', join(rulesDir, 'rules.json'), '--image', IMAGE, '--subnet', SUBNET, ...PROBE_ADDRESSES]
  const up = await cli(engine, upArgs)
  t.equal(up.code, 0, `sandbox up: ${up.out.slice(-500)}`)
  t.match(up.out, /verified: \d+ probes, no way out but proxy-gate\n[^]*sandbox "pgsbx" is up/, 'up verified the network before it said so')
  const again = await cli(engine, upArgs)
  t.equal(again.code, 0, `sandbox up twice is fine: ${again.out.slice(-300)}`)
  t.teardown(() => cli(engine, ['sandbox', 'down', '--name', NAME]))

  const egressGateway = engine.docker(['network', 'inspect', '-f', '{{range .IPAM.Config}}{{.Gateway}}{{end}}', `${NAME}-egress`]).stdout.trim()
  /** Runs WORKLOAD in the sandbox; its probe lines. */
  const workload = async (t: Test, hosts: readonly string[]): Promise<{ probe: string; ok: boolean; detail: string }[]> => {
    const run = await cli(engine, ['sandbox', 'run', '--name', NAME, '--', '-e', `ORIGIN=${ORIGIN}`, '-e', `HOSTS=${hosts.join(',')}`, '-e', `HOST_SERVICE=${HOST_SERVICE}`, BASE, 'node', '-e', WORKLOAD])
    t.equal(run.code, 0, `the workload ran: ${run.out.slice(-300)}`)
    return run.out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { probe: string; ok: boolean; detail: string })
  }
  const verify = async (): Promise<Verified> => {
    const run = await cli(engine, ['sandbox', 'verify', '--name', NAME, '--json', ...PROBE_ADDRESSES])
    return { ...(JSON.parse(run.out.slice(run.out.indexOf('{'))) as Omit<Verified, 'code'>), code: run.code ?? -1 }
  }
  t.ok(egressGateway, 'the egress network has a gateway (an address of the Docker host)')
  await t.test('probes from a workload', async (t) => {
    const hosts = [...new Set([FIRST, egressGateway, ...hostAddresses()])]
    t.ok(hosts.includes('11.22.33.45') && hosts.includes('10.0.0.1'), `the host's addresses: ${hosts.join(' ')}`)
    const probes = await workload(t, hosts)
    t.equal(probes.length, 12 + hosts.length, `every probe reported (${probes.length})`)
    for (const p of probes) t.ok(p.ok, `${p.probe}: ${p.detail}`)
    if (probes.some((p) => !p.ok)) {
      const log = engine.docker(['logs', '--tail', '40', `${NAME}-proxy`])
      t.comment(`proxy-gate's log:\n${log.stdout}${log.stderr}`)
    }
  })
  t.equal(upstreamDns.queries('denied.test'), 0, 'the upstream resolver never saw the denied name')
  t.ok(upstreamDns.queries('allowed.test') > 0, 'proxy-gate resolved the allowed name through its own resolver')

  t.equal(hostServiceHits, 0, 'the host service on 0.0.0.0 was never reached')

  await t.test('verify: every probe passes, and the forwarder at 127.0.0.11 answers as proxy-gate does', async (t) => {
    const verified = await verify()
    t.same([verified.code, verified.ok, verified.open], [0, true, []], verified.probes.filter((p) => !p.pass).map((p) => `${p.probe}: ${p.result}`).join('\n'))
    const line = (pattern: RegExp) => verified.probes.find((p) => pattern.test(p.probe))
    t.match(line(/^IPv6 in the workload$/), { pass: true, result: 'off (no address but loopback)' })
    t.match(line(/^TCP 10\.251\.0\.1:22 /), { pass: true }, "the subnet's first address is probed")
    t.match(line(/^TCP 10\.251\.0\.254:22 /), { pass: true }, "so is the workloads' reserved gateway")
    t.match(line(/^DNS 127\.0\.0\.11 .* allowed\.test /), { pass: true, result: '10.251.0.2' }, "the engine's forwarder gives proxy-gate's answer")
    t.match(line(/^DNS 127\.0\.0\.11 .*\.invalid /), { pass: true, result: 'NXDOMAIN' })
    t.match(line(/^DNS 11\.22\.33\.46 .* allowed\.test /), { pass: true }, 'the upstream resolver, which answers every name, is out of reach')
  })

  const exit = await cli(engine, ['sandbox', 'run', '--name', NAME, '--', BASE, 'node', '-e', 'process.exit(7)'])
  t.equal(exit.code, 7, 'sandbox run passes the exit code back')
  const logs = engine.docker(['logs', `${NAME}-proxy`])
  const log = (logs.stdout + logs.stderr).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
  t.ok(log.some((l) => l.message === 'decision' && l.target === 'denied.test:80' && l.decision === 'deny'), 'the proxied denial is in proxy-gate\'s log')
  t.ok(log.some((l) => l.message === 'dns' && l.name === 'denied.test' && l.answer === 'deny'), 'so is the DNS query it refused')
  t.ok(log.some((l) => l.message === 'decision' && l.listener === 'transparent' && l.sni === 'evil.test' && l.decision === 'deny'), 'and the fronted TLS server name, refused by name')

  await t.test("the subnet's first address on the bridge: verify names it, up refuses the network and removes it", async (t) => {
    const bridge = `br-${engine.docker(['network', 'inspect', '-f', '{{.Id}}', NAME]).stdout.trim().slice(0, 12)}`
    const added = spawnSync('ip', ['addr', 'add', `${FIRST}/24`, 'dev', bridge], { encoding: 'utf8' })
    t.equal(added.status, 0, `ip addr add ${FIRST}/24 dev ${bridge}: ${added.stderr}`)
    const probes = await workload(t, [FIRST, '11.22.33.45', '10.0.0.1'])
    t.match(probes.find((p) => p.probe === `direct ${FIRST}:${HOST_SERVICE}`), { ok: false, detail: 'connected' }, 'the host service is now reachable through that address')
    t.match(probes.find((p) => p.probe === `direct 11.22.33.45:${HOST_SERVICE}`), { ok: true }, "but the host's other addresses are not: the workloads' gateway is held by nothing")
    hostServiceHits = 0
    const verified = await verify()
    t.equal(verified.code, 1, 'verify: a path is open')
    t.same(verified.open, [`${FIRST}:22 reachable`, `${FIRST}:53 reachable`, `${FIRST}:80 reachable`, `${FIRST}:443 reachable`], 'naming the address and nothing else')
    const refused = await cli(engine, upArgs)
    t.equal(refused.code, 1, 'up refuses such a network')
    t.match(refused.out, /NOT CONFINED: 4 open paths: 10\.251\.0\.1:22 reachable/)
    t.match(refused.out, /removing it \(the proxy-gate container and both networks\)/)
    t.notOk(refused.out.includes(`sandbox "${NAME}" is up`), 'and never says it is up')
    t.equal(engine.docker(['ps', '-aq']).stdout.trim(), '', 'no container left')
    t.equal(engine.docker(['network', 'ls', '--filter', `label=proxy-gate.sandbox=${NAME}`, '-q']).stdout.trim(), '', 'no sandbox network left for run to use')
    t.equal(hostServiceHits, 0, "verify's probes never touch the host service's port")
  })

  const unverified = await cli(engine, [...upArgs, '--no-verify'])
  t.equal(unverified.code, 0, `up --no-verify: ${unverified.out.slice(-300)}`)
  t.match(unverified.out, /WARNING: --no-verify: nothing has shown that proxy-gate is the only way out of "pgsbx"/, 'skipping the check is loud')
  t.notMatch(unverified.out, /^(ok|FAIL) /m, 'and nothing was probed')

  const down = await cli(engine, ['sandbox', 'down', '--name', NAME])
  t.equal(down.code, 0, `sandbox down: ${down.out.slice(-300)}`)
  t.equal(engine.docker(['ps', '-aq']).stdout.trim(), '', 'no container left')
  t.same(engine.docker(['network', 'ls', '--filter', `label=proxy-gate.sandbox=${NAME}`, '-q']).stdout.trim(), '', 'no sandbox network left')
})
