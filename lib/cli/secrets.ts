// `proxy-gate secrets env`: each secret's placeholder as NAME=PLACEHOLDER lines, for `docker run
// --env-file`, Compose or CI. Never a value: a value is read only to keep its prefix, when it can be.
import { caDir } from './ca.js'
import { fail, printErrors } from './common.js'
import { loadRulesFile, packagedNotice, rulesPath } from '../rules/file.js'
import { placeholderLines } from '../secrets/values.js'

export interface SecretsArgs {
  readonly rules: string | undefined
  readonly dir: string | undefined
}

const USAGE = 'usage: proxy-gate secrets env [--rules FILE] [--dir DIR]'

export function secretsCommand(args: readonly string[], options: SecretsArgs): number {
  if (args.length !== 1 || args[0] !== 'env') return fail(USAGE, 2)
  const rules = rulesPath(options.rules)
  const notice = packagedNotice(rules)
  if (notice) console.error(notice)
  const loaded = loadRulesFile(rules.file)
  if (!loaded.ok) {
    printErrors(rules.file, loaded.errors)
    return 1
  }
  if (loaded.value.secrets.length === 0) return fail(`${rules.file} has no "secrets"`, 1)
  const lines = placeholderLines(loaded.value, caDir(options.dir), rules.file, process.env)
  if (!lines.ok) return fail(lines.error, 1)
  for (const line of lines.value) console.log(line)
  return 0
}
