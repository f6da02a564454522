// Secrets end to end, as a user runs them: `proxy-gate secrets env` gives the placeholder, `start`
// (dist/cli.js, debug logs, admin listener) puts the value in its place toward the secret's host
// only, over real TLS to origins that record what they received; the placeholder anywhere else
// is refused and named; and nothing proxy-gate printed or served holds the value.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t, { type Test } from 'tap'
import { createCa, writeCa } from '../lib/certs/ca.js'
import { runCli, startCli, type CliLine, type RunningCli } from './helpers/cli.js'
import { startDns } from './helpers/dns.js'
import { tempDir, writeJson } from './helpers/files.js'
import { connectHead } from './helpers/http.js'
import { rawExchange, startHttpUpstream, startHttpsUpstream, statusOf, type Upstream } from './helpers/net.js'

const run = promisify(execFile)

const VALUE = `ghp_${randomBytes(18).toString('hex')}`
const ROTATED = `ghp_${randomBytes(18).toString('hex')}`

interface World {
  readonly dir: string
  readonly rules: string
  readonly bound: Upstream
  readonly other: Upstream
  readonly plain: Upstream
  readonly caPem: string
}

async function world(t: Test): Promise<World> {
  const dir = tempDir('secrets')
  const ca = await createCa()
  const written = writeCa(dir, ca)
  if (!written.ok) throw new Error(written.error)
  const bound = await startHttpsUpstream('127.0.0.1', ['api.bound.test'])
  const other = await startHttpsUpstream('127.0.0.1', ['other.test'])
  const plain = await startHttpUpstream('127.0.0.1')
  const dns = await startDns({ 'api.bound.test': { A: ['127.0.0.1'] }, 'other.test': { A: ['127.0.0.1'] }, 'plain.test': { A: ['127.0.0.1'] } })
  t.teardown(() => Promise.all([bound.close(), other.close(), plain.close(), dns.close()]))
  writeFileSync(join(dir, 'bound.pem'), bound.tls.cert)
  writeFileSync(join(dir, 'other.pem'), other.tls.cert)
  writeFileSync(join(dir, 'npm-token'), `npm_${'x'.repeat(36)}\n`)
  const rules = writeJson(dir, 'rules.json', {
    listen: '127.0.0.1:0',
    allow: [
      `api.bound.test:${bound.port}`,
      { host: 'other.test', ports: [other.port], methods: ['GET'], paths: ['/**'] },
      `plain.test:${plain.port}`,
      `127.0.0.1:${bound.port},${other.port},${plain.port}`,
    ],
    dns: { servers: [dns.server] },
    tls: { ports: [bound.port, other.port], upstreamCaFiles: ['bound.pem', 'other.pem'] },
    secrets: {
      GITHUB_TOKEN: { from: 'env:PG_TEST_GITHUB_VALUE', hosts: [`api.bound.test:${bound.port}`] },
      NPM_TOKEN: { from: 'file:npm-token', hosts: ['registry.npmjs.org'] },
    },
  })
  return { dir, rules, bound, other, plain, caPem: ca.certPem }
}

async function placeholders(w: World, env: Record<string, string>): Promise<Map<string, string>> {
  const result = await runCli(['secrets', 'env', '--rules', w.rules, '--dir', w.dir], { env })
  if (result.code !== 0) throw new Error(result.stderr)
  return new Map(result.stdout.trim().split('\n').map((line) => line.split('=', 2) as [string, string]))
}

async function curl(proxyPort: number, ca: string, args: string[]): Promise<number> {
  const { stdout } = await run('bash', ['-c', `curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert <(printf '%s' "$CA") -x "$PROXY" "$@"`, 'curl', ...args], {
    env: { ...process.env, CA: ca, PROXY: `http://127.0.0.1:${proxyPort}` },
  }).catch((e: unknown) => ({ stdout: (e as { stdout: string }).stdout }))
  return Number(stdout)
}

async function start(w: World, env: Record<string, string>): Promise<RunningCli & { admin: string }> {
  const proxy = await startCli(['start', '--rules', w.rules, '--dir', w.dir, '--log-format', 'json', '--log-level', 'debug', '--admin-listen', '127.0.0.1:0'], { env })
  const admin = String((await proxy.waitFor((l) => l.message === 'admin listening')).url).replace(/\/$/, '')
  return Object.assign(proxy, { admin })
}

const decisionsFor = (lines: readonly CliLine[], secret: string): CliLine[] => lines.filter((l) => l.message === 'decision' && l.secret === secret)

t.test('the workload holds the placeholder, the bound host gets the value, anything else is refused and named', async (t) => {
  const w = await world(t)
  const env = { PG_TEST_GITHUB_VALUE: VALUE }
  const ph = await placeholders(w, env)
  const placeholder = ph.get('GITHUB_TOKEN') ?? ''
  t.match(placeholder, /^ghp_[A-Za-z0-9_-]{43}$/, 'the prefix is kept, then 43 characters of [A-Za-z0-9_-]')
  t.match(ph.get('NPM_TOKEN'), /^npm_[A-Za-z0-9_-]{43}$/, 'the file secret: its prefix too, the trailing newline dropped')
  t.same(await placeholders(w, {}), new Map([['GITHUB_TOKEN', placeholder.slice(4)], ['NPM_TOKEN', ph.get('NPM_TOKEN') ?? '']]), 'without the value: the same marker, without the prefix')
  const proxy = await start(w, env)
  t.teardown(() => proxy.stop())
  const bound = `https://api.bound.test:${w.bound.port}`

  t.equal(await curl(proxy.port, w.caPem, ['-H', `Authorization: Bearer ${placeholder}`, `${bound}/user`]), 200, 'a header')
  t.equal(await curl(proxy.port, w.caPem, ['-u', `x-access-token:${placeholder}`, `${bound}/repo.git/info/refs`]), 200, 'Basic credentials')
  t.equal(await curl(proxy.port, w.caPem, [`${bound}/search?access_token=${placeholder}`]), 200, 'the URL')
  t.equal(await curl(proxy.port, w.caPem, ['-H', `Authorization: Bearer ${placeholder.slice(4)}`, `${bound}/bare`]), 200, 'the bare marker (secrets env without the value)')
  const got = w.bound.requests
  t.equal(got[0]?.headers.authorization, `Bearer ${VALUE}`)
  t.equal(got[1]?.headers.authorization, `Basic ${Buffer.from(`x-access-token:${VALUE}`).toString('base64')}`)
  t.equal(got[2]?.url, `/search?access_token=${VALUE}`)
  t.equal(got[3]?.headers.authorization, `Bearer ${VALUE}`)
  const marker = placeholder.slice(4).toLowerCase()
  t.notOk(JSON.stringify(got).toLowerCase().includes(marker), 'the placeholder never reached the secret\'s host')
  // log lines are written in batches (up to 10 ms): the last one may come after curl's answer
  await proxy.waitFor((l) => decisionsFor(proxy.lines, 'GITHUB_TOKEN').filter((d) => d.decision === 'allow').length === 4 && l.message === 'decision')
  t.equal(decisionsFor(proxy.lines, 'GITHUB_TOKEN').filter((l) => l.decision === 'allow').length, 4, 'each substitution is logged by name')

  t.equal(await curl(proxy.port, w.caPem, ['-H', `Authorization: Bearer ${placeholder}`, `https://other.test:${w.other.port}/x`]), 403, 'another opened host')
  t.equal(await curl(proxy.port, w.caPem, [`http://plain.test:${w.plain.port}/?t=${placeholder}`]), 403, 'plain HTTP')
  t.equal(await curl(proxy.port, w.caPem, ['-H', `X-Api-Key: ${ph.get('NPM_TOKEN') ?? ''}`, `${bound}/npm`]), 403, 'another secret\'s placeholder to this secret\'s host')
  const tunnel = await rawExchange(proxy.port, connectHead(`${marker}.other.test:${w.other.port}`), { until: (text) => text.includes('\r\n\r\n') })
  t.equal(statusOf(tunnel.text), 403, 'in a CONNECT target (host names are folded to lower case)')
  t.equal(w.other.requests.length, 0, 'nothing reached the other host')
  t.equal(w.plain.requests.length, 0, 'nothing went out in cleartext')
  t.equal(w.bound.requests.length, 4)
  await proxy.waitFor((l) => l.reason === 'secret-misplaced' && l.method === 'CONNECT')
  const refused = proxy.lines.filter((l) => l.reason === 'secret-misplaced')
  t.same(
    refused.map((l) => [l.method, l.target, l.secret, l.decision]),
    [
      ['GET', `other.test:${w.other.port}`, 'GITHUB_TOKEN', 'deny'],
      ['GET', `plain.test:${w.plain.port}`, 'GITHUB_TOKEN', 'deny'],
      ['GET', `api.bound.test:${w.bound.port}`, 'NPM_TOKEN', 'deny'],
      ['CONNECT', `${marker}.other.test:${w.other.port}`, 'GITHUB_TOKEN', 'deny'],
    ],
  )

  const metrics = await fetch(`${proxy.admin}/metrics`).then((r) => r.text())
  t.match(metrics, /reason="secret-misplaced"/, 'metrics count the refusals by their reason')
  const state = await fetch(`${proxy.admin}/api/state`).then((r) => r.text())
  t.match(state, /secret-misplaced/, 'the dashboard lists them among the denials')
  const everything = [JSON.stringify(proxy.lines), proxy.stderr(), metrics, state]
  for (const value of [VALUE, `npm_${'x'.repeat(36)}`, Buffer.from(`x-access-token:${VALUE}`).toString('base64')]) {
    t.notOk(everything.some((text) => text.includes(value)), 'no log line at debug, no metric, no dashboard JSON holds the value')
  }
  for (const file of ['rules.json', 'secrets-key']) t.notOk(readFileSync(join(w.dir, file), 'utf8').includes(VALUE), `${file} does not hold it`)
})

t.test('a reload reads the values again; one that cannot be read keeps the running ones', async (t) => {
  const w = await world(t)
  const rules = JSON.parse(readFileSync(w.rules, 'utf8')) as { secrets: Record<string, unknown> }
  writeFileSync(join(w.dir, 'gh-token'), `${VALUE}\n`)
  rules.secrets.GITHUB_TOKEN = { from: 'file:gh-token', hosts: [`api.bound.test:${w.bound.port}`] }
  writeJson(w.dir, 'rules.json', rules)
  const placeholder = (await placeholders(w, {})).get('GITHUB_TOKEN') ?? ''
  const proxy = await start(w, {})
  t.teardown(() => proxy.stop())
  const send = (path: string) => curl(proxy.port, w.caPem, ['-H', `Authorization: Bearer ${placeholder}`, `https://api.bound.test:${w.bound.port}${path}`])
  t.equal(await send('/before'), 200)
  writeFileSync(join(w.dir, 'gh-token'), `${ROTATED}\n`)
  proxy.child.kill('SIGHUP')
  await proxy.waitFor((l) => l.message === 'reloaded' && l.trigger === 'SIGHUP')
  t.equal(await send('/after'), 200)
  t.same(w.bound.requests.map((r) => r.headers.authorization), [`Bearer ${VALUE}`, `Bearer ${ROTATED}`], 'the rotated value is sent after the reload')
  writeFileSync(join(w.dir, 'npm-token'), '')
  proxy.child.kill('SIGHUP')
  const failed = await proxy.waitFor((l) => l.message === 'reload failed: keeping the previous rules')
  t.same(failed.errors, ['secret NPM_TOKEN: the value is empty'], 'the failure names the secret')
  t.equal(await send('/still'), 200)
  t.equal(w.bound.requests[2]?.headers.authorization, `Bearer ${ROTATED}`, 'the running secrets stay')
  t.notOk(JSON.stringify(proxy.lines).includes(ROTATED) || proxy.stderr().includes(ROTATED))
})

t.test('start refuses secrets it cannot read, or without the local CA, naming the secret', async (t) => {
  const w = await world(t)
  const missing = await runCli(['start', '--rules', w.rules, '--dir', w.dir])
  t.equal(missing.code, 1)
  t.match(missing.stderr, /did not start: secret GITHUB_TOKEN: environment variable PG_TEST_GITHUB_VALUE is not set/)
  const noCa = await runCli(['start', '--rules', w.rules, '--dir', tempDir('no-ca')], { env: { PG_TEST_GITHUB_VALUE: VALUE } })
  t.equal(noCa.code, 1)
  t.match(noCa.stderr, /secrets GITHUB_TOKEN, NPM_TOKEN are put into requests, which needs the local CA/)
  t.notOk(noCa.stderr.includes(VALUE))
  const validate = await runCli(['validate', '--rules', w.rules, '--dir', tempDir('no-ca')])
  t.equal(validate.code, 0)
  t.match(validate.stdout, /warning: .*secrets GITHUB_TOKEN, NPM_TOKEN are put into requests, which needs the local CA/)
  t.match(validate.stdout, /warning: secret GITHUB_TOKEN: environment variable PG_TEST_GITHUB_VALUE is not set; "proxy-gate start" refuses to run without it/)
  const usage = await runCli(['secrets', 'list'])
  t.equal(usage.code, 2)
  const none = await runCli(['secrets', 'env', '--rules', writeJson(tempDir('none'), 'rules.json', { allow: [] })])
  t.equal(none.code, 1)
  t.match(none.stderr, /has no "secrets"/)
})
