// The command line as a user runs it: dist/cli.js in its own process, real files, real sockets.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { runCli, startCli, type RunningCli } from './helpers/cli.js'
import { parseHosts } from '../lib/net/hosts.js'
import { formatIp } from '../lib/policy/ip.js'
import { startDns } from './helpers/dns.js'
import { tempDir, writeJson } from './helpers/files.js'
import { connectHead } from './helpers/http.js'
import { rawExchange, startHttpUpstream, statusOf } from './helpers/net.js'

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version

function rulesFile(rules: unknown): string {
  return writeJson(tempDir('cli'), 'rules.json', rules)
}

/** Replaces a file the way editors do: write a temp file, rename it over the original. */
function replaceFile(file: string, rules: unknown): void {
  writeFileSync(`${file}.tmp`, JSON.stringify(rules))
  renameSync(`${file}.tmp`, file)
}

/** `proxy-gate start ARGS` with JSON logs and an admin listener on a free port. */
function startWithAdmin(args: string[]): Promise<RunningCli> {
  const tokenFile = join(tempDir('token'), 'admin-token')
  return startCli(['start', '--log-format', 'json', '--admin-listen', '127.0.0.1:0', '--admin-token-file', tokenFile, ...args])
}

function openTunnel(port: number, target: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port })
    socket.once('data', (d) => (d.toString().startsWith('HTTP/1.1 200') ? resolve(socket) : reject(new Error(d.toString()))))
    socket.write(connectHead(target))
  })
}

t.test('--version and --help', async (t) => {
  const version = await runCli(['--version'])
  t.equal(version.stdout.trim(), VERSION)
  t.equal(version.code, 0)
  for (const command of ['start', 'check', 'validate']) {
    const help = await runCli([command, '--help'])
    t.equal(help.code, 0, `${command} --help exits 0`)
    t.match(help.stdout, new RegExp(`usage: proxy-gate ${command}`))
  }
  const main = await runCli(['--help'])
  t.match(main.stdout, /commands:/)
  t.match(main.stdout, /^ {2}init {7}write a starter rules\.json/m)
  const unknown = await runCli(['frobnicate'])
  t.equal(unknown.code, 2)
  t.match(unknown.stderr, /unknown command/)
  const badFlag = await runCli(['start', '--nope'])
  t.equal(badFlag.code, 2)
})

t.test('validate: the shipped rules.json is valid', async (t) => {
  const res = await runCli(['validate', '--rules', new URL('../rules.json', import.meta.url).pathname])
  t.equal(res.code, 0)
  t.match(res.stdout, /ok \(\d+ allow, 0 deny, 4 bypass\)/)
})

t.test('validate: every problem is listed with its place and why, exit 1', async (t) => {
  const file = rulesFile({ allow: ['good.example.com', '*', 'a*.b:443', 'x.test:70000'], dney: [] })
  const res = await runCli(['validate', '--rules', file])
  t.equal(res.code, 1)
  t.match(res.stderr, /4 problems/)
  t.match(res.stderr, /dney .*unknown key "dney"/)
  t.match(res.stderr, /allow\[1\] "\*"/)
  t.match(res.stderr, /allow\[2\] "a\*\.b:443": a wildcard is only allowed/)
  t.match(res.stderr, /allow\[3\] "x\.test:70000": bad port list/)
  const broken = rulesFile({})
  writeFileSync(broken, '{ "allow": [ "a.test", ] }')
  const json = await runCli(['validate', '--rules', broken])
  t.equal(json.code, 1)
  t.match(json.stderr, /not valid JSON/)
  const missing = await runCli(['validate', '--rules', '/nonexistent/rules.json'])
  t.equal(missing.code, 1)
  t.match(missing.stderr, /cannot read/)
})

t.test('validate: rules that limit methods or paths are valid, with a warning while there is no local CA', async (t) => {
  const file = rulesFile({ allow: [{ host: 'api.test', ports: [443], methods: ['GET'], paths: ['/x/**'] }] })
  const dir = tempDir('validate-ca')
  const without = await runCli(['validate', '--rules', file, '--dir', dir])
  t.equal(without.code, 0, without.stderr)
  t.match(without.stdout, /warning: allow\[0\] limits methods or paths, which needs the local CA .*"proxy-gate start" refuses these rules until "proxy-gate ca init"/)
  t.equal((await runCli(['ca', 'init', '--dir', dir])).code, 0)
  const withCa = await runCli(['validate', '--rules', file, '--dir', dir])
  t.equal(withCa.code, 0)
  t.notMatch(withCa.stdout, /warning/, 'with the CA there, no warning')
})

// reads the real /etc/hosts (never writes it); lib/net/hosts.ts is tested with temp files in resolve.test.ts
const localhost = existsSync('/etc/hosts') ? parseHosts(readFileSync('/etc/hosts', 'utf8')).get('localhost') : undefined
const NO_LOCALHOST = localhost?.[0] !== undefined && formatIp(localhost[0]) === '127.0.0.1' ? false : '/etc/hosts has no "127.0.0.1 localhost" line first'

t.test('check: without dns.servers, names in /etc/hosts resolve from it and still meet the guard', { skip: NO_LOCALHOST }, async (t) => {
  const allowed = await runCli(['check', 'localhost:8080', '--rules', rulesFile({ allow: ['localhost:8080', '127.0.0.1/32:8080'] })])
  t.equal(allowed.code, 0, allowed.stdout)
  t.match(allowed.stdout, /resolved: 127\.0\.0\.1.* \(from \/etc\/hosts\)/)
  t.match(allowed.stdout, /guard: +every address passed/)
  const guarded = await runCli(['check', 'localhost:8080', '--rules', rulesFile({ allow: ['localhost:8080'] })])
  t.equal(guarded.code, 1, guarded.stdout)
  t.match(guarded.stdout, /guard: +refused \(localhost resolves to 127\.0\.0\.1:8080, a loopback address/)
})

t.test('check: allow, deny with the fix, resolved addresses and the guard, errors', async (t) => {
  const dns = await startDns({ 'api.allowed.test': { A: ['127.0.0.1'] }, 'inside.allowed.test': { A: ['127.0.0.1'] } })
  t.teardown(() => dns.close())
  const file = rulesFile({
    allow: ['api.allowed.test:8443', '127.0.0.1:8443', 'inside.allowed.test:443'],
    dns: { servers: [dns.server], timeoutMs: 2000 },
  })
  const allowed = await runCli(['check', 'https://api.allowed.test:8443/x', '--rules', file])
  t.equal(allowed.code, 0, allowed.stdout)
  t.match(allowed.stdout, /resolved: 127\.0\.0\.1 \(from DNS\)/)
  t.match(allowed.stdout, /guard: +every address passed/)
  t.match(allowed.stdout, /decision: allow/)
  t.match(allowed.stdout, /rule: +allow\[0\] api\.allowed\.test:8443/)

  const guarded = await runCli(['check', 'inside.allowed.test:443', '--rules', file])
  t.equal(guarded.code, 1)
  t.match(guarded.stdout, /guard: +refused \(inside\.allowed\.test resolves to 127\.0\.0\.1:443, a loopback address/)

  const denied = await runCli(['check', 'evil.test:443', '--rules', file])
  t.equal(denied.code, 1)
  t.match(denied.stdout, /decision: deny/)
  t.match(denied.stdout, /fix: +add to "allow" in rules\.json: "evil\.test:443"/)
  t.equal(dns.queries('evil.test'), 0, 'a name no rule allows is never resolved')

  const plain = await runCli(['check', 'http://evil.test/', '--rules', file])
  t.match(plain.stdout, /target: +evil\.test:80/)

  const bad = await runCli(['check', '2130706433:443', '--rules', file])
  t.equal(bad.code, 2)
  t.match(bad.stderr, /not a canonical IPv4 address/)
  const nx = await runCli(['check', 'nx.allowed.test:443', '--rules', rulesFile({ allow: ['nx.allowed.test:443'], dns: { servers: [dns.server] } })])
  t.equal(nx.code, 2, 'a DNS failure is an error, not a verdict')
  t.match(nx.stdout, /error: +DNS: nx\.allowed\.test does not exist \(NXDOMAIN\)/)
})

t.test('start: refuses bad rules, open listeners without consent, and report mode off loopback', async (t) => {
  const bad = await runCli(['start', '--rules', rulesFile({ allow: ['*'] }), '--listen', '127.0.0.1:0'])
  t.equal(bad.code, 1)
  t.match(bad.stderr, /allow\[0\] "\*"/)
  t.match(bad.stderr, /did not start/)
  const open = await runCli(['start', '--rules', rulesFile({ allow: [] }), '--listen', '0.0.0.0:0'])
  t.equal(open.code, 1)
  t.match(open.stderr, /--insecure-open/)
  const report = await runCli(['start', '--rules', rulesFile({ allow: [] }), '--listen', '0.0.0.0:0', '--mode', 'report', '--insecure-open'])
  t.equal(report.code, 1)
  t.match(report.stderr, /report mode/)
})

t.test('start: serves, logs JSON decisions, exits 0 on SIGTERM', async (t) => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.close())
  const cli = await startWithAdmin(['--rules', rulesFile({ allow: [`127.0.0.1:${upstream.port}`] }), '--listen', '127.0.0.1:0'])
  const res = await rawExchange(cli.port, `GET http://127.0.0.1:${upstream.port}/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(res.text), 200)
  const decision = await cli.waitFor((l) => l.message === 'decision')
  t.match(decision, { decision: 'allow', method: 'GET', target: `127.0.0.1:${upstream.port}`, rule: `allow[0] 127.0.0.1:${upstream.port}`, mode: 'enforce' })
  cli.child.kill('SIGTERM')
  t.equal(await cli.exited, 0)
  t.ok(cli.lines.some((l) => l.message === 'stopped'))
})

t.test('reload: file change and SIGHUP swap rules, revoke tunnels, and a bad file keeps the old rules', async (t) => {
  const a = await startHttpUpstream()
  const b = await startHttpUpstream()
  const rules = (ports: number[]) => ({ allow: ports.map((p) => `127.0.0.1:${p}`), limits: { shutdownGraceMs: 500 } })
  const file = rulesFile(rules([a.port, b.port]))
  const cli = await startWithAdmin(['--rules', file, '--listen', '127.0.0.1:0'])
  t.teardown(async () => {
    cli.child.kill('SIGKILL')
    await a.close()
    await b.close()
  })
  const tunnelA = await openTunnel(cli.port, `127.0.0.1:${a.port}`)
  const tunnelB = await openTunnel(cli.port, `127.0.0.1:${b.port}`)
  const closedA = new Promise((resolve) => tunnelA.once('close', resolve))

  replaceFile(file, rules([b.port]))
  const reloaded = await cli.waitFor((l) => l.message === 'reloaded')
  t.match(reloaded, { trigger: 'file changed', closed: 1, kept: 1 })
  await closedA
  const revoked = await cli.waitFor((l) => l.message === 'revoked')
  t.match(revoked, { target: `127.0.0.1:${a.port}`, reason: 'address-prohibited' })
  t.notOk(tunnelB.destroyed, 'the tunnel the new rules still allow stays open')
  tunnelB.write(`GET /still HTTP/1.1\r\nHost: b\r\n\r\n`)
  const reply = await new Promise<string>((resolve) => tunnelB.once('data', (d) => resolve(d.toString())))
  t.match(reply, /hello GET \/still/)

  writeFileSync(file, '{ "allow": [ "*" ] }')
  const failed = await cli.waitFor((l) => l.message === 'reload failed: keeping the previous rules')
  t.match(JSON.stringify(failed.errors), /allow\[0\]/)
  const still = await rawExchange(cli.port, `GET http://127.0.0.1:${b.port}/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(still.text), 200, 'old rules still in force after a bad reload')
  const gone = await rawExchange(cli.port, `GET http://127.0.0.1:${a.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(gone.text), 403)

  writeFileSync(file, JSON.stringify(rules([a.port, b.port])))
  cli.child.kill('SIGHUP')
  await cli.waitFor((l) => l.message === 'reloaded' && l.trigger === 'SIGHUP')
  const back = await rawExchange(cli.port, `GET http://127.0.0.1:${a.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(back.text), 200)

  tunnelB.destroy()
  cli.child.kill('SIGTERM')
  t.equal(await cli.exited, 0)
})

t.test('start: rules that limit methods or paths need the local CA', async (t) => {
  const emptyDir = tempDir('noca')
  const rules = rulesFile({ allow: [{ host: 'api.github.com', ports: [443], methods: ['GET'], paths: ['/repos/our-org/**'] }] })
  const res = await runCli(['start', '--rules', rules, '--listen', '127.0.0.1:0', '--dir', emptyDir])
  t.equal(res.code, 1)
  t.match(res.stderr, /allow\[0\] limits methods or paths, which needs the local CA.*proxy-gate ca init/)
})
