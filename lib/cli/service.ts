// `proxy-gate service install|uninstall|status`: proxy-gate started at login by the OS's own service
// manager (launchd, the systemd user manager, Task Scheduler). The files come from
// lib/wiring/service.ts; this writes them and drives launchctl, systemctl and schtasks.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs'
import { homedir, userInfo } from 'node:os'
import { delimiter, dirname, isAbsolute, join, resolve, win32 } from 'node:path'
import { fileURLToPath } from 'node:url'
import { LAUNCHD_LABEL, SERVICE_OSES, TASK_NAME, UNIT_NAME, renderService, servicePaths, unsafePath, type ServiceOs, type ServicePaths, type ServiceSpec } from '../wiring/service.js'
import { loadRulesFile, packagedNotice, rulesPath } from '../rules/file.js'
import type { Result } from '../policy/target.js'
import { caDir } from './ca.js'
import { fail, printErrors } from './common.js'

export interface ServiceArgs {
  readonly rules: string | undefined
  readonly dir: string | undefined
  readonly dryRun: boolean
  readonly os: string | undefined
  readonly force: boolean
}

/** What a platform tool answered; `missing` when the tool itself is not there. */
interface Ran {
  readonly ok: boolean
  readonly out: string
  readonly missing: boolean
}

type Command = readonly [string, ...string[]]

function run([program, ...args]: Command): Ran {
  const result = spawnSync(program, args, { encoding: 'utf8' })
  if (result.error) return { ok: false, out: `${program}: ${result.error.message}`, missing: true }
  return { ok: result.status === 0, out: `${result.stdout}${result.stderr}`.trim(), missing: false }
}

function shown(command: Command): string {
  return command.map((w) => (/^[\w./:@=-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(' ')
}

/** The service manager's view: is the service loaded (registered), is it running, in words. */
interface Probe {
  readonly loaded: boolean | undefined
  readonly running: boolean | undefined
  readonly detail: string
}

interface Platform {
  readonly paths: ServicePaths
  probe(): Probe
  /** the commands that (re)load it, from the manager's view before; `changed`: the file is new or was replaced */
  load(before: Probe, changed: boolean): Command[]
  unload(before: Probe): Command[]
  /** run after the file is gone */
  readonly afterRemove: Command[]
}

const NO_USER_MANAGER = /Failed to connect to bus|DBUS_SESSION_BUS_ADDRESS|XDG_RUNTIME_DIR|No medium found/

function macos(paths: ServicePaths): Platform {
  const domain = `gui/${String(process.getuid?.() ?? 0)}`
  const target = `${domain}/${LAUNCHD_LABEL}`
  return {
    paths,
    probe: () => {
      const print = run(['launchctl', 'print', target])
      if (print.missing) return { loaded: undefined, running: undefined, detail: print.out }
      if (!print.ok) return { loaded: false, running: false, detail: `not loaded in ${domain}` }
      const pid = /\bpid = (\d+)/.exec(print.out)?.[1]
      const state = /\bstate = (\w+)/.exec(print.out)?.[1] ?? 'unknown'
      return { loaded: true, running: state === 'running', detail: pid === undefined ? state : `${state}, pid ${pid}` }
    },
    load: ({ loaded }, changed) => [...(loaded === true && changed ? [['launchctl', 'bootout', target] as const] : []), ...(loaded !== true || changed ? [['launchctl', 'bootstrap', domain, paths.file] as const] : [])],
    unload: ({ loaded }) => (loaded === false ? [] : [['launchctl', 'bootout', target]]),
    afterRemove: [],
  }
}

function linux(paths: ServicePaths): Platform {
  const systemctl = (...args: string[]): Command => ['systemctl', '--user', ...args]
  return {
    paths,
    probe: () => {
      const active = run(systemctl('is-active', UNIT_NAME))
      const state = active.out.split('\n')[0] ?? ''
      if (active.missing || NO_USER_MANAGER.test(active.out)) return { loaded: undefined, running: undefined, detail: `no systemd user manager here (${state})` }
      return { loaded: existsSync(paths.file), running: state === 'active', detail: state }
    },
    load: ({ running }, changed) => [systemctl('daemon-reload'), systemctl('enable', '--now', UNIT_NAME), ...(running === true && changed ? [systemctl('restart', UNIT_NAME)] : [])],
    unload: () => [systemctl('disable', '--now', UNIT_NAME)],
    afterRemove: [systemctl('daemon-reload')],
  }
}

function windows(paths: ServicePaths): Platform {
  return {
    paths,
    probe: () => {
      const query = run(['schtasks', '/Query', '/TN', TASK_NAME, '/FO', 'CSV', '/NH'])
      if (query.missing) return { loaded: undefined, running: undefined, detail: query.out }
      if (!query.ok) return { loaded: false, running: false, detail: 'no task in Task Scheduler' }
      const status = /"([^"]*)"\s*$/.exec(query.out)?.[1] ?? query.out
      return { loaded: true, running: status === 'Running', detail: status }
    },
    load: ({ loaded, running }, changed) => [
      ...(running === true && changed ? [['schtasks', '/End', '/TN', TASK_NAME] as const] : []),
      ...(loaded !== true || changed ? [['schtasks', '/Create', '/XML', paths.file, '/TN', TASK_NAME, ...(loaded === true ? ['/F'] : [])] as const] : []),
      ...(running !== true || changed ? [['schtasks', '/Run', '/TN', TASK_NAME] as const] : []),
    ],
    unload: ({ loaded, running }) => [...(running === true ? [['schtasks', '/End', '/TN', TASK_NAME] as const] : []), ...(loaded === false ? [] : [['schtasks', '/Delete', '/TN', TASK_NAME, '/F'] as const])],
    afterRemove: [],
  }
}

function platform(os: ServiceOs, home: string): Platform {
  const paths = servicePaths(os, home)
  return os === 'macos' ? macos(paths) : os === 'linux' ? linux(paths) : windows(paths)
}

/** The login service as `status` (and doctor) report it: running is undefined when the manager cannot be asked. */
export interface ServiceState extends ServicePaths, Probe {
  /** its file exists */
  readonly installed: boolean
}

/** Whether the login service is installed (its file exists) and what the service manager says of it. */
export function serviceStatus(os: ServiceOs, home: string): ServiceState {
  const p = platform(os, home)
  const installed = existsSync(p.paths.file)
  return { ...p.paths, installed, ...p.probe() }
}

/** The service file's bytes: Task Scheduler gets UTF-16 with a byte-order mark. */
function encode(os: ServiceOs, text: string): Buffer {
  return os === 'windows' ? Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]) : Buffer.from(text)
}

/** The CLI as installed: dist/cli.js beside this module. npx's cache is cleared and replaced, so never that. */
function installedCli(): Result<string> {
  const cli = fileURLToPath(new URL('../cli.js', import.meta.url))
  if (/[\\/]_npx[\\/]/.test(cli)) {
    return { ok: false, error: `this proxy-gate runs from npx's cache (${cli}), which npm clears and replaces: a login service cannot point there. Install it for good with "npm install -g proxy-gate", then run "proxy-gate service install"` }
  }
  return { ok: true, value: cli }
}

function realpath(path: string): string | undefined {
  try {
    return realpathSync(path)
  } catch {
    return undefined
  }
}

/**
 * This node by a name that survives upgrades: the first `node` on PATH that is this very binary,
 * in a folder reached without symlinks (Homebrew's /opt/homebrew/bin/node, not the versioned
 * Cellar path it points to; not fnm's per-shell folders, which are symlinks that go away). Else
 * process.execPath.
 */
function stableNode(): string {
  const self = realpath(process.execPath)
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, process.platform === 'win32' ? 'node.exe' : 'node')
    if (isAbsolute(dir) && realpath(dir) === dir && realpath(candidate) === self) return candidate
  }
  return process.execPath
}

function windowsUser(): string {
  const name = process.env.USERNAME ?? userInfo().username
  return process.env.USERDOMAIN ? `${process.env.USERDOMAIN}\\${name}` : name
}

function serviceSpec(os: ServiceOs, args: ServiceArgs, log: string): Result<ServiceSpec> {
  const cli = installedCli()
  if (!cli.ok) return cli
  const rules = rulesPath(args.rules)
  const notice = packagedNotice(rules)
  if (notice) console.error(notice)
  const loaded = loadRulesFile(rules.file)
  if (!loaded.ok) {
    printErrors(rules.file, loaded.errors)
    return { ok: false, error: `the service would not start with ${rules.file}: fix it first (proxy-gate validate)` }
  }
  const spec = { node: stableNode(), cli: cli.value, rules: rules.file, caDir: resolve(caDir(args.dir)), workdir: process.cwd(), log, user: windowsUser(), shell: win32.join(process.env.SystemRoot ?? 'C:\\Windows', 'System32', 'cmd.exe') }
  for (const path of [spec.node, spec.cli, spec.rules, spec.caDir, spec.workdir, spec.log]) {
    const why = unsafePath(os, path)
    if (why) return { ok: false, error: `cannot write ${path} into the service file: ${why}` }
  }
  return { ok: true, value: spec }
}

function runAll(commands: readonly Command[]): Ran | undefined {
  for (const command of commands) {
    console.error(`proxy-gate: running ${shown(command)}`)
    const ran = run(command)
    if (!ran.ok) return { ...ran, out: `${shown(command)} failed: ${ran.out}` }
  }
  return undefined
}

function commandsFailed(os: ServiceOs, failed: Ran, commands: readonly Command[], what: string): number {
  if (os === 'linux' && (failed.missing || NO_USER_MANAGER.test(failed.out))) {
    console.error(`proxy-gate: ${what}, but there is no systemd user manager to talk to here (${failed.out}).`)
    console.error('In a login session that has one (a desktop login, or "loginctl enable-linger $USER" for a server), run:')
    for (const command of commands) console.error(`  ${shown(command)}`)
    return 1
  }
  return fail(`${what}, but ${failed.out}`, 1)
}

function install(os: ServiceOs, p: Platform, args: ServiceArgs): number {
  const spec = serviceSpec(os, args, p.paths.log)
  if (!spec.ok) return fail(spec.error, 1)
  const text = renderService(os, spec.value)
  const bytes = encode(os, text)
  const { file } = p.paths
  if (args.dryRun) {
    process.stdout.write(text)
    console.error(`# would write ${file}`)
    for (const command of p.load({ loaded: false, running: false, detail: '' }, true)) console.error(`# would run: ${shown(command)}`)
    return 0
  }
  const existed = existsSync(file)
  const same = existed && readFileSync(file).equals(bytes)
  if (existed && !same && !args.force) return fail(`${file} exists and differs from the service file this would write: pass --force to replace it ("proxy-gate service install --dry-run" prints the new one)`, 1)
  const probe = p.probe()
  if (same) console.log(`already installed: ${file}`)
  else {
    mkdirSync(dirname(file), { recursive: true })
    writeFileSync(file, bytes)
    console.log(`${existed ? 'replaced' : 'wrote'} ${file}`)
  }
  if (os !== 'linux') mkdirSync(dirname(p.paths.log), { recursive: true })
  const commands = p.load(probe, !same)
  const failed = runAll(commands)
  if (failed) return commandsFailed(os, failed, commands, `${file} is in place`)
  console.log(`proxy-gate starts at login and runs now; log: ${p.paths.log}; "proxy-gate service status" checks it`)
  return 0
}

function uninstall(os: ServiceOs, p: Platform): number {
  const { file } = p.paths
  const probe = p.probe()
  if (!existsSync(file) && probe.loaded !== true) {
    console.log(`not installed: no ${file}`)
    return 0
  }
  const stop = p.unload(probe)
  const failed = runAll(stop)
  if (failed) return commandsFailed(os, failed, [...stop, ...p.afterRemove], `could not stop it (${file} is left in place)`)
  rmSync(file, { force: true })
  console.log(`removed ${file}`)
  const reloadFailed = runAll(p.afterRemove)
  if (reloadFailed) return fail(reloadFailed.out, 1)
  return 0
}

function status(os: ServiceOs): number {
  const state = serviceStatus(os, homedir())
  console.log(`installed: ${state.installed ? `yes (${state.file})` : `no (no ${state.file})`}`)
  const running = state.running === undefined ? 'unknown' : state.running ? 'yes' : 'no'
  console.log(`running:   ${running} (${state.detail})`)
  console.log(`log:       ${state.log}`)
  return state.installed && state.running === true ? 0 : 1
}

function currentOs(): ServiceOs {
  return process.platform === 'darwin' ? 'macos' : process.platform === 'win32' ? 'windows' : 'linux'
}

export function serviceCommand(rest: readonly string[], args: ServiceArgs): number {
  const [action] = rest
  if (rest.length !== 1 || (action !== 'install' && action !== 'uninstall' && action !== 'status')) return fail('usage: proxy-gate service install|uninstall|status (see --help)')
  const os = (args.os ?? currentOs()) as ServiceOs
  if (!SERVICE_OSES.includes(os)) return fail(`--os must be one of ${SERVICE_OSES.join(', ')}`)
  const p = platform(os, homedir())
  if (action === 'install') return install(os, p, args)
  if (args.dryRun) return fail('--dry-run goes with install')
  return action === 'uninstall' ? uninstall(os, p) : status(os)
}
