// `proxy-gate sandbox build|up|run|down|compose`: a container network whose only way out is
// proxy-gate, driven through the docker CLI (DOCKER_HOST honoured) or Podman's (--engine podman),
// in the words of the engine the CLI turns out to drive (engine.ts asks it).
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, rmSync, statSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { parseArgs } from 'node:util'
import { VERSION } from '../core/version.js'
import { parseIp } from '../policy/ip.js'
import { podmanNetworkProblems, subnetTemplate, type EngineIdentity, type EngineKind } from '../wiring/engine.js'
import { checkNameAndSubnet, DEFAULT_SUBNET, downCommands, networkCommands, proxyCommands, proxyUrl, runArgs, sandboxPlan, socksUrl, type SandboxPlan } from '../wiring/sandbox.js'
import { copiedVariables, escapes } from '../wiring/sandbox-args.js'
import { composeFile } from '../wiring/sandbox-compose.js'
import type { WorkloadSecrets } from '../wiring/sandbox-secrets.js'
import { DEFAULT_PROBE_ADDRESSES } from '../wiring/sandbox-verify.js'
import type { Config } from '../rules/config.js'
import { loadRulesFile, rulesPath } from '../rules/file.js'
import { caDir } from './ca.js'
import { printErrors, usageError } from './common.js'
import { detectEngine } from './engine.js'
import { prepareContext } from './sandbox-image.js'
import { probeCommand } from './sandbox-probe.js'
import { proxyGateSecrets, secretValuesProblem, unreadableProblem, workloadSecrets } from './sandbox-secrets.js'
import { printOutcome, verifySandbox } from './sandbox-verify.js'

/** The image `sandbox build` tags and `up` runs; deploy/kubernetes names it too. */
export const DEFAULT_IMAGE = `proxy-gate:${VERSION}`

const SANDBOX_HELP = `usage: proxy-gate sandbox <build|up|run|verify|down|compose> [options]

  build   [--base IMAGE] [--tag TAG]       build the proxy-gate image with no network access
                                           (base default node:22-slim; tag default ${DEFAULT_IMAGE})
  up      [--name N] [--rules FILE] [--image IMAGE] [--subnet CIDR (default 10.250.0.0/24)]
                                           create the internal network N (default proxy-gate), its egress
                                           network and the proxy-gate container on both (rules mounted
                                           read-only: edits reload); run again to apply a new image.
                                           Then verifies it (below): a network with a way out is removed
          [--probe-address A]...           the public addresses it tries (as for verify)
          [--no-verify]                    skip that check (not recommended)
  run     [--name N] -- DOCKER-RUN-ARGS    docker run --rm on N only, DNS, HTTP(S)_PROXY and ALL_PROXY
                                           (SOCKS5, port 1080) set to proxy-gate; the arguments go to
                                           docker run as they are, but
                                           those that undo the confinement (--network, --privileged,
                                           --cap-add NET_ADMIN, --dns, ...) are refused
          [--allow-escape]                 pass them on anyway, with a warning
          [--no-secrets]                   leave out the secrets' placeholders (each secret's NAME is
                                           otherwise set to its placeholder; never to a value)
  verify  [--name N] [--json] [--probe-address A]...
                                           prove from inside N that proxy-gate is the only way out: a
                                           short-lived probe container tries the host's addresses, the
                                           metadata address, public addresses (default ${DEFAULT_PROBE_ADDRESSES.join(', ')})
                                           and DNS. Exit 0 confined, 1 a path is open, 2 could not run
  down    [--name N]                       remove the container and both networks
  compose [--name N] [--rules FILE] [--image IMAGE] [--subnet CIDR] [--no-secrets]
                                           print a Compose file: on Docker the same topology, on
                                           Podman services that join the network up made

  --dir DIR                                the local CA folder (default as for "ca"): up, run and
                                           compose give proxy-gate the CA and secrets key in it, and
                                           workloads a CA bundle (DIR/ca-bundle.pem) when the rules
                                           open tunnels (methods/paths rules, secrets)

  --engine docker|podman                   the CLI to drive (default docker; DOCKER_HOST is honoured);
                                           its "version" tells which engine it drives (a docker
                                           that is Podman gets Podman's construction)`

export const SANDBOX_OPTIONS = {
  name: { type: 'string', default: 'proxy-gate' },
  rules: { type: 'string' },
  image: { type: 'string', default: DEFAULT_IMAGE },
  tag: { type: 'string', default: DEFAULT_IMAGE },
  base: { type: 'string', default: 'node:22-slim' },
  subnet: { type: 'string' },
  engine: { type: 'string', default: 'docker' },
  json: { type: 'boolean', default: false },
  'probe-address': { type: 'string', multiple: true },
  'no-verify': { type: 'boolean', default: false },
  'allow-escape': { type: 'boolean', default: false },
  dir: { type: 'string' },
  'no-secrets': { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const

/** the engines the sandbox is built for (a path to one, Podman's remote client and Windows' .exe too) */
const ENGINE_CLI = /^(docker|podman|podman-remote)(\.exe)?$/

type Value<O> = O extends { multiple: true } ? string[] | undefined : O extends { default: boolean } ? boolean : O extends { default: string } ? string : string | undefined
type Values = { readonly [K in keyof typeof SANDBOX_OPTIONS]: Value<(typeof SANDBOX_OPTIONS)[K]> }

/** Runs the engine with its output shown; resolves with its exit code. */
function engine(values: Values, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return new Promise((done) => {
    const child = spawn(values.engine, args, { stdio: 'inherit', env })
    child.on('error', (error) => {
      console.error(`proxy-gate sandbox: cannot run ${values.engine}: ${error.message}`)
      done(127)
    })
    child.on('close', (code, signal) => done(code ?? (signal ? 128 : 1)))
  })
}

/** Whether the engine has it; a failure other than "no such ..." is shown, so that a "no" for another reason is seen. */
function exists(values: Values, kind: 'network' | 'container', name: string): boolean {
  const r = spawnSync(values.engine, [kind, 'inspect', name], { encoding: 'utf8' })
  if (r.status === 0) return true
  const said = r.stderr.trim()
  if (!/no such|not found/i.test(said)) console.error(`proxy-gate sandbox: ${values.engine} ${kind} inspect ${name} failed (${r.status ?? r.signal}): ${said || r.error?.message}`)
  return false
}

/** The rules file's owner, unless root: the container runs as that user so that it can read what the user can. */
function ownerOf(path: string): string | undefined {
  try {
    const { uid, gid } = statSync(path)
    return uid === 0 ? undefined : `${uid}:${gid}`
  } catch {
    return undefined
  }
}

/** The subnet of an existing sandbox network: `run` and `down` find proxy-gate where `up` put it. */
function existingSubnet(values: Values, kind: EngineKind, network: string): string | undefined {
  const r = spawnSync(values.engine, ['network', 'inspect', '-f', subnetTemplate(kind), network], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim().split(' ')[0] || undefined : undefined
}

/**
 * The engine behind the CLI, or, when it does not say, the one --engine names with why it did not
 * (the plan is still made: run's refusals and compose do not need an engine that answers).
 */
function identify(values: Values): { readonly engine: EngineIdentity; readonly error?: string } {
  const found = detectEngine(values.engine)
  if (found.ok) return { engine: found.value }
  return { engine: { kind: values.engine === 'podman' ? 'podman' : 'docker', version: '', name: values.engine }, error: found.error }
}

function plan(values: Values, found: EngineIdentity): SandboxPlan | undefined {
  const { file: rules } = rulesPath(values.rules)
  const subnet = values.subnet ?? existingSubnet(values, found.kind, values.name) ?? DEFAULT_SUBNET
  const planned = sandboxPlan({ name: values.name, subnet, image: values.image, rulesDir: dirname(rules), rulesFile: basename(rules), user: ownerOf(rules), engine: found.kind, engineVersion: found.version })
  if (!planned.ok) {
    usageError(planned.error)
    return undefined
  }
  return planned.value
}

async function build(values: Values): Promise<number> {
  let context: string
  try {
    context = prepareContext()
  } catch (error) {
    console.error(`proxy-gate sandbox build: ${(error as Error).message}`)
    return 1
  }
  try {
    const args = ['build', '--network', 'none', '--build-arg', `NODE_IMAGE=${values.base}`, '-t', values.tag, '-f', join(context, 'Dockerfile'), context]
    return await engine(values, args, { DOCKER_BUILDKIT: '0', ...process.env })
  } finally {
    rmSync(context, { recursive: true, force: true })
  }
}

async function runAll(values: Values, commands: readonly string[][]): Promise<number> {
  for (const args of commands) {
    const code = await engine(values, args)
    if (code !== 0) return code
  }
  return 0
}

/**
 * Follows the container's log until proxy-gate says it listens (true) or that it did not start,
 * or the container stops (false, with what it said shown).
 */
function started(values: Values, container: string): Promise<boolean> {
  return new Promise((done) => {
    const follow = spawn(values.engine, ['logs', '-f', container], { stdio: ['ignore', 'pipe', 'pipe'] })
    let said = ''
    let settled = false
    const finish = (ok: boolean): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      follow.kill()
      if (!ok) console.error(`proxy-gate did not start in ${container}:\n${said.trim()}`)
      done(ok)
    }
    const timer = setTimeout(() => finish(false), 30_000)
    const read = (chunk: Buffer): void => {
      said += chunk.toString('utf8')
      if (/"message":"listening"/.test(said)) finish(true)
      else if (said.includes('proxy-gate did not start')) finish(false)
    }
    follow.stdout.on('data', read)
    follow.stderr.on('data', read)
    follow.on('close', () => finish(/"message":"listening"/.test(said)))
  })
}

/**
 * Why an existing network cannot be the sandbox's as it is, or undefined. Podman's own inspect shows
 * how a network was made; a Docker network's isolation is for `verify` to judge.
 */
function existingNetworkProblem(values: Values, p: SandboxPlan): string | undefined {
  if (p.engine !== 'podman') return undefined
  const r = spawnSync(values.engine, ['network', 'inspect', p.network], { encoding: 'utf8' })
  const problems = podmanNetworkProblems(r.stdout)
  if (problems.length === 0) return undefined
  return `network ${p.network} exists but is not the airtight kind that up makes: ${problems.join('; ')}. Remove it (proxy-gate sandbox down --name ${p.name} --engine ${values.engine}) and run up again`
}

/** The rules the sandbox's proxy-gate reads, or undefined with the problems shown. */
function sandboxRules(p: SandboxPlan): Config | undefined {
  const rules = join(p.rulesDir, p.rulesFile)
  const loaded = loadRulesFile(rules)
  if (loaded.ok) return loaded.value
  printErrors(rules, loaded.errors)
  return undefined
}

/**
 * The rules file's whole folder is mounted (so that an editor's rename is seen and reloads): in a
 * clone, that is certs/ too, the local CA's key and the admin token, which the container never reads.
 */
function warnAboutMount(p: SandboxPlan): void {
  const found = ['certs', '.git'].filter((entry) => existsSync(join(p.rulesDir, entry)))
  if (found.length === 0) return
  console.error(`proxy-gate sandbox: WARNING: the proxy-gate container gets all of ${p.rulesDir} (read-only), ${found.map((e) => `${e}/`).join(' and ')} included${found.includes('certs') ? ' (the local CA key and the admin token)' : ''}: keep the rules in a folder of their own (proxy-gate init --rules DIR/rules.json) and pass --rules DIR/rules.json`)
}

async function up(values: Values, p: SandboxPlan, engineName: string): Promise<number> {
  const rules = join(p.rulesDir, p.rulesFile)
  const config = sandboxRules(p)
  if (config === undefined) return 1
  warnAboutMount(p)
  const secrets = proxyGateSecrets(config, rules, caDir(values.dir), p.user)
  const problem = secrets.ok ? (secretValuesProblem(config, rules, process.env) ?? unreadableProblem(secrets.value, config.secrets.length > 0, p.user)) : secrets.error
  if (!secrets.ok || problem !== undefined) {
    console.error(`proxy-gate sandbox up: ${problem}`)
    return 1
  }
  for (const network of networkCommands(p)) {
    if (exists(values, 'network', network.name)) {
      const problem = network.name === p.network ? existingNetworkProblem(values, p) : undefined
      if (problem === undefined) continue
      console.error(`proxy-gate sandbox up: ${problem}`)
      return 1
    }
    const code = await engine(values, network.create)
    if (code !== 0) return code
  }
  if (exists(values, 'container', p.container)) await engine(values, ['rm', '-f', p.container])
  const code = await runAll(values, proxyCommands(p, secrets.value))
  if (code !== 0) return code
  if (!(await started(values, p.container))) {
    await engine(values, ['rm', '-f', p.container])
    return 1
  }
  const verified = await verifyAfterUp(values, p)
  if (verified !== 0) return verified
  console.log(`sandbox "${p.name}" is up on ${engineName}: proxy-gate at ${p.address} (DNS :53, HTTP :80, TLS :443, proxy ${proxyUrl(p)}, SOCKS5 ${socksUrl(p)})
run a workload:  proxy-gate sandbox run --name ${p.name} -- IMAGE [COMMAND...]
its log:         ${values.engine} logs -f ${p.container}
remove it:       proxy-gate sandbox down --name ${p.name}`)
  return 0
}

function verifyRequest(values: Values, p: SandboxPlan): Parameters<typeof verifySandbox>[0] {
  return { engine: values.engine, plan: p, probeAddresses: values['probe-address'] ?? DEFAULT_PROBE_ADDRESSES, rulesFile: join(p.rulesDir, p.rulesFile) }
}

/** `up`'s last step: a sandbox with a way out (or one that could not be checked) is removed, not reported ready. */
async function verifyAfterUp(values: Values, p: SandboxPlan): Promise<number> {
  if (values['no-verify']) {
    console.error(`WARNING: --no-verify: nothing has shown that proxy-gate is the only way out of "${p.network}".\nRun "proxy-gate sandbox verify --name ${p.name}" before you rely on it.`)
    return 0
  }
  const outcome = await verifySandbox(verifyRequest(values, p))
  printOutcome(outcome, false)
  if (outcome.code === 0) return 0
  const why = outcome.code === 1 ? 'it is not confined' : 'it could not be verified'
  console.error(`proxy-gate sandbox up: ${why}: removing it (the proxy-gate container and both networks) so that "sandbox run" cannot use it`)
  await down(values, p)
  return outcome.code
}

/** `run`'s arguments that undo the confinement: refused, or with --allow-escape passed on with a warning. */
function refusesEscapes(values: Values, p: SandboxPlan, args: readonly string[]): boolean {
  const found = escapes(p, args)
  const allow = values['allow-escape']
  for (const e of found) console.error(`proxy-gate sandbox run: ${allow ? 'WARNING: passing on' : 'refused:'} ${e.arg}: ${e.reason}`)
  if (found.length === 0 || allow) return false
  console.error('proxy-gate sandbox run: --allow-escape passes such arguments on (the workload is then not confined)')
  return true
}

async function down(values: Values, p: SandboxPlan): Promise<number> {
  let failed = 0
  for (const { kind, name, remove } of downCommands(p)) {
    if (exists(values, kind, name)) failed ||= await engine(values, remove)
  }
  if (failed === 0) console.log(`sandbox "${p.name}" is down`)
  return failed
}

/** The rules, and a workload's placeholders (unless --no-secrets) and CA bundle; or undefined with the problem shown. */
function workloadSide(values: Values, p: SandboxPlan): { config: Config; workload: WorkloadSecrets } | undefined {
  const config = sandboxRules(p)
  if (config === undefined) return undefined
  const found = workloadSecrets(config, join(p.rulesDir, p.rulesFile), caDir(values.dir), process.env, !values['no-secrets'])
  if (found.ok) return { config, workload: found.value }
  console.error(`proxy-gate sandbox: ${found.error}`)
  return undefined
}

/** `run`'s arguments that would copy a secret's value (or the variable its placeholder goes in) from here into the workload: refused, as escapes are. */
function copiesSecrets(values: Values, config: Config, args: readonly string[]): boolean {
  const names = new Set(config.secrets.flatMap((s) => [s.name, ...(s.from.kind === 'env' ? [s.from.ref] : [])]))
  const found = names.size === 0 ? [] : copiedVariables(args, names)
  const allow = values['allow-escape']
  for (const arg of found) console.error(`proxy-gate sandbox run: ${allow ? 'WARNING: passing on' : 'refused:'} ${arg}: copies a secret's variable from this environment into the workload, which is to hold only placeholders`)
  return found.length > 0 && !allow
}

function compose(values: Values, p: SandboxPlan): number {
  const side = workloadSide(values, p)
  if (side === undefined) return 1
  warnAboutMount(p)
  const { config, workload } = side
  const proxyGate = proxyGateSecrets(config, join(p.rulesDir, p.rulesFile), caDir(values.dir), p.user)
  if (!proxyGate.ok) {
    console.error(`proxy-gate sandbox compose: ${proxyGate.error}`)
    return 1
  }
  process.stdout.write(composeFile(p, { proxyGate: proxyGate.value, workload }))
  return 0
}

export async function sandboxCommand(argv: readonly string[]): Promise<number> {
  if (argv[0] === 'probe') return probeCommand(argv.slice(1))
  let parsed
  try {
    parsed = parseArgs({ args: [...argv], options: SANDBOX_OPTIONS, allowPositionals: true, strict: true })
  } catch (error) {
    return usageError(`${(error as Error).message} (see proxy-gate sandbox --help)`)
  }
  const values = parsed.values as Values
  const [verb, ...rest] = parsed.positionals
  if (values.help || verb === undefined) {
    console.log(SANDBOX_HELP)
    return values.help ? 0 : 2
  }
  if (!ENGINE_CLI.test(basename(values.engine))) return usageError(`--engine must name the docker or podman CLI, not ${JSON.stringify(values.engine)}`)
  if (verb === 'build' && rest.length === 0) return build(values)
  const checked = checkNameAndSubnet(values.name, values.subnet)
  if (!checked.ok) return usageError(checked.error)
  const badProbe = (values['probe-address'] ?? []).find((a) => parseIp(a) === undefined)
  if (badProbe !== undefined) return usageError(`--probe-address ${badProbe}: an IP address`)
  const identified = identify(values)
  const p = plan(values, identified.engine)
  if (!p) return 2
  if (verb === 'run' && rest.length > 0 && refusesEscapes(values, p, rest)) return 2
  if (identified.error !== undefined) {
    const guess = verb === 'compose' && rest.length === 0 && (values.engine === 'docker' || values.engine === 'podman')
    console.error(`proxy-gate sandbox: ${identified.error}${guess ? `; printing the ${values.engine} file as --engine says` : ''}`)
    if (!guess) return 1
  }
  if (verb === 'up' && rest.length === 0) return up(values, p, identified.engine.name)
  if (verb === 'down' && rest.length === 0) return down(values, p)
  if (verb === 'compose' && rest.length === 0) return compose(values, p)
  if (verb === 'verify' && rest.length === 0) {
    const outcome = await verifySandbox(verifyRequest(values, p))
    printOutcome(outcome, values.json)
    return outcome.code
  }
  if (verb === 'run') {
    if (rest.length === 0) return usageError('sandbox run needs an image: proxy-gate sandbox run -- IMAGE [COMMAND...]')
    if (!exists(values, 'container', p.container)) console.error(`proxy-gate sandbox: ${p.container} is not running: run "proxy-gate sandbox up --name ${p.name}" first`)
    const problem = exists(values, 'network', p.network) ? existingNetworkProblem(values, p) : undefined
    if (problem !== undefined) {
      console.error(`proxy-gate sandbox run: ${problem}`)
      return 1
    }
    const side = workloadSide(values, p)
    if (side === undefined) return 1
    if (copiesSecrets(values, side.config, rest)) return 2
    return engine(values, runArgs(p, rest, side.workload))
  }
  return usageError(`unknown sandbox command: ${[verb, ...rest].join(' ')} (see proxy-gate sandbox --help)`)
}

