// `proxy-gate ca init|show`: creates and describes the local CA, and picks the ca.crt that
// `start` serves at /ca.crt.
import { statSync } from 'node:fs'
import { homedir } from 'node:os'
import { isAbsolute, join, resolve, sep } from 'node:path'
import { fail } from './common.js'
import { caInfo, caPaths, createCa, defaultCaDir, loadCa, readCaCertificate, writeCa, type CaInfo, type LoadedCa } from '../certs/ca.js'
import type { Config } from '../rules/config.js'
import { rulesWithRequestLimits } from '../policy/rules.js'

export interface CaArgs {
  readonly dir: string | undefined
  readonly force: boolean
}

/** $XDG_CONFIG_HOME (or ~/.config)/proxy-gate/certs; on Windows %APPDATA%/proxy-gate/certs. */
function userCaDir(): string {
  const { APPDATA, XDG_CONFIG_HOME } = process.env
  if (process.platform === 'win32') return join(APPDATA ?? join(homedir(), 'AppData', 'Roaming'), 'proxy-gate', 'certs')
  return join(XDG_CONFIG_HOME !== undefined && isAbsolute(XDG_CONFIG_HOME) ? XDG_CONFIG_HOME : join(homedir(), '.config'), 'proxy-gate', 'certs')
}

/**
 * The CA folder (which also keeps the admin token): --dir; certs/ beside package.json in a clone;
 * for an installed package, which lives in node_modules (replaced on every upgrade, and often not
 * writable for a global install), the user's own folder, so the CA that clients trust survives.
 */
export function caDir(flag: string | undefined): string {
  if (flag !== undefined) return resolve(flag)
  const packaged = defaultCaDir()
  return packaged.split(sep).includes('node_modules') ? userCaDir() : packaged
}

const USAGE = 'usage: proxy-gate ca init [--force] [--dir DIR] | proxy-gate ca show [--dir DIR]'

function printInfo(info: CaInfo): void {
  console.log(`subject:     ${info.subject}`)
  console.log(`sha256:      ${info.fingerprint256}`)
  console.log(`valid from:  ${info.notBefore.toISOString()}`)
  console.log(`expires:     ${info.notAfter.toISOString()}`)
}

/** A key readable by group or others lets them impersonate any site to clients trusting ca.crt. */
function keyModeWarning(path: string): string | undefined {
  if (process.platform === 'win32') return undefined
  const mode = statSync(path).mode & 0o777
  return mode & 0o077 ? `${path} has mode ${mode.toString(8).padStart(3, '0')}: others can read the CA key; run "chmod 600 ${path}"` : undefined
}

async function init(dir: string, force: boolean): Promise<number> {
  const ca = await createCa()
  const written = writeCa(dir, ca, { force })
  if (!written.ok) return fail(written.error, 1)
  console.log(`certificate: ${written.value.cert}`)
  console.log(`key:         ${written.value.key} (mode 0600: keep it private, never commit or copy it)`)
  printInfo(caInfo(ca.certPem))
  console.log('next: trust ca.crt where clients check TLS (README, "Local CA"); "proxy-gate start" serves it at /ca.crt')
  return 0
}

function show(dir: string): number {
  const loaded = loadCa(dir)
  if (!loaded.ok) return fail(loaded.error, 1)
  const paths = caPaths(dir)
  console.log(`certificate: ${paths.cert}`)
  printInfo(caInfo(loaded.value.certPem))
  const warning = keyModeWarning(paths.key)
  if (warning) console.error(`warning: ${warning}`)
  return 0
}

export async function caCommand(args: readonly string[], options: CaArgs): Promise<number> {
  const [sub, ...extra] = args
  if (extra.length > 0 || (sub !== 'init' && sub !== 'show')) return fail(USAGE, 2)
  if (sub === 'show' && options.force) return fail('--force only applies to "ca init"', 2)
  const dir = caDir(options.dir)
  return sub === 'init' ? init(dir, options.force) : show(dir)
}

/** The CA certificate `start` serves at /ca.crt, if there is a usable one; a broken one is reported, not fatal. */
export function caCertToServe(dir: string | undefined, warn: (message: string, meta: Record<string, unknown>) => void): string | undefined {
  const read = readCaCertificate(caDir(dir))
  if (read.ok) return read.value
  warn('not serving /ca.crt', { error: read.error })
  return undefined
}

/** Why these rules cannot run with this CA (rules that limit methods or paths need one, and secrets), or undefined. */
export function needsCa(config: Config, ca: LoadedCa): string | undefined {
  const rules = rulesWithRequestLimits(config.policy)
  if ((rules.length === 0 && config.secrets.length === 0) || ca.ok) return undefined
  const which = rules.map((r) => `allow[${r.index}]`).join(', ')
  const what = [
    ...(rules.length > 0 ? [`${which} limit${rules.length === 1 ? 's' : ''} methods or paths`] : []),
    ...(config.secrets.length > 0 ? [`secrets ${config.secrets.map((s) => s.name).join(', ')} are put into requests`] : []),
  ].join(' and ')
  return `${what}, which needs the local CA to open TLS tunnels: ${ca.error}${ca.missing ? '' : ' (see "proxy-gate ca show")'}`
}
