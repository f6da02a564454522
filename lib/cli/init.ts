// `proxy-gate init`: writes an editable rules.json, a copy of the rules that ship with
// proxy-gate, whose "$schema" points at the packaged schema from where the file is.
import { existsSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { PACKAGED_RULES, schemaReference } from '../rules/file.js'
import { readJsonFile, writeJsonAtomic } from '../wiring/settings-file.js'
import { fail } from './common.js'

export interface InitArgs {
  readonly rules: string | undefined
  readonly force: boolean
}

export function initCommand(args: InitArgs): number {
  const file = resolve(args.rules ?? 'rules.json')
  if (file === PACKAGED_RULES) return fail(`${file} is the rules file that ships with proxy-gate: write the copy somewhere else`, 1)
  if (existsSync(file) && !args.force) return fail(`${file} already exists: pass --force to replace it with the starter rules`, 1)
  const shipped = readJsonFile(PACKAGED_RULES)
  if (!shipped.ok || !shipped.value.value) return fail(`cannot read the packaged rules: ${shipped.ok ? `${PACKAGED_RULES} is missing` : shipped.error}`, 1)
  try {
    // mode 0600: `passwd` puts password hashes in it
    writeJsonAtomic(file, { ...shipped.value.value, $schema: schemaReference(dirname(file)) }, 0o600)
  } catch (error) {
    return fail(`cannot write ${file}: ${(error as Error).message}`, 1)
  }
  const flag = args.rules === undefined ? '' : ` --rules ${file}`
  console.log(`wrote ${file}: the starter rules (every entry has a "note" saying what it is for)`)
  console.log(`next: edit it, check it with "proxy-gate validate${flag}", then run "proxy-gate start${flag}" (which reloads it when it changes)`)
  return 0
}
