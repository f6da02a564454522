// `proxy-gate doctor`: is Docker going through proxy-gate, and if not, why. Gathers the facts
// (the rules, /readyz, the CA, each Docker settings file, `docker info`, a container's request
// through its proxy settings, confirmed through the admin API) and hands them to the pure checks
// in wiring/doctor-*.ts. Exit status 0 when no check found a problem, 1 when one did, 2 on usage.
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { homedir, networkInterfaces } from 'node:os'
import { resolve } from 'node:path'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { http } from '../core/builtins.js'
import { caInfo, caPaths, loadCa } from '../certs/ca.js'
import { formatRuleErrors, rulesWithRequestLimits } from '../policy/rules.js'
import { PROBE_HOST } from '../proxy/route-probe.js'
import { parseListen, type Config, type Listen } from '../rules/config.js'
import { loadRulesFile, rulesPath } from '../rules/file.js'
import { DOCKER_TARGETS, defaultPath, type DockerTarget } from '../wiring/docker.js'
import { caCheck, dockerInfoCheck, formatChecks, hasProblem, loginServiceCheck, probeCheck, rulesCheck, runningCheck, type CaFact, type Check, type DockerInfoFact, type ProbeFact, type RunningFact } from '../wiring/doctor-checks.js'
import { dockerFileCheck, type FileFact, type FixFlags, type HereAddress } from '../wiring/doctor-docker.js'
import { readJsonFile } from '../wiring/settings-file.js'
import { caDir } from './ca.js'
import { usageError } from './common.js'
import { advertisedAddress, currentOs, environment } from './wiring.js'
import { serviceStatus } from './service.js'

const OPTIONS = {
  rules: { type: 'string' },
  json: { type: 'boolean', default: false },
  image: { type: 'string', default: 'busybox' },
  'admin-listen': { type: 'string', default: '127.0.0.1:3129' },
  'admin-token-file': { type: 'string' },
  dir: { type: 'string' },
  advertise: { type: 'string' },
  file: { type: 'string', multiple: true, default: [] },
  help: { type: 'boolean', short: 'h', default: false },
} satisfies ParseArgsConfig['options']

interface Values {
  readonly rules?: string
  readonly json: boolean
  readonly image: string
  readonly 'admin-listen': string
  readonly 'admin-token-file'?: string
  readonly dir?: string
  readonly advertise?: string
  readonly file: string[]
  readonly help: boolean
}

const HELP = `usage: proxy-gate doctor [--rules FILE] [--json] [--image IMAGE] [--admin-listen HOST:PORT] [--admin-token-file FILE] [--dir DIR] [--advertise HOST:PORT] [--file TARGET=PATH]...

Checks that Docker goes through proxy-gate: a line per check (ok, PROBLEM, or -- not configured),
what it means and the command that fixes it. Exit status 0 when no check found a problem, 1 when one did.
  proxy-gate     answers /readyz at the address in the rules
  rules          the rules file is valid; local CA: present and not near expiry when rules need it
  docker T       each Docker settings file that exists (settings-store, settings, admin, cli, daemon)
                 points at this proxy-gate, for Docker Desktop and for containers, and keeps
                 localhost, 127.0.0.1 and *.docker.internal direct
  docker info    the daemon's proxy lines
  container probe  a container (IMAGE, never pulled) sends one request through its HTTP_PROXY to
                 http://${PROBE_HOST}/doctor/NONCE, which proxy-gate answers itself; the admin API
                 confirms that this proxy-gate saw it
  login service  whether proxy-gate starts at login

  --image IMAGE          the probe's image, which needs sh and nc (default: busybox)
  --admin-listen, --admin-token-file, --dir   as given to "proxy-gate start" (the admin API and its token)
  --advertise HOST:PORT  the address containers use for proxy-gate, also counted as this proxy-gate
  --file TARGET=PATH     where a Docker file is when not at its usual place (e.g. daemon=~/.config/docker/daemon.json)
  --json                 {"ok": BOOLEAN, "checks": [{"name", "status", "detail", "fix"?}]}`

function parse(argv: string[]): Values {
  return parseArgs({ args: argv, options: OPTIONS, allowPositionals: false, strict: true }).values
}

const LOOPBACK_NAMES = ['127.0.0.1', 'localhost', '::1', 'host.docker.internal']

/** The names that reach this proxy-gate: its listener's, loopback's, and every address of the machine for a wildcard listener. */
function hereAddress(config: Config, display: string, advertise: string | undefined): HereAddress {
  const host = config.listen.host.toLowerCase()
  const wildcard = host === '0.0.0.0' || host === '::'
  const local = wildcard ? Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((a) => a.address.toLowerCase())) : []
  const loopback = wildcard || host.startsWith('127.') || host === '::1' ? LOOPBACK_NAMES : []
  const advertised = advertise === undefined ? [] : [display.slice(0, display.lastIndexOf(':')).replace(/^\[|\]$/g, '').toLowerCase()]
  return { display, hosts: [...new Set([host, ...loopback, ...local, ...advertised])], port: config.listen.port }
}

/** GET http://ADDRESS/PATH; the status and body, or the error. */
function get(listen: Listen, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string } | { error: string }> {
  const host = listen.host === '0.0.0.0' ? '127.0.0.1' : listen.host === '::' ? '::1' : listen.host
  return new Promise((done) => {
    const req = http.get({ host, port: listen.port, path, headers, timeout: 3000 }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (d: string) => (body += d.slice(0, 4096)))
      res.on('end', () => done({ status: res.statusCode ?? 0, body }))
    })
    req.on('timeout', () => req.destroy(new Error('no answer within 3 s')))
    req.on('error', (error) => done({ error: error.message }))
  })
}

async function running(listen: Listen): Promise<RunningFact> {
  const answer = await get(listen, '/readyz')
  if ('error' in answer) return { kind: 'unreachable', error: answer.error }
  return answer.status === 200 ? { kind: 'ready' } : { kind: 'not ready', status: answer.status }
}

function caFact(config: Config, dir: string | undefined): CaFact {
  if (rulesWithRequestLimits(config.policy).length === 0) return { needed: false }
  const folder = caDir(dir)
  const ca = loadCa(folder)
  if (!ca.ok) return { needed: true, ok: false, error: ca.error }
  return { needed: true, ok: true, notAfter: caInfo(ca.value.certPem).notAfter, cert: caPaths(folder).cert }
}

function fileFact(path: string): FileFact {
  const read = readJsonFile(path)
  if (!read.ok) return { kind: 'unreadable', error: read.error }
  return read.value.value === undefined ? { kind: 'missing' } : { kind: 'json', value: read.value.value }
}

function fileOverrides(entries: readonly string[]): Map<string, string> | string {
  const map = new Map<string, string>()
  for (const entry of entries) {
    const [target = '', ...rest] = entry.split('=')
    if (!DOCKER_TARGETS.includes(target as DockerTarget) || rest.length === 0) return `--file takes TARGET=PATH with TARGET one of ${DOCKER_TARGETS.join(', ')}`
    map.set(target, resolve(rest.join('=')))
  }
  return map
}

function docker(args: readonly string[], timeoutMs: number): { ok: boolean; stdout: string; why: string } {
  const r = spawnSync('docker', args, { encoding: 'utf8', timeout: timeoutMs })
  const why = r.error ? ((r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no docker command on PATH' : r.error.message) : (((r.stderr as string | null) ?? '').trim().split('\n').at(-1) ?? '')
  // stdout is null when docker could not be started at all (status null then)
  return { ok: r.status === 0, stdout: r.status === 0 ? r.stdout : '', why }
}

function dockerInfo(): DockerInfoFact {
  const r = docker(['info', '--format', '{{json .}}'], 20_000)
  if (!r.ok) return { kind: 'unavailable', why: `docker info failed: ${r.why || 'no output'}` }
  try {
    const info = JSON.parse(r.stdout) as { HTTPProxy?: string; HTTPSProxy?: string; NoProxy?: string }
    return { kind: 'info', http: info.HTTPProxy ?? '', https: info.HTTPSProxy ?? '', noProxy: info.NoProxy ?? '' }
  } catch {
    return { kind: 'unavailable', why: 'docker info printed no JSON' }
  }
}

/** Run in the container: one plain-HTTP request through $HTTP_PROXY, with nc (busybox has it; wget is not needed). */
function probeScript(nonce: string): string {
  return [
    'p="${HTTP_PROXY:-${http_proxy:-}}"',
    '[ -n "$p" ] || { echo no-proxy-variable; exit 3; }',
    'a="${p#*://}"; a="${a%%/*}"; a="${a##*@}"',
    'case "$a" in \\[*) h="${a%%]*}"; h="${h#[}"; r="${a##*]}";; *) h="${a%%:*}"; r="${a#"$h"}";; esac',
    'port="${r#:}"; [ -n "$port" ] || port=80',
    `printf 'GET http://${PROBE_HOST}/doctor/${nonce} HTTP/1.0\\r\\nHost: ${PROBE_HOST}\\r\\n\\r\\n' | nc -w 10 "$h" "$port"`,
  ].join('\n')
}

async function confirm(values: Values, nonce: string): Promise<{ ok: true; client: string } | { ok: false; why: string }> {
  const listen = parseListen(values['admin-listen'])
  if (!listen.ok) return { ok: false, why: `--admin-listen: ${listen.error}` }
  const tokenFile = resolve(values['admin-token-file'] ?? `${caDir(values.dir)}/admin-token`)
  let token: string
  try {
    token = readFileSync(tokenFile, 'utf8').trim()
  } catch (error) {
    return { ok: false, why: `cannot read the admin token: ${(error as Error).message}` }
  }
  const answer = await get(listen.value, `/api/probe/${nonce}`, { Authorization: `Bearer ${token}` })
  if ('error' in answer) return { ok: false, why: `no admin API at ${values['admin-listen']}: ${answer.error}` }
  if (answer.status === 404) return { ok: false, why: `the proxy-gate whose admin API is at ${values['admin-listen']} did not see it: another proxy-gate answered` }
  if (answer.status !== 200) return { ok: false, why: `the admin API answered ${answer.status}: ${answer.body.trim().slice(0, 200)}` }
  const client = /"client":"([^"]*)"/.exec(answer.body)?.[1]
  return client === undefined ? { ok: false, why: `the admin API's answer is not a probe record: ${answer.body.slice(0, 200)}` } : { ok: true, client }
}

async function probe(values: Values): Promise<ProbeFact> {
  const image = values.image
  if (!docker(['image', 'inspect', image], 20_000).ok) return { kind: 'skipped', why: `no image ${image} here (doctor never pulls)`, fix: `docker pull ${image}, or pass --image with an image that has sh and nc` }
  const nonce = randomBytes(16).toString('hex')
  const run = spawnSync('docker', ['run', '--rm', '--entrypoint', 'sh', image, '-c', probeScript(nonce)], { encoding: 'utf8', timeout: 60_000 })
  const output = `${(run.stdout as string | null) ?? ''}${(run.stderr as string | null) ?? ''}`
  if (output.includes(`proxy-gate answered probe ${nonce}`)) return { kind: 'answered', confirmed: await confirm(values, nonce) }
  if (output.includes('no-proxy-variable')) return { kind: 'no proxy variable' }
  const said = output.trim().replace(/\s+/g, ' ').slice(-300)
  return { kind: 'failed', output: said || `no answer (exit status ${run.status ?? run.signal ?? '?'})` }
}

function flag(name: string, value: string | undefined): string {
  return value === undefined ? '' : ` --${name} ${value}`
}

async function dockerChecks(values: Values, here: HereAddress, files: Map<string, string>): Promise<Check[]> {
  const flags: FixFlags = { rules: flag('rules', values.rules), advertise: flag('advertise', values.advertise) }
  const env = environment(currentOs())
  const pathOf = (target: DockerTarget): string => files.get(target) ?? defaultPath(target, env)
  const store = fileFact(pathOf('settings-store'))
  const checks = DOCKER_TARGETS.map((target): Check => {
    const path = pathOf(target)
    // Docker Desktop 4.35+ reads settings-store.json only; a settings.json left beside it is history
    if (target === 'settings' && store.kind !== 'missing' && existsSync(path)) return { name: 'docker settings', status: 'not configured', detail: `${path} is not read: settings-store.json is there (Docker Desktop 4.35+)` }
    return dockerFileCheck(target, path, target === 'settings-store' ? store : fileFact(path), here, flags)
  })
  const info = dockerInfo()
  checks.push(dockerInfoCheck(info, here))
  const fact: ProbeFact = info.kind === 'unavailable' ? { kind: 'skipped', why: 'no Docker engine answers' } : await probe(values)
  checks.push(probeCheck(fact, values.image, here, `proxy-gate docker --target cli${flags.rules}${flags.advertise} --write`))
  return checks
}

export async function doctorCommand(argv: string[]): Promise<number> {
  let values: Values
  try {
    values = parse(argv)
  } catch (error) {
    return usageError(`${(error as Error).message} (see proxy-gate doctor --help)`)
  }
  if (values.help) {
    console.log(HELP)
    return 0
  }
  const files = fileOverrides(values.file)
  if (typeof files === 'string') return usageError(files)
  const rules = rulesPath(values.rules)
  const loaded = loadRulesFile(rules.file)
  const checks: Check[] = [rulesCheck(rules.file, loaded.ok ? undefined : formatRuleErrors(loaded.errors).split('\n').join('; '))]
  if (loaded.ok) {
    const config = loaded.value
    const display = advertisedAddress(config, values.advertise)
    if (!display.ok) return usageError(display.error)
    const here = hereAddress(config, display.value, values.advertise)
    const { host, port } = config.listen
    checks.unshift(runningCheck(await running(config.listen), `${host.includes(':') ? `[${host}]` : host}:${port}`, `proxy-gate start${flag('rules', values.rules)}`))
    checks.push(caCheck(caFact(config, values.dir), Date.now(), flag('dir', values.dir)))
    checks.push(...(await dockerChecks(values, here, files)))
  }
  checks.push(loginServiceCheck(serviceStatus(currentOs(), homedir()).installed))
  console.log(values.json ? JSON.stringify({ ok: !hasProblem(checks), checks }, null, 2) : formatChecks(checks))
  return hasProblem(checks) ? 1 : 0
}
