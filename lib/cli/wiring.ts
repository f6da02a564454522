// The wiring commands: `docker` (Docker Desktop, CLI and daemon settings files) and
// `system-proxy` (OS proxy commands). They print by default and write only when asked.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'
import type { Config } from '../rules/config.js'
import { DOCKER_TARGETS, afterWriting, defaultPath, dockerFragment, type DockerTarget, type Environment, type JsonObject, type OsName } from '../wiring/docker.js'
import { parseIp } from '../policy/ip.js'
import type { HostPattern } from '../policy/rules.js'
import { applyRevert, applyWrite, backupPath, planRevert, planWrite, readJsonFile, type Change } from '../wiring/settings-file.js'
import { SYSTEM_OSES, systemProxyCommands, type SystemOs } from '../wiring/system-proxy.js'
import { fail } from './common.js'
import { formatHost, parseAuthority, type Result } from '../policy/target.js'

export interface WiringArgs {
  readonly target: string | undefined
  readonly pac: boolean
  readonly manual: boolean
  readonly write: boolean
  readonly file: string | undefined
  readonly dryRun: boolean
  readonly revert: boolean
  readonly apply: boolean
  readonly os: string | undefined
  readonly advertise: string | undefined
}

const OS_NAMES: readonly OsName[] = ['macos', 'windows', 'linux']

export function currentOs(): OsName {
  return process.platform === 'darwin' ? 'macos' : process.platform === 'win32' ? 'windows' : 'linux'
}

export function environment(os: OsName): Environment {
  const home = homedir()
  return {
    os,
    home,
    appData: process.env.APPDATA ?? `${home}\\AppData\\Roaming`,
    programData: process.env.ProgramData ?? 'C:\\ProgramData',
  }
}

/** The `host:port` clients should use: --advertise, else the listener (127.0.0.1 for a wildcard listener). */
export function advertisedAddress(config: Config, advertise: string | undefined): Result<string> {
  if (advertise !== undefined) {
    const target = parseAuthority(advertise)
    return target.ok ? { ok: true, value: `${formatHost(target.value.host)}:${target.value.port}` } : { ok: false, error: `--advertise: ${target.error}` }
  }
  const ip = parseIp(config.listen.host)
  const host = ip?.value === 0n ? '127.0.0.1' : config.listen.host
  return { ok: true, value: `${host.includes(':') ? `[${host}]` : host}:${config.listen.port}` }
}

/** Bypass entries other than loopback names: clients wired from these settings reach them unchecked. */
export function openBypass(bypass: readonly HostPattern[]): HostPattern[] {
  return bypass.filter((p) => !(p.kind === 'exact' && p.name === 'localhost') && !(p.kind === 'cidr' && p.special?.kind === 'loopback'))
}

function printChanges(changes: readonly Change[]): void {
  if (changes.length === 0) console.log('  no change')
  for (const c of changes) console.log(`  ${c.path}: ${c.from === undefined ? '(absent)' : JSON.stringify(c.from)} -> ${c.to === undefined ? '(removed)' : JSON.stringify(c.to)}`)
}

function needsExistingFolder(target: DockerTarget): boolean {
  return target === 'settings-store' || target === 'settings'
}

export function dockerCommand(config: Config, args: WiringArgs): number {
  const target = args.target as DockerTarget
  if (!DOCKER_TARGETS.includes(target)) return fail(`--target must be one of ${DOCKER_TARGETS.join(', ')}`)
  const os = (args.os ?? currentOs()) as OsName
  if (!OS_NAMES.includes(os)) return fail(`--os must be one of ${OS_NAMES.join(', ')}`)
  const advertised = advertisedAddress(config, args.advertise ?? (target === 'cli' ? `host.docker.internal:${config.listen.port}` : undefined))
  if (!advertised.ok) return fail(advertised.error)
  const proxyUrl = `http://${advertised.value}`
  const fragment = dockerFragment(target, { proxyUrl, pacUrl: `${proxyUrl}/proxy.pac`, usePac: args.pac, bypass: config.bypass })
  const path = args.file ?? defaultPath(target, environment(os))
  const notes = afterWriting(target)

  if (args.write && args.revert) return fail('choose --write or --revert, not both')
  // printing writes nothing already: a --dry-run there would look like a check of the file that never happened
  if (args.dryRun && !args.write && !args.revert) return fail('--dry-run shows what --write or --revert would change in the file: pass it with one of them')
  if (!args.write && !args.revert) {
    console.error(`# ${target}: merge these keys into ${path}`)
    console.error(`# (proxy-gate docker --target ${target}${args.pac ? ' --pac' : ''} --write does it, keeping every other key and a backup)`)
    for (const note of notes) console.error(`# ${note}`)
    console.log(JSON.stringify(fragment, null, 2))
    return 0
  }
  if (needsExistingFolder(target) && !existsSync(dirname(path))) {
    return fail(`${dirname(path)} does not exist: is Docker Desktop installed? (pass --file to write elsewhere)`, 1)
  }
  return args.revert ? revertDocker(path, fragment, args.dryRun) : writeDocker(path, fragment, args.dryRun, notes)
}

function revertDocker(path: string, fragment: JsonObject, dryRun: boolean): number {
  const plan = planRevert(path, fragment)
  if (!plan.ok) return fail(plan.error, 1)
  const removal = plan.value.remove ? ' (proxy-gate created it: it would be removed)' : ''
  if (dryRun) {
    console.log(`dry run: --revert would change ${path} from its backup${removal}:`)
    printChanges(plan.value.changes)
    return 0
  }
  applyRevert(path, plan.value)
  console.log(plan.value.remove ? `reverted: removed ${path}, which proxy-gate had created:` : `reverted ${path} from its backup:`)
  printChanges(plan.value.changes)
  return 0
}

function writeDocker(path: string, fragment: JsonObject, dryRun: boolean, notes: readonly string[]): number {
  const current = readJsonFile(path)
  if (!current.ok) return fail(current.error, 1)
  const plan = planWrite(current.value, fragment)
  if (dryRun) {
    console.log(`dry run: would change ${path}:`)
    printChanges(plan.changes)
    return 0
  }
  if (plan.changes.length === 0) {
    console.log(`no change: ${path} already has these values (nothing written)`)
    return 0
  }
  mkdirSync(dirname(path), { recursive: true })
  applyWrite(path, plan, 'first')
  console.log(`wrote ${path} (backup: ${backupPath(path)}):`)
  printChanges(plan.changes)
  for (const note of notes) console.log(`note: ${note}`)
  return 0
}

function currentSystemOs(): SystemOs {
  return process.platform === 'darwin' ? 'macos' : process.platform === 'win32' ? 'windows' : 'gnome'
}

export function systemProxyCommand(config: Config, args: WiringArgs): number {
  const os = (args.os ?? currentSystemOs()) as SystemOs
  if (!SYSTEM_OSES.includes(os)) return fail(`--os must be one of ${SYSTEM_OSES.join(', ')}`)
  if (args.pac && args.manual) return fail('choose --pac or --manual, not both')
  const advertised = advertisedAddress(config, args.advertise)
  if (!advertised.ok) return fail(advertised.error)
  const colon = advertised.value.lastIndexOf(':')
  const wiring = {
    host: advertised.value.slice(0, colon).replace(/^\[|\]$/g, ''),
    port: Number(advertised.value.slice(colon + 1)),
    pacUrl: `http://${advertised.value}/proxy.pac`,
    bypass: config.bypass,
    mode: args.manual ? ('manual' as const) : ('pac' as const),
  }
  const commands = systemProxyCommands(os, wiring, args.revert)
  console.log(commands.join('\n'))
  if (!args.apply) return 0
  if (os !== currentSystemOs()) return fail(`--apply runs the commands only on ${os} itself (this is ${currentSystemOs()})`)
  console.error('proxy-gate: running the commands above')
  const script = os === 'windows' ? commands.filter((c) => !c.startsWith('REM')).join(' && ') : commands.join('\n')
  try {
    if (os === 'windows') execFileSync(join(process.env.SystemRoot ?? 'C:\\Windows', 'System32', 'cmd.exe'), ['/d', '/c', script], { stdio: 'inherit' })
    // -e: the first command that fails stops the rest and is the exit status (else only the last one's counted)
    else execFileSync('/bin/sh', ['-e', '-c', script], { stdio: 'inherit' })
  } catch (error) {
    return fail(`the commands failed: ${(error as Error).message}`, 1)
  }
  return 0
}
