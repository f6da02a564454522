// Reading rules.json from disk, choosing which one, and noticing when it changes. Validation
// itself is config.ts.
import { existsSync, readFileSync, watch, type FSWatcher } from 'node:fs'
import { basename, dirname, isAbsolute, relative, resolve, sep } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { SandboxSettings } from './sandbox.js'
import { parseConfig, type Config, type ConfigResult, type Listen } from './config.js'
import type { Mode } from '../policy/rules.js'
import type { RuleError } from '../policy/rules.js'

/** Command-line values that win over the file, kept across reloads. */
export interface Overrides {
  readonly listen?: Listen
  readonly mode?: Mode
  readonly sandbox?: SandboxSettings
}

/** The rules.json that ships in the package (next to package.json), from lib/ and dist/ alike. */
export const PACKAGED_RULES = fileURLToPath(new URL('../../rules.json', import.meta.url))
const PACKAGED_SCHEMA = fileURLToPath(new URL('../../rules.schema.json', import.meta.url))

export interface RulesPath {
  readonly file: string
  /** true: no --rules and no ./rules.json, so the packaged rules (not to be edited or watched) */
  readonly packaged: boolean
}

/** --rules FILE as given (missing is the caller's error); else ./rules.json; else the packaged rules. */
export function rulesPath(flag: string | undefined, cwd = process.cwd()): RulesPath {
  if (flag !== undefined) return { file: resolve(cwd, flag), packaged: false }
  const local = resolve(cwd, 'rules.json')
  return existsSync(local) ? { file: local, packaged: false } : { file: PACKAGED_RULES, packaged: true }
}

/** One line saying the packaged rules are in use, for the commands that print rather than log. */
export function packagedNotice(rules: RulesPath): string | undefined {
  if (!rules.packaged) return undefined
  return `proxy-gate: no ./rules.json here: using the rules that ship with proxy-gate, ${rules.file} (read-only; "proxy-gate init" writes an editable copy)`
}

/**
 * "$schema" for a rules file in `folder`: "./…" when the packaged schema is inside it (a local
 * install, or a clone), so the file keeps working when the folder moves; else a file: URL, which
 * editors accept on every OS where a bare absolute Windows path is not.
 */
export function schemaReference(folder: string): string {
  const path = relative(folder, PACKAGED_SCHEMA)
  if (path !== '..' && !path.startsWith(`..${sep}`) && !isAbsolute(path)) return `./${path.split(sep).join('/')}`
  return pathToFileURL(PACKAGED_SCHEMA).href
}

function jsonError(path: string, error: Error): RuleError {
  return { path: '(file)', entry: path, message: `not valid JSON: ${error.message}` }
}

export function loadRulesFile(path: string, overrides: Overrides = {}): ConfigResult {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (error) {
    return { ok: false, errors: [{ path: '(file)', entry: path, message: `cannot read: ${(error as Error).message}` }] }
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (error) {
    return { ok: false, errors: [jsonError(path, error as Error)] }
  }
  const result = parseConfig(json)
  if (!result.ok) return result
  const config: Config = { ...result.value, ...definedOnly(overrides) }
  return { ok: true, value: config }
}

function definedOnly(overrides: Overrides): Partial<Config> {
  return Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined))
}

/**
 * Calls `onChange` (debounced) when the file is written or replaced. Watches the folder, since
 * editors often save by writing a new file and renaming it over the old one.
 */
export function watchRulesFile(path: string, onChange: () => void, debounceMs = 100): FSWatcher {
  const full = resolve(path)
  const name = basename(full)
  let timer: NodeJS.Timeout | undefined
  const watcher = watch(dirname(full), (_event, changed) => {
    if (changed !== null && changed !== name) return
    clearTimeout(timer)
    timer = setTimeout(onChange, debounceMs)
  })
  watcher.on('error', () => watcher.close())
  return watcher
}
