// The sandbox wires secrets (lib/wiring/sandbox-secrets.ts, lib/cli/sandbox-secrets.ts): `up`
// gives proxy-gate's container the CA folder, each `env:` secret's variable by name (the engine
// reads the value from its own environment) and the `file:` secrets outside the rules folder
// read-only; `run` and `compose` give a workload each placeholder (`--no-secrets`: none) and, when
// the rules open tunnels, a CA bundle it trusts. No value is ever on a command line or in the
// Compose file. Through the command line, with a stand-in engine that logs every call.
import { randomBytes } from 'node:crypto'
import { chmodSync, chownSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { parse } from 'yaml'
import { createCa, writeCa } from '../lib/certs/ca.js'
import { CERTS_MOUNT, secretFileMounts, WORKLOAD_BUNDLE } from '../lib/wiring/sandbox-secrets.js'
import { copiedVariables } from '../lib/wiring/sandbox-args.js'
import { runCli } from './helpers/cli.js'
import { tempDir, writeJson } from './helpers/files.js'

const VALUE = `ghp_${randomBytes(18).toString('hex')}`
const FILE_VALUE = `npm_${randomBytes(18).toString('hex')}`
const INNER_VALUE = randomBytes(24).toString('hex')
const DOCKER = { Client: { Version: '28.2.2', ApiVersion: '1.41' }, Server: { Components: [{ Name: 'Engine', Version: '20.10.24+dfsg1' }], Version: '20.10.24+dfsg1', ApiVersion: '1.41' } }
const TRUST = ['SSL_CERT_FILE', 'NODE_EXTRA_CA_CERTS', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'GIT_SSL_CAINFO']

interface StandIn {
  readonly path: string
  /** every call's arguments */
  readonly calls: () => string[][]
  /** the environment each `run` call was given, in order */
  readonly runEnvironments: () => string[]
}

/** A `docker` that answers `version` as Docker does, has no networks or containers, and logs every call (and each `run`'s environment). */
function standIn(dir: string): StandIn {
  const bin = join(dir, 'bin')
  mkdirSync(bin)
  writeFileSync(join(bin, 'version.json'), JSON.stringify(DOCKER))
  const script = `#!/bin/sh
printf '%s\\037' "$@" >> '${bin}/calls'; echo >> '${bin}/calls'
case "$1 $2" in
  "version --format") cat '${bin}/version.json' ;;
  "network inspect"|"container inspect") exit 1 ;;
esac
[ "$1" = run ] && { env; echo '\\036'; } >> '${bin}/env'
exit 0
`
  writeFileSync(join(bin, 'docker'), script)
  chmodSync(join(bin, 'docker'), 0o755)
  const read = (name: string): string => {
    try {
      return readFileSync(join(bin, name), 'utf8')
    } catch {
      return ''
    }
  }
  return {
    path: `${bin}:/usr/bin:/bin`,
    calls: () => read('calls').split('\n').filter(Boolean).map((line) => line.split('\x1f').slice(0, -1)),
    runEnvironments: () => read('env').split('\x1e\n').filter(Boolean),
  }
}

interface World {
  readonly dir: string
  readonly rules: string
  readonly certs: string
  readonly engine: StandIn
  readonly caPem: string
}

async function world(t: Test, rules?: unknown): Promise<World> {
  const dir = tempDir('sandbox-secrets')
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const rulesDir = join(dir, 'rules')
  mkdirSync(rulesDir)
  writeFileSync(join(dir, 'npm_token'), `${FILE_VALUE}\n`, { mode: 0o600 })
  writeFileSync(join(rulesDir, 'inner_token'), INNER_VALUE, { mode: 0o600 })
  const secret = (from: string) => ({ from, hosts: ['api.bound.test'] })
  const file = writeJson(rulesDir, 'rules.json', rules ?? { allow: ['api.bound.test'], secrets: { GH_TOKEN: secret('env:PG_SANDBOX_GH'), NPM_TOKEN: secret('file:../npm_token'), INNER: secret('file:inner_token') } })
  const certs = join(dir, 'certs')
  const ca = await createCa()
  const written = writeCa(certs, ca)
  if (!written.ok) throw new Error(written.error)
  return { dir, rules: file, certs, engine: standIn(dir), caPem: ca.certPem }
}

const ROOT = process.getuid?.() === 0

/**
 * As root, the rules folder is root's, and `up` runs proxy-gate as the image's user (1000): give
 * it the CA folder (with the key made first) and the outside file, as a root user has to.
 */
async function forImageUser(w: World): Promise<void> {
  if (!ROOT) return
  await runCli(['secrets', 'env', '--rules', w.rules, '--dir', w.certs])
  for (const f of [...readdirSync(w.certs).map((f) => join(w.certs, f)), join(w.dir, 'npm_token')]) chownSync(f, 1000, 1000)
}

const sandbox = (w: World, verb: string, args: readonly string[] = [], env: Record<string, string> = {}) =>
  runCli(['sandbox', verb, '--name', 'box', '--rules', w.rules, '--dir', w.certs, ...args], { env: { PATH: w.engine.path, ...env } })

/** `-e NAME=VALUE` and `-v` of a `run` call. */
function settings(args: readonly string[]): { env: Map<string, string>; volumes: string[] } {
  const env = new Map<string, string>()
  const volumes: string[] = []
  for (let i = 0; i < args.length - 1; i++) {
    const value = args[i + 1] ?? ''
    if (args[i] === '-e' && value.includes('=')) env.set(value.slice(0, value.indexOf('=')), value.slice(value.indexOf('=') + 1))
    if (args[i] === '-v') volumes.push(value)
  }
  return { env, volumes }
}

function noValueIn(t: Test, what: string, text: string): void {
  for (const value of [VALUE, FILE_VALUE, INNER_VALUE]) t.notOk(text.includes(value), `no value in ${what}`)
}

t.test("file: secrets outside the rules folder are mounted where the container resolves them; inside it, the folder's mount has them", async (t) => {
  t.same(secretFileMounts('/home/u/rules', '/etc/proxy-gate', ['token', './sub/token', '/home/u/rules/x']), [{ host: '/home/u/rules/x', container: '/home/u/rules/x' }])
  t.same(secretFileMounts('/home/u/rules', '/etc/proxy-gate', ['../npm', '/run/secrets/gh', '../npm']), [
    { host: '/home/u/npm', container: '/etc/npm' },
    { host: '/run/secrets/gh', container: '/run/secrets/gh' },
  ])
})

t.test("up: proxy-gate's container gets the CA folder, the variables by name and the outside file, never a value", async (t) => {
  const w = await world(t)
  await forImageUser(w)
  const up = await sandbox(w, 'up', ['--no-verify'], { PG_SANDBOX_GH: VALUE })
  const run = w.engine.calls().find((c) => c[0] === 'run')
  t.ok(run, `up started proxy-gate's container: ${up.stderr}`)
  const args = run ?? []
  const at = (flag: string, value: string): boolean => args.some((a, i) => a === flag && args[i + 1] === value)
  t.ok(at('-e', 'PG_SANDBOX_GH'), '-e with the variable name only: the engine reads the value from its environment')
  t.ok(at('-v', `${w.certs}:${CERTS_MOUNT}:ro`), 'the CA folder (ca.crt, ca.key, secrets-key), read-only')
  t.ok(at('-v', `${join(w.dir, 'npm_token')}:/etc/npm_token:ro`), 'the file outside the rules folder, where ../npm_token resolves in the container')
  t.notOk(args.some((a) => a.includes('inner_token')), 'the file inside the rules folder comes with its folder')
  t.same(args.slice(-2), ['--dir', CERTS_MOUNT], 'start reads the CA and the key from the mount')
  t.match(w.engine.runEnvironments()[0], new RegExp(`^PG_SANDBOX_GH=${VALUE}$`, 'm'), "the engine's own environment holds the value")
  t.equal(statSync(join(w.certs, 'secrets-key')).mode & 0o777, 0o600, 'the key exists before the read-only mount')
  noValueIn(t, "any engine call's arguments", w.engine.calls().flat().join('\n'))
  noValueIn(t, "up's output", up.stdout + up.stderr)
})

t.test('up refuses, naming the secret, a variable that is not set and secrets without a CA; nothing is created', async (t) => {
  const w = await world(t)
  const unset = await sandbox(w, 'up', ['--no-verify'])
  t.equal(unset.code, 1)
  t.match(unset.stderr, /secret GH_TOKEN: environment variable PG_SANDBOX_GH is not set; the proxy-gate container gets PG_SANDBOX_GH from the environment "sandbox up" runs in/)
  rmSync(join(w.certs, 'ca.crt'))
  rmSync(join(w.certs, 'ca.key'))
  const noCa = await sandbox(w, 'up', ['--no-verify'], { PG_SANDBOX_GH: VALUE })
  t.equal(noCa.code, 1)
  t.match(noCa.stderr, /secrets GH_TOKEN, NPM_TOKEN, INNER are put into requests, which needs the local CA/)
  t.notOk(w.engine.calls().some((c) => c[0] === 'run' || c[1] === 'create'), 'no network, no container')
})

t.test("up refuses what proxy-gate's container could not read, naming its user and the files", { skip: ROOT ? false : 'the rules are not root\'s: the container runs as their owner, who can read the CA' }, async (t) => {
  const w = await world(t)
  const up = await sandbox(w, 'up', ['--no-verify'], { PG_SANDBOX_GH: VALUE })
  t.equal(up.code, 1)
  t.match(up.stderr, `the proxy-gate container runs as 1000:1000 (the rules file's owner, or the image's user when root owns it) and could not read ${join(w.certs, 'ca.key')}, ${join(w.certs, 'secrets-key')}, ${join(w.dir, 'npm_token')}: give that user the files`)
  t.notOk(w.engine.calls().some((c) => c[0] === 'run' || c[1] === 'create'), 'nothing created')
  const plain = await world(t, { allow: ['example.com'] })
  await sandbox(plain, 'up', ['--no-verify'])
  const run = plain.engine.calls().find((c) => c[0] === 'run') ?? []
  t.ok(run.length > 0, 'rules that do not need the CA: proxy-gate starts')
  t.notOk(run.some((a) => a.includes(CERTS_MOUNT)), 'without the CA it could not read (a reload that needs one fails, naming it)')
})

t.test('run: each placeholder under its name and the CA bundle; --no-secrets leaves the placeholders out', async (t) => {
  const w = await world(t)
  const env = await runCli(['secrets', 'env', '--rules', w.rules, '--dir', w.certs], { env: { PG_SANDBOX_GH: VALUE } })
  t.equal(env.code, 0, env.stderr)
  const placeholders = new Map(env.stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
  const run = await sandbox(w, 'run', ['--', 'alpine', 'true'], { PG_SANDBOX_GH: VALUE })
  t.equal(run.code, 0, run.stderr)
  const got = settings(w.engine.calls().find((c) => c[0] === 'run') ?? [])
  for (const name of ['GH_TOKEN', 'NPM_TOKEN', 'INNER']) t.equal(got.env.get(name), placeholders.get(name), `${name}: the placeholder "secrets env" prints`)
  t.match(got.env.get('GH_TOKEN'), /^ghp_/, "with the value's prefix, where the value can be read")
  for (const name of TRUST) t.equal(got.env.get(name), WORKLOAD_BUNDLE, name)
  const bundle = join(w.certs, 'ca-bundle.pem')
  t.same(got.volumes, [`${bundle}:${WORKLOAD_BUNDLE}:ro`], 'the bundle, read-only, and nothing else of the CA folder')
  noValueIn(t, "run's arguments", w.engine.calls().flat().join('\n'))
  const text = readFileSync(bundle, 'utf8')
  t.equal(statSync(bundle).mode & 0o777, 0o644, 'the bundle is public')
  t.ok(text.endsWith(w.caPem.trim() + '\n'), "it ends with proxy-gate's CA")
  t.ok((text.match(/BEGIN CERTIFICATE/g) ?? []).length > 50, 'after the public roots')
  t.notMatch(text, /PRIVATE KEY/)

  const elsewhere = await sandbox(w, 'run', ['--', 'alpine', 'true'])
  const plain = settings(w.engine.calls().filter((c) => c[0] === 'run')[1] ?? [])
  t.equal(elsewhere.code, 0)
  t.equal(plain.env.get('GH_TOKEN')?.slice(-43), placeholders.get('GH_TOKEN')?.slice(-43), 'where the value cannot be read: the same marker, without the prefix')

  const none = await sandbox(w, 'run', ['--no-secrets', '--', 'alpine', 'true'], { PG_SANDBOX_GH: VALUE })
  t.equal(none.code, 0, none.stderr)
  const without = settings(w.engine.calls().filter((c) => c[0] === 'run')[2] ?? [])
  t.same(['GH_TOKEN', 'NPM_TOKEN', 'INNER'].filter((n) => without.env.has(n)), [], 'no placeholder')
  t.equal(without.env.get('SSL_CERT_FILE'), WORKLOAD_BUNDLE, 'the CA is still trusted: proxy-gate still opens the tunnels')
})

t.test("rules that open no tunnel leave a workload's trust alone; proxy-gate still gets the CA that exists", async (t) => {
  const w = await world(t, { allow: ['example.com'] })
  await forImageUser(w)
  const run = await sandbox(w, 'run', ['--', 'alpine', 'true'])
  t.equal(run.code, 0, run.stderr)
  const got = settings(w.engine.calls().find((c) => c[0] === 'run') ?? [])
  t.same(TRUST.filter((n) => got.env.has(n)), [])
  t.same(got.volumes, [])
  await sandbox(w, 'up', ['--no-verify'])
  const up = w.engine.calls().filter((c) => c[0] === 'run')[1] ?? []
  t.ok(up.includes(`${w.certs}:${CERTS_MOUNT}:ro`), 'a reload may add methods or paths rules')
})

t.test('compose: the same for both services, and no value in the file', async (t) => {
  const w = await world(t)
  const compose = await sandbox(w, 'compose', [], { PG_SANDBOX_GH: VALUE })
  t.equal(compose.code, 0, compose.stderr)
  noValueIn(t, 'the Compose file', compose.stdout)
  const doc = parse(compose.stdout) as { services: Record<string, Record<string, unknown>> }
  const proxy = doc.services['proxy-gate'] ?? {}
  t.same(proxy.environment, ['PG_SANDBOX_GH'], 'by name: Compose takes the value from its environment')
  t.same(proxy.volumes, [`${join(w.dir, 'rules')}:/etc/proxy-gate:ro`, `${w.certs}:${CERTS_MOUNT}:ro`, `${join(w.dir, 'npm_token')}:/etc/npm_token:ro`])
  t.match(proxy.command, ['start', '--rules', '/etc/proxy-gate/rules.json'])
  t.same((proxy.command as string[]).slice(-2), ['--dir', CERTS_MOUNT])
  const workload = doc.services.workload ?? {}
  const env = workload.environment as Record<string, string>
  t.match(env.GH_TOKEN, /^ghp_[A-Za-z0-9_-]{43}$/)
  t.equal(env.SSL_CERT_FILE, WORKLOAD_BUNDLE)
  t.same(workload.volumes, [`${join(w.certs, 'ca-bundle.pem')}:${WORKLOAD_BUNDLE}:ro`])
  const none = await sandbox(w, 'compose', ['--no-secrets'])
  t.notMatch(none.stdout, /GH_TOKEN/, '--no-secrets')
})

t.test("run refuses arguments that would copy a secret's variable into the workload; --allow-escape passes them on with a warning", async (t) => {
  const names = new Set(['GH_TOKEN', 'PG_SANDBOX_GH'])
  t.same(copiedVariables(['-e', 'PG_SANDBOX_GH', '--env=GH_TOKEN', '-eGH_TOKEN', '--env', 'GH_TOKEN', 'alpine', '-e', 'PG_SANDBOX_GH'], names), ['-e PG_SANDBOX_GH', '--env=GH_TOKEN', '-e GH_TOKEN', '--env GH_TOKEN'], 'every spelling, before the image only')
  t.same(copiedVariables(['-e', 'GH_TOKEN=mine', '-e', 'OTHER', '--env-host=false', 'alpine'], names), [], 'a value given, another variable, --env-host off')
  t.same(copiedVariables(['--env-host', 'alpine'], names), ['--env-host'], "Podman's --env-host copies them all")
  const w = await world(t)
  const refused = await sandbox(w, 'run', ['--', '-e', 'PG_SANDBOX_GH', 'alpine', 'true'], { PG_SANDBOX_GH: VALUE })
  t.equal(refused.code, 2)
  t.match(refused.stderr, "refused: -e PG_SANDBOX_GH: copies a secret's variable from this environment into the workload")
  t.notOk(w.engine.calls().some((c) => c[0] === 'run'), 'nothing ran')
  const allowed = await sandbox(w, 'run', ['--allow-escape', '--', '-e', 'PG_SANDBOX_GH', 'alpine', 'true'])
  t.equal(allowed.code, 0, allowed.stderr)
  t.match(allowed.stderr, 'WARNING: passing on -e PG_SANDBOX_GH')
  const plain = await world(t, { allow: ['example.com'] })
  t.equal((await sandbox(plain, 'run', ['--', '-e', 'PG_SANDBOX_GH', 'alpine', 'true'])).code, 0, 'without secrets, nothing to refuse')
})
