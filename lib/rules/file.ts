// Reading rules.json from disk and noticing when it changes. Validation itself is config.ts.
import type { SandboxSettings } from './sandbox.js'
import { readFileSync, watch, type FSWatcher } from 'node:fs'
import { basename, dirname, resolve } from 'node:path'
import { parseConfig, type Config, type ConfigResult, type Listen } from './config.js'
import type { Mode } from '../policy/rules.js'
import type { RuleError } from '../policy/rules.js'

/** Command-line values that win over the file, kept across reloads. */
export interface Overrides {
  readonly listen?: Listen
  readonly mode?: Mode
  readonly sandbox?: SandboxSettings
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
