// `proxy-gate doctor` against a real running proxy-gate and Docker settings files in a temporary
// HOME: files written by `docker --write` pass, a file pointing elsewhere is a problem naming both
// addresses, missing files (and a settings.json that Docker Desktop 4.35+ no longer reads) are
// "not configured", malformed JSON is a clear problem (never a crash), an incomplete bypass or an
// unset containers proxy is a problem; --json's shape and the exit codes. And the probe route:
// proxy-gate answers exactly the probe's shape itself, the admin API confirms it with the token,
// and anything else addressed to the probe name goes to the rules.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { runCli, startCli, type RunningCli } from './helpers/cli.js'
import { tempDir, writeJson } from './helpers/files.js'
import { stablePort } from './helpers/haproxy.js'
import { rawExchange, statusOf } from './helpers/net.js'

const BYPASS = ['localhost', '127.0.0.1', '::1', '*.docker.internal']

interface Setup {
  readonly home: string
  readonly rules: string
  readonly port: number
  readonly adminPort: number
  readonly tokenFile: string
  readonly proxy: RunningCli
  /** doctor's arguments that point it at this setup's rules, admin API and Docker files */
  readonly args: string[]
  /** the environment: the temporary HOME, and a Docker CLI that reaches no engine */
  readonly env: Record<string, string>
}

async function setup(t: Test, bypass = BYPASS): Promise<Setup> {
  const home = tempDir('doctor-home')
  const port = await stablePort()
  const adminPort = await stablePort()
  const rules = writeJson(home, 'rules.json', { listen: `127.0.0.1:${port}`, allow: ['example.com:443'], bypass })
  const tokenFile = join(home, 'admin-token')
  const proxy = await startCli(['start', '--rules', rules, '--log-format', 'json', '--admin-listen', `127.0.0.1:${adminPort}`, '--admin-token-file', tokenFile])
  t.teardown(() => proxy.stop())
  const args = ['doctor', '--rules', rules, '--admin-listen', `127.0.0.1:${adminPort}`, '--admin-token-file', tokenFile, '--file', `admin=${join(home, 'admin-settings.json')}`, '--file', `daemon=${join(home, 'daemon.json')}`]
  const env = { HOME: home, DOCKER_HOST: `unix://${join(home, 'no-docker.sock')}` }
  return { home, rules, port, adminPort, tokenFile, proxy, args, env }
}

interface Report {
  readonly ok: boolean
  readonly checks: { name: string; status: string; detail: string; fix?: string }[]
}

async function doctor(s: Setup, extra: string[] = []): Promise<{ code: number | null; report: Report; stderr: string }> {
  const r = await runCli([...s.args, '--json', ...extra], { env: s.env })
  return { code: r.code, report: JSON.parse(r.stdout) as Report, stderr: r.stderr }
}

function check(report: Report, name: string): Report['checks'][number] {
  const found = report.checks.find((c) => c.name === name)
  if (!found) throw new Error(`no check ${name} in ${JSON.stringify(report)}`)
  return found
}

async function wire(s: Setup, target: string, extra: string[] = []): Promise<void> {
  const r = await runCli(['docker', '--target', target, '--rules', s.rules, '--write', ...extra], { env: s.env })
  if (r.code !== 0) throw new Error(`docker --write failed: ${r.stderr}`)
}

t.test('doctor: files written by "docker --write" pass; --json shape; exit 0', async (t) => {
  const s = await setup(t)
  mkdirSync(join(s.home, '.docker/desktop'), { recursive: true })
  await wire(s, 'settings-store')
  await wire(s, 'cli')
  await wire(s, 'daemon', ['--file', join(s.home, 'daemon.json')])
  // what Docker Desktop 4.34 used, left beside settings-store.json: 4.35+ no longer reads it
  writeJson(join(s.home, '.docker/desktop'), 'settings.json', { proxyHttpMode: 'manual', overrideProxyHttp: 'http://10.9.9.9:3130' })
  const { code, report, stderr } = await doctor(s)
  t.equal(stderr, '')
  t.equal(code, 0, JSON.stringify(report))
  t.equal(report.ok, true)
  t.same(
    report.checks.map((c) => [c.name, c.status]),
    [
      ['proxy-gate', 'ok'],
      ['rules', 'ok'],
      ['local CA', 'not configured'],
      ['docker settings-store', 'ok'],
      ['docker settings', 'not configured'],
      ['docker admin', 'not configured'],
      ['docker cli', 'ok'],
      ['docker daemon', 'ok'],
      ['docker info', 'not configured'],
      ['container probe', 'not configured'],
      ['login service', 'not configured'],
    ],
  )
  for (const c of report.checks) t.same(Object.keys(c).filter((k) => k !== 'fix'), ['name', 'status', 'detail'])
  t.match(check(report, 'proxy-gate').detail, `running at 127.0.0.1:${s.port}`)
  t.match(check(report, 'docker settings-store').detail, `points at 127.0.0.1:${s.port}`)
  t.match(check(report, 'container probe').detail, 'skipped: no Docker engine answers')
  t.match(check(report, 'docker settings').detail, 'settings.json is not read: settings-store.json is there')
})

t.test('doctor: a setting pointing elsewhere is a problem naming both addresses; exit 1; the text report', async (t) => {
  const s = await setup(t)
  writeJson(mkdirAndReturn(join(s.home, '.docker')), 'config.json', { proxies: { default: { httpProxy: 'http://10.9.9.9:3130', httpsProxy: 'http://10.9.9.9:3130', noProxy: 'localhost,127.0.0.1,.docker.internal' } } })
  const { code, report } = await doctor(s)
  t.equal(code, 1)
  t.equal(report.ok, false)
  const cli = check(report, 'docker cli')
  t.equal(cli.status, 'problem')
  t.match(cli.detail, `proxies.default.httpProxy is http://10.9.9.9:3130, not this proxy-gate (127.0.0.1:${s.port})`)
  t.equal(cli.fix, `proxy-gate docker --target cli --rules ${s.rules} --write`)
  const text = await runCli(s.args, { env: s.env })
  t.equal(text.code, 1)
  t.match(text.stdout, /^PROBLEM {2}docker cli +\S*config\.json: proxies\.default\.httpProxy is http:\/\/10\.9\.9\.9:3130/m)
  t.match(text.stdout, /^ +fix: proxy-gate docker --target cli/m)
})

function mkdirAndReturn(dir: string): string {
  mkdirSync(dir, { recursive: true })
  return dir
}

t.test('doctor: malformed JSON is a clear problem, never a crash', async (t) => {
  const s = await setup(t)
  writeFileSync(join(mkdirAndReturn(join(s.home, '.docker/desktop')), 'settings-store.json'), '{ "ProxyHTTPMode": "manual", ')
  writeFileSync(join(mkdirAndReturn(join(s.home, '.docker')), 'config.json'), '{"proxies": "http://127.0.0.1:3128"}')
  const { code, report, stderr } = await doctor(s)
  t.equal(stderr, '')
  t.equal(code, 1)
  const store = check(report, 'docker settings-store')
  t.equal(store.status, 'problem')
  t.match(store.detail, /settings-store\.json is not valid JSON \(/)
  // "proxies" is not an object: no proxy is set there (Docker Desktop itself would refuse the file)
  t.equal(check(report, 'docker cli').status, 'not configured')
})

t.test('doctor: a bypass without *.docker.internal, the containers proxy unset, and "system" mode are problems', async (t) => {
  const s = await setup(t, ['localhost', '127.0.0.1'])
  mkdirSync(join(s.home, '.docker/desktop'), { recursive: true })
  await wire(s, 'settings-store')
  const first = await doctor(s)
  t.equal(first.code, 1)
  const store = check(first.report, 'docker settings-store')
  t.match(store.detail, 'OverrideProxyExclude does not keep kubernetes.docker.internal, *.docker.internal direct')
  t.match(store.fix, /add "localhost", "127.0.0.1" and "\*\.docker\.internal" to "bypass"/)

  const url = `http://127.0.0.1:${s.port}`
  writeJson(join(s.home, '.docker/desktop'), 'settings-store.json', { ProxyHTTPMode: 'system', OverrideProxyHTTP: url, OverrideProxyHTTPS: url, OverrideProxyExclude: 'localhost,127.0.0.1,*.docker.internal' })
  const second = check((await doctor(s)).report, 'docker settings-store')
  t.equal(second.status, 'problem')
  t.match(second.detail, 'ProxyHTTPMode is "system", not "manual"')
  t.match(second.detail, 'the containers proxy is not set (ContainersOverrideProxyHTTP, ContainersOverrideProxyHTTPS)')
})

t.test('doctor: proxy-gate not running is a problem with the command that starts it', async (t) => {
  const s = await setup(t)
  await s.proxy.stop()
  const { code, report } = await doctor(s)
  t.equal(code, 1)
  const running = check(report, 'proxy-gate')
  t.equal(running.status, 'problem')
  t.match(running.detail, `nothing answers at 127.0.0.1:${s.port}`)
  t.match(running.fix, `proxy-gate start --rules ${s.rules}`)
})

t.test('doctor: invalid rules and usage errors', async (t) => {
  const s = await setup(t)
  const bad = writeJson(s.home, 'bad.json', { allow: ['*'] })
  const r = await runCli(['doctor', '--rules', bad, '--json'], { env: s.env })
  t.equal(r.code, 1)
  const report = JSON.parse(r.stdout) as Report
  t.same(report.checks.map((c) => [c.name, c.status]), [['rules', 'problem'], ['login service', 'not configured']])
  t.equal(report.checks[0]?.fix, `proxy-gate validate --rules ${bad}`)
  const usage = await runCli(['doctor', '--file', 'nope=/tmp/x'], { env: s.env })
  t.equal(usage.code, 2)
  t.match(usage.stderr, '--file takes TARGET=PATH')
  const help = await runCli(['doctor', '--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, '--image IMAGE')
})

const NONCE = '0123456789abcdef0123456789abcdef'

t.test('probe: proxy-gate answers exactly the probe shape itself; the admin API confirms it with the token', async (t) => {
  const s = await setup(t)
  const probe = (url: string, method = 'GET') => rawExchange(s.port, `${method} ${url} HTTP/1.1\r\nHost: proxy-gate.invalid\r\nConnection: close\r\n\r\n`)
  const answered = await probe(`http://proxy-gate.invalid/doctor/${NONCE}`)
  t.equal(statusOf(answered.text), 200)
  t.match(answered.text, `proxy-gate answered probe ${NONCE}`)
  const logged = await s.proxy.waitFor((l) => l.message === 'probe')
  t.equal(logged.nonce, NONCE)

  const token = readFileSync(s.tokenFile, 'utf8').trim()
  const ask = (nonce: string, auth?: string) =>
    rawExchange(s.adminPort, `GET /api/probe/${nonce} HTTP/1.1\r\nHost: 127.0.0.1:${s.adminPort}\r\n${auth ? `Authorization: Bearer ${auth}\r\n` : ''}Connection: close\r\n\r\n`)
  const seen = await ask(NONCE, token)
  t.equal(statusOf(seen.text), 200)
  t.match(seen.text, /"seen":true/)
  t.equal(statusOf((await ask(NONCE)).text), 401, 'no token: refused')
  t.equal(statusOf((await ask(NONCE, `${token}x`)).text), 401, 'a wrong token: refused')
  t.equal(statusOf((await ask('f'.repeat(32), token)).text), 404, 'a nonce never sent: not seen')

  // anything else addressed to the probe name is an ordinary request, which the rules deny
  for (const [url, method] of [[`http://proxy-gate.invalid/doctor/${NONCE.toUpperCase()}`, 'GET'], [`http://proxy-gate.invalid/doctor/${NONCE}x`, 'GET'], [`http://proxy-gate.invalid/doctor/${NONCE}`, 'POST'], [`http://proxy-gate.invalid:8080/doctor/${NONCE}`, 'GET'], [`http://proxy-gate.invalid/doctor/${NONCE}?a`, 'GET']] as const) {
    const other = await probe(url, method)
    t.equal(statusOf(other.text), 403, `${method} ${url}`)
    t.notMatch(other.text, 'answered probe')
  }
})
