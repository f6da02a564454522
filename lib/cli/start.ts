// `proxy-gate start`: check everything that can be checked before listening, run the proxy and
// its admin listener, reload the rules when they change, and stop cleanly on a signal.
import { readFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { dirname, join, resolve } from 'node:path'
import { loadCa, type LoadedCa } from '../certs/ca.js'
import { createWatchers, planAdmin, startAdmin, type AdminPlan } from './admin.js'
import { onHangup } from './hangup.js'
import { caCertToServe, caDir, needsCa } from './ca.js'
import { isLoopback, printErrors, usageError } from './common.js'
import type { StartHooks } from './learn.js'
import { advertisedAddress, openBypass } from './wiring.js'
import { configWarnings, parseConfig, parseListen, type Config, type Listen } from '../rules/config.js'
import { parseIp } from '../policy/ip.js'
import { shellWord } from '../core/shell.js'
import { createLogger, LOG_LEVELS, type Logger, type LogLevel } from '../core/log.js'
import { describePattern, formatRuleErrors, type Mode, type RuleError } from '../policy/rules.js'
import { parseSandbox, type SandboxSettings } from '../rules/sandbox.js'
import type { SocksSettings } from '../rules/socks.js'
import { loadRulesFile, rulesPath, watchRulesFile, withOverrides, type Overrides } from '../rules/file.js'
import { sameListeners } from '../proxy/transparent.js'
import { dnsListener } from '../dns/server.js'
import { createProxy, type Proxy } from '../proxy/server.js'
import { armSecrets } from '../secrets/values.js'
import type { Result } from '../policy/target.js'

const MIN_NODE = [20, 19, 2]

export interface StartFlags {
  readonly rules: string | undefined
  readonly listen: string | undefined
  readonly mode: string | undefined
  readonly 'log-level': string | undefined
  readonly 'log-format': string | undefined
  readonly 'insecure-open': boolean
  readonly advertise: string | undefined
  readonly dir: string | undefined
  readonly 'admin-listen': string | undefined
  readonly 'admin-token-file': string | undefined
  readonly sandbox: string | undefined
  readonly socks: string | undefined
}

/** Everything `start` needs, checked before anything listens. */
interface Setup {
  readonly file: string
  /** --rules as given: the wiring hints pass the file on only then (the commands find ./rules.json as start did) */
  readonly rulesFlag: string | undefined
  /** sha256 of the bytes the rules were loaded from: the watcher starts from these, not from a later read */
  readonly hash: string
  /** the rules that ship in the package: announced, never watched */
  readonly packaged: boolean
  readonly overrides: Overrides
  readonly config: Config
  readonly level: LogLevel
  readonly format: 'json' | 'pretty'
  readonly advertise: string | undefined
  readonly ca: LoadedCa
  /** where the local CA lives (--dir) */
  readonly caDir: string
  readonly upstreamCa: string[]
  /** the admin listener, checked (address, token file) before the proxy listens; undefined: off */
  readonly admin: AdminPlan | undefined
  /** --insecure-open: a non-loopback listener without "auth" was consented to */
  readonly insecureOpen: boolean
}

type Checked<T> = { ok: true; value: T } | { ok: false; code: number }

function refuse(message: string): { ok: false; code: number } {
  console.error(`proxy-gate did not start: ${message}`)
  return { ok: false, code: 1 }
}

function nodeTooOld(): boolean {
  const have = process.versions.node.split('.').map(Number)
  for (let i = 0; i < 3; i++) if ((have[i] ?? 0) !== MIN_NODE[i]) return (have[i] ?? 0) < (MIN_NODE[i] ?? 0)
  return false
}

function overridesFrom(flags: StartFlags): Result<Overrides> {
  const overrides: { listen?: Config['listen']; mode?: Mode; sandbox?: SandboxSettings; socks?: SocksSettings } = {}
  if (flags.listen !== undefined) {
    const listen = parseListen(flags.listen)
    if (!listen.ok) return { ok: false, error: `--listen: ${listen.error}` }
    overrides.listen = listen.value
  }
  if (flags.socks !== undefined) {
    const socks = parseListen(flags.socks)
    if (!socks.ok) return { ok: false, error: `--socks: ${socks.error}` }
    overrides.socks = { listen: socks.value }
  }
  if (flags.mode !== undefined) {
    if (flags.mode !== 'enforce' && flags.mode !== 'report') return { ok: false, error: '--mode must be enforce or report' }
    overrides.mode = flags.mode
  }
  if (flags.sandbox !== undefined) {
    const errors: RuleError[] = []
    const sandbox = parseSandbox(errors, { address: flags.sandbox })
    if (!sandbox) return { ok: false, error: `--sandbox: ${errors[0]?.message ?? 'bad address'}` }
    overrides.sandbox = sandbox
  }
  return { ok: true, value: overrides }
}

/** Rules that limit methods or paths open TLS tunnels, which takes the local CA. */
/** tls.upstreamCaFiles, read relative to the rules file. */
function readUpstreamCa(rulesFile: string, config: Config): Result<string[]> {
  const pems: string[] = []
  for (const name of config.tls.upstreamCaFiles) {
    const path = resolve(dirname(rulesFile), name)
    try {
      pems.push(readFileSync(path, 'utf8'))
    } catch (error) {
      return { ok: false, error: `tls.upstreamCaFiles: cannot read ${path}: ${(error as Error).message}` }
    }
  }
  return { ok: true, value: pems }
}

/** Exposure rules for the listeners (the proxy port's, the SOCKS one's): open listeners need consent or auth, report mode stays local. */
function listenProblem(config: Config, insecureOpen: boolean): string | undefined {
  return exposed(config, config.listen.host, '', insecureOpen) ?? (config.socks && exposed(config, config.socks.listen.host, 'the SOCKS listener: ', insecureOpen))
}

function exposed(config: Config, host: string, which: string, insecureOpen: boolean): string | undefined {
  if (isLoopback(host)) return undefined
  if (config.mode === 'report') return `${which}report mode lets everything through, so it only runs on a loopback listener (not ${host})`
  if (!insecureOpen && !config.auth) return `${which}listening on ${host} lets anyone who can reach it use the proxy; add "auth" (proxy-gate passwd USER) or pass --insecure-open`
  return undefined
}

function check(flags: StartFlags): Checked<Setup> {
  if (nodeTooOld()) {
    console.error(`proxy-gate needs Node.js ${MIN_NODE.join('.')} or newer (this is ${process.versions.node}): older 20.x releases have a request-smuggling flaw`)
    return { ok: false, code: 2 }
  }
  const level = (flags['log-level'] ?? 'info') as LogLevel
  if (!LOG_LEVELS.includes(level)) return { ok: false, code: usageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`) }
  const format = flags['log-format'] ?? (process.stdout.isTTY ? 'pretty' : 'json')
  if (format !== 'json' && format !== 'pretty') return { ok: false, code: usageError('--log-format must be json or pretty') }
  const overrides = overridesFrom(flags)
  if (!overrides.ok) return { ok: false, code: usageError(overrides.error) }
  const { file, packaged } = rulesPath(flags.rules)
  const loaded = loadRulesFile(file, overrides.value)
  if (!loaded.ok) {
    printErrors(file, loaded.errors)
    return refuse('fix the rules file (see "proxy-gate validate")')
  }
  const advertise = flags.advertise === undefined ? { ok: true as const, value: undefined } : advertisedAddress(loaded.value, flags.advertise)
  if (!advertise.ok) return { ok: false, code: usageError(advertise.error) }
  const problem = listenProblem(loaded.value, flags['insecure-open'])
  if (problem) return refuse(problem)
  const dir = caDir(flags.dir)
  const ca = loadCa(dir)
  const caMissing = needsCa(loaded.value, ca)
  if (caMissing) return refuse(caMissing)
  const armed = armSecrets(loaded.value, dir, file, process.env)
  if (!armed.ok) return refuse(armed.error)
  const config = armed.value
  const upstreamCa = readUpstreamCa(file, config)
  if (!upstreamCa.ok) return refuse(upstreamCa.error)
  const admin = planAdmin(flags['admin-listen'] ?? '127.0.0.1:3129', flags['insecure-open'], resolve(flags['admin-token-file'] ?? join(dir, 'admin-token')))
  if (!admin.ok) return refuse(admin.error)
  return { ok: true, value: { admin: admin.value, file, rulesFlag: flags.rules, hash: loaded.hash, packaged, overrides: overrides.value, config, level, format, advertise: advertise.value, ca, caDir: dir, upstreamCa: upstreamCa.value, insecureOpen: flags['insecure-open'] } }
}

/** Where it listens, where the PAC file is, and the commands that wire clients to it. */
function announce(log: Logger, setup: Setup, address: AddressInfo, socks: AddressInfo | undefined): void {
  const { config, advertise, file } = setup
  if (!isLoopback(address.address)) log.warn('listening on a non-loopback address: anyone who can reach it can use this proxy', { address: address.address })
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`
  if (!advertise && parseIp(address.address)?.value === 0n) log.warn('listening on every interface: pass --advertise HOST:PORT so the PAC file names an address clients can reach')
  const pacUrl = `${advertise ? `http://${advertise}` : url}/proxy.pac`
  log.info('listening', { url, pac: pacUrl, rules: file, allow: config.policy.allow.length, deny: config.policy.deny.length, mode: config.mode, upstream: config.upstream?.display })
  log.info('wire it up', wiringHints(setup, address, pacUrl))
  if (socks) log.info('SOCKS5 listening', { socks: formatListen({ host: socks.address, port: socks.port }), auth: config.auth ? 'username/password' : 'none' })
  warnAboutRules(log, file, config)
  const open = openBypass(config.bypass)
  if (open.length > 0) log.warn('bypass lets clients wired by proxy-gate reach these hosts directly, unchecked by the rules', { bypass: open.map(describePattern) })
}

/**
 * The wiring commands for this proxy as it runs: they read the address from the rules file, so they
 * are given the same --rules, and --advertise when --listen or --advertise moved it from the file's.
 */
function wiringHints(setup: Setup, address: AddressInfo, pacUrl: string): Record<string, string> {
  const rules = setup.rulesFlag === undefined ? '' : ` --rules ${shellWord(setup.file)}`
  const moved = setup.advertise !== undefined || setup.overrides.listen !== undefined
  const wildcard = parseIp(address.address)?.value === 0n
  const host = wildcard ? '127.0.0.1' : address.family === 'IPv6' ? `[${address.address}]` : address.address
  const advertise = moved ? ` --advertise ${setup.advertise ?? `${host}:${address.port}`}` : ''
  // containers reach the host as host.docker.internal (127.0.0.1 in a container is the container)
  const cliAdvertise = moved ? ` --advertise ${setup.advertise ?? `host.docker.internal:${address.port}`}` : ''
  return {
    dockerDesktop: `npx proxy-gate docker --target settings-store --write${rules}${advertise}   (then restart Docker Desktop)`,
    dockerDesktopAdmin: `npx proxy-gate docker --target admin --pac --write${rules}${advertise}   (Docker Business, locked for every user; PAC URL ${pacUrl})`,
    containerEnv: `npx proxy-gate docker --target cli --write${rules}${cliAdvertise}`,
    systemProxy: `npx proxy-gate system-proxy --pac${rules}${advertise}   (PAC URL ${pacUrl})`,
  }
}

/** Rules that load but may not do what they seem to: logged at start and after each reload, as validate prints them. */
function warnAboutRules(log: Logger, file: string, config: Config): void {
  const warnings = configWarnings(config)
  if (warnings.length > 0) log.warn('rules with warnings (see "proxy-gate validate")', { rules: file, warnings: formatRuleErrors(warnings).split('\n') })
}

type ReloadResult = { ok: boolean; errors?: string[] }

function formatListen({ host, port }: Listen): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`
}

/**
 * What start would refuse in new rules for the running proxy: exposure (as `start` checks it), a
 * local CA the rules need, and listeners, which are bound once (a change needs a restart).
 */
function reloadProblem(setup: Setup, next: Config): string | undefined {
  const { listen } = next
  const running = setup.config
  if (listen.host !== running.listen.host || listen.port !== running.listen.port) {
    return `"listen" changed to ${formatListen(listen)} (running on ${formatListen(running.listen)}): restart proxy-gate to apply it`
  }
  if (!sameListeners(running.sandbox, next.sandbox) || dnsListener(running.sandbox) !== dnsListener(next.sandbox)) {
    return '"sandbox" listeners changed (address, http, tls, socks or dns ports): restart proxy-gate to apply them'
  }
  if (JSON.stringify(next.socks?.listen) !== JSON.stringify(running.socks?.listen)) {
    return `"socks" changed to ${next.socks ? formatListen(next.socks.listen) : 'none'} (running: ${running.socks ? formatListen(running.socks.listen) : 'none'}): restart proxy-gate to apply it`
  }
  return listenProblem(next, setup.insecureOpen) ?? needsCa(next, setup.ca)
}

/** What a reload would refuse in this rules document (the dashboard's Allow checks before it writes). */
function problemsIn(setup: Setup, document: unknown): string[] {
  const parsed = parseConfig(document)
  if (!parsed.ok) return formatRuleErrors(parsed.errors).split('\n')
  const problem = reloadProblem(setup, withOverrides(parsed.value, setup.overrides))
  return problem ? [problem] : []
}

type Next = { ok: true; config: Config; upstreamCa: string[] } | { ok: false; errors: string[] }

/** The rules file again, with the files it names: what to run, or why it cannot run (whatever goes wrong: a reload never throws). */
function loadNext(setup: Setup): Next {
  try {
    return readNext(setup)
  } catch (error) {
    return { ok: false, errors: [`cannot load the rules: ${(error as Error).message}`] }
  }
}

function readNext(setup: Setup): Next {
  const next = loadRulesFile(setup.file, setup.overrides)
  if (!next.ok) return { ok: false, errors: formatRuleErrors(next.errors).split('\n') }
  const problem = reloadProblem(setup, next.value)
  if (problem) return { ok: false, errors: [problem] }
  // every secret's value read again (a rotated token); one missing keeps the running rules and secrets
  const armed = armSecrets(next.value, setup.caDir, setup.file, process.env)
  if (!armed.ok) return { ok: false, errors: [armed.error] }
  const upstreamCa = readUpstreamCa(setup.file, next.value)
  return upstreamCa.ok ? { ok: true, config: armed.value, upstreamCa: upstreamCa.value } : { ok: false, errors: [upstreamCa.error] }
}

/**
 * Whether the local CA on disk is no longer the one running (created, replaced or removed since
 * start): leaves are minted and /ca.crt served from the CA loaded at start, so this takes a restart.
 */
function caChanged(setup: Setup): boolean {
  const onDisk = loadCa(setup.caDir)
  return (onDisk.ok ? onDisk.value.certPem : undefined) !== (setup.ca.ok ? setup.ca.value.certPem : undefined)
}

/** Loads the rules file again; a bad file (or an unreadable tls.upstreamCaFiles) is reported and the running rules stay. */
function reloader(setup: Setup, proxy: Proxy, log: Logger, onMode: (mode: Mode) => void): (trigger: string) => ReloadResult {
  const { file } = setup
  return (trigger) => {
    const next = loadNext(setup)
    if (!next.ok) {
      const { errors } = next
      log.error('reload failed: keeping the previous rules', { rules: file, trigger, errors })
      proxy.noteReload({ ok: false, trigger, errors })
      return { ok: false, errors }
    }
    const outcome = proxy.reload(next.config, next.upstreamCa)
    warnAboutRules(log, file, next.config)
    onMode(next.config.mode)
    const restartNeeded = caChanged(setup) ? ['ca'] : []
    if (restartNeeded.length > 0) log.warn('the local CA changed on disk: restart proxy-gate to mint leaves with it and serve it at /ca.crt', { dir: setup.caDir })
    log.info('reloaded', { rules: file, trigger, allow: next.config.policy.allow.length, deny: next.config.policy.deny.length, ...outcome, ...(restartNeeded.length > 0 ? { restartNeeded } : {}) })
    proxy.noteReload({ ok: true, trigger })
    return { ok: true }
  }
}

export async function startCommand(flags: StartFlags, hooks: StartHooks = {}): Promise<number> {
  const checked = check(flags)
  if (!checked.ok) return checked.code
  const setup = checked.value
  const log = createLogger({ level: setup.level, format: setup.format })
  if (setup.packaged) log.info('no ./rules.json here: running on the rules that ship with proxy-gate (read-only, not watched); "proxy-gate init" writes an editable copy', { rules: setup.file, watched: false })
  process.on('uncaughtException', (error) => log.error('uncaught exception', { error: error.stack }))
  process.on('unhandledRejection', (error) => log.error('unhandled rejection', { error: error instanceof Error ? error.stack : String(error) }))
  const caCertPem = caCertToServe(flags.dir, (message, meta) => log.warn(message, meta))
  const watchers = createWatchers()
  const proxy = createProxy({
    config: setup.config,
    log,
    observe: (event) => {
      watchers.observe(event)
      hooks.observe?.(event)
    },
    upstreamCa: setup.upstreamCa,
    ...(setup.advertise ? { advertise: setup.advertise } : {}),
    ...(caCertPem ? { caCertPem } : {}),
    ...(setup.ca.ok ? { ca: setup.ca.value } : {}),
  })
  let address: AddressInfo
  try {
    address = await proxy.listen()
  } catch (error) {
    // the error names the address: the proxy port's own, or a transparent listener's
    return refuse(`cannot listen: ${(error as Error).message}`).code
  }
  announce(log, setup, address, proxy.socksAddress())
  let mode = setup.config.mode
  const reload = reloader(setup, proxy, log, (next) => (mode = next))
  watchers.watch(proxy)
  const admin = await startAdmin({
    plan: setup.admin,
    rulesFile: setup.file,
    packaged: setup.packaged,
    proxy,
    watchers,
    mode: () => mode,
    reload: () => reload('admin'),
    problems: (document) => problemsIn(setup, document),
    log,
  })
  const watcher = setup.packaged
    ? undefined
    : watchRulesFile(setup.file, setup.hash, () => reload('file changed'), { onSame: () => log.debug('rules file touched, its content is unchanged: not reloading', { rules: setup.file }) })
  onHangup(() => reload('SIGHUP'))
  await new Promise<void>((done) => {
    let stopping = false
    const stop = (signal: string): void => {
      clearTimeout(timer)
      if (stopping) {
        log.info('stopping now: a second signal skips the rest of the drain and grace period', { signal })
        return proxy.hurry()
      }
      stopping = true
      log.info('shutting down', { signal, open: proxy.open.size })
      watcher?.close()
      // the admin listener's /readyz says 503 for as long as the proxy drains
      void proxy.shutdown().then(() => admin?.close()).then(() => done())
    }
    process.on('SIGINT', () => stop('SIGINT'))
    process.on('SIGTERM', () => stop('SIGTERM'))
    const timer = hooks.durationMs === undefined ? undefined : setTimeout(() => stop('duration elapsed'), hooks.durationMs)
  })
  log.info('stopped', { code: 0 })
  return 0
}
