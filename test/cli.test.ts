// The command line as a user runs it: dist/cli.js in its own process, real files, real sockets:
// --version, --help, validate and check. (cli-start.test.ts: start and reload.)
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import t from 'tap'
import { runCli } from './helpers/cli.js'
import { parseHosts } from '../lib/net/hosts.js'
import { formatIp } from '../lib/policy/ip.js'
import { startDns } from './helpers/dns.js'
import { rulesFile, tempDir } from './helpers/files.js'

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version

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
  t.match(res.stdout, /ok \(\d+ allow, 0 deny, 5 bypass\)/)
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
