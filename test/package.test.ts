// proxy-gate as a user gets it from the registry: the `npm pack` tarball installed into an empty
// folder, then run there. Packed and installed once for the whole file. The suite has no network
// (test/run.sh), so npm takes every dependency from the cache that `npm ci` filled.
import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { runCli, startCli, type SpawnOptions } from './helpers/cli.js'
import { tempDir } from './helpers/files.js'
import { connectHead } from './helpers/http.js'
import { rawExchange, statusOf } from './helpers/net.js'

const ROOT = new URL('..', import.meta.url).pathname
const PACKAGE = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; dependencies: Record<string, string>; bin: Record<string, string> }

interface LockEntry {
  readonly dev?: boolean
}

interface Lock {
  readonly packages: Record<string, LockEntry>
}

const work = tempDir('package')
const config = join(work, 'config')
// offline: the install must not need the registry, even when the network is there
const ENV = { npm_config_offline: 'true', npm_config_update_notifier: 'false', XDG_CONFIG_HOME: config }
const run = promisify(execFile)

function npm(args: readonly string[], cwd: string): Promise<{ stdout: string; stderr: string }> {
  return run('npm', args, { cwd, env: { ...process.env, ...ENV }, maxBuffer: 16 * 1024 * 1024 })
}

/** `npm pack` of the built tree (test/run.sh built dist/; prepack would rebuild it under the other tests' feet). */
async function pack(into: string): Promise<{ tarball: string; files: string[] }> {
  const { stdout } = await npm(['pack', '--json', '--ignore-scripts', '--pack-destination', into], ROOT)
  const [packed] = JSON.parse(stdout) as Array<{ filename: string; files: Array<{ path: string }> }>
  if (!packed) throw new Error(`npm pack printed nothing usable: ${stdout}`)
  return { tarball: packed.filename, files: packed.files.map((f) => f.path) }
}

/**
 * An app folder that depends on the tarball, with a lockfile naming the exact versions the
 * repository locks (its non-dev entries): resolving version ranges needs registry metadata,
 * which `npm ci` does not cache, while the locked tarballs are in the cache.
 */
function appFolder(work: string, tarball: string): string {
  const app = join(work, 'app')
  mkdirSync(app)
  const spec = `file:../${tarball}`
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as Lock
  const locked = Object.entries(lock.packages).filter(([path, entry]) => path.startsWith('node_modules/') && entry.dev !== true)
  const { version, dependencies, bin } = PACKAGE
  const packages = { '': { name: 'app', dependencies: { 'proxy-gate': spec } }, 'node_modules/proxy-gate': { version, resolved: spec, dependencies, bin }, ...Object.fromEntries(locked) }
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, dependencies: { 'proxy-gate': spec } }))
  writeFileSync(join(app, 'package-lock.json'), JSON.stringify({ name: 'app', lockfileVersion: 3, requires: true, packages }))
  return app
}

/** Installs the app's dependencies from the npm cache; a reason to skip when the cache lacks one. */
async function install(app: string): Promise<string | false> {
  try {
    await npm(['install', '--no-audit', '--no-fund'], app)
    return false
  } catch (error) {
    const stderr = (error as Error & { stderr?: string }).stderr ?? ''
    if (!stderr.includes('ENOTCACHED')) throw error
    return `the npm cache lacks a dependency (run "npm ci" with the registry reachable first): ${(stderr.trim().split('\n')[1] ?? stderr).replace(/^npm error /, '')}`
  }
}

const packed = await pack(work)
const app = appFolder(work, packed.tarball)
const skip = await install(app)
const installed = join(app, 'node_modules', 'proxy-gate')
const npx: SpawnOptions = { command: ['npx', 'proxy-gate'], cwd: app, env: ENV }

t.test('the tarball holds what a user runs, and no tests, sources, CI or benchmarks', async (t) => {
  const { files } = packed
  t.same(files.filter((f) => !/^(dist\/.+\.js|rules\.json|rules\.schema\.json|README\.md|LICENSE|package\.json)$/.test(f)), [], 'nothing else')
  t.same(files.filter((f) => /^(test|\.ci|lib|certs)\/|\.ts$|\.map$|bench/i.test(f)), [])
  for (const needed of ['dist/cli.js', 'dist/core/version.js', 'rules.json', 'rules.schema.json', 'README.md', 'LICENSE', 'package.json']) t.ok(files.includes(needed), needed)
})

t.test('installed from the tarball without TypeScript, runs through npx', { skip }, async (t) => {
  t.ok(existsSync(join(installed, 'dist', 'cli.js')))
  t.notOk(existsSync(join(app, 'node_modules', 'typescript')), 'devDependencies are not installed')
  const version = await runCli(['--version'], npx)
  t.equal(version.code, 0, version.stderr)
  t.equal(version.stdout.trim(), PACKAGE.version)
})

t.test('start with no rules.json: the packaged rules deny with 403 and /proxy.pac is served; CA and token in the user folder', { skip }, async (t) => {
  // the bin npx would run, spawned directly: a SIGTERM to npx does not reach proxy-gate
  const cli = await startCli(['start', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--log-format', 'json'], { ...npx, command: [join(app, 'node_modules', '.bin', 'proxy-gate')] })
  t.teardown(() => cli.child.kill('SIGKILL'))
  const rules = join(installed, 'rules.json')
  t.match(cli.lines[0], { message: /rules that ship with proxy-gate \(read-only, not watched\); "proxy-gate init" writes an editable copy/, rules })
  const certs = join(config, 'proxy-gate', 'certs')
  const admin = await cli.waitFor((l) => l.message === 'admin listening')
  t.equal(admin.tokenFile, join(certs, 'admin-token'))
  t.ok(existsSync(join(certs, 'admin-token')))
  const denied = await rawExchange(cli.port, connectHead('example.com:443'))
  t.equal(statusOf(denied.text), 403)
  t.match(denied.text, /no allow rule matches example\.com:443/)
  const pac = await rawExchange(cli.port, 'GET /proxy.pac HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')
  t.equal(statusOf(pac.text), 200)
  t.match(pac.text, `PROXY 127.0.0.1:${cli.port}`)
  cli.child.kill('SIGTERM')
  t.equal(await cli.exited, 0)
  const ca = await runCli(['ca', 'show'], npx)
  t.equal(ca.code, 1)
  t.match(ca.stderr, `no CA in ${certs}`)
})

t.test('init writes ./rules.json with the installed schema, validate accepts it, a second init refuses', { skip }, async (t) => {
  const init = await runCli(['init'], npx)
  t.equal(init.code, 0, init.stderr)
  const written = JSON.parse(readFileSync(join(app, 'rules.json'), 'utf8')) as Record<string, unknown>
  const shipped = JSON.parse(readFileSync(join(installed, 'rules.json'), 'utf8')) as Record<string, unknown>
  t.same(written, { ...shipped, $schema: './node_modules/proxy-gate/rules.schema.json' })
  t.ok(existsSync(join(app, 'node_modules', 'proxy-gate', 'rules.schema.json')))
  const validate = await runCli(['validate'], npx)
  t.equal(validate.code, 0, validate.stderr)
  t.match(validate.stdout, `${join(app, 'rules.json')}: ok`)
  const again = await runCli(['init'], npx)
  t.equal(again.code, 1)
  t.match(again.stderr, /already exists: pass --force/)
})

t.test('service install --dry-run from the installed package names that install: its dist/cli.js and rules, this node', { skip }, async (t) => {
  const home = join(work, 'home')
  // a folder with no rules.json: the packaged rules, which live in the install too
  const cwd = join(work, 'elsewhere')
  for (const dir of [home, cwd]) mkdirSync(dir)
  const res = await runCli(['service', 'install', '--dry-run', '--os', 'linux'], { cwd, command: [join(app, 'node_modules', '.bin', 'proxy-gate')], env: { ...ENV, HOME: home, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` } })
  t.equal(res.code, 0, res.stderr)
  const lines = res.stdout.split('\n')
  t.ok(lines.includes(`ExecStart=${process.execPath} ${join(installed, 'dist', 'cli.js')} start --rules ${join(installed, 'rules.json')} --dir ${join(config, 'proxy-gate', 'certs')}`), res.stdout)
  t.ok(lines.includes(`WorkingDirectory=${cwd}`))
  t.match(res.stderr, `# would write ${join(home, '.config', 'systemd', 'user', 'proxy-gate.service')}\n`)
})
