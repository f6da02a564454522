// "Allow" from the dashboard: puts a denied destination's suggested entry into the "allow" list of
// the policy that denied it, in rules.json (every other key kept, a backup beside it, as passwd
// does), only when the merged file would load; then reloads, as POST /reload does.
import { accessSync, constants, statSync } from 'node:fs'
import { DEFAULT_POLICY } from '../policy/clients.js'
import type { Result } from '../policy/target.js'
import type { Json, JsonObject } from '../wiring/docker.js'
import { applyWrite, backupPath, planWrite, readJsonFile } from '../wiring/settings-file.js'

export interface ReloadResult {
  readonly ok: boolean
  readonly errors?: readonly string[]
}

/** The rules file a running proxy-gate reads, and what loading it takes. */
export interface RulesFile {
  readonly file: string
  /** the rules that ship in the package: never edited */
  readonly packaged: boolean
  /** what a reload would refuse in this document: its problems, or none */
  problems(document: JsonObject): readonly string[]
  reload(): ReloadResult
}

export interface AllowAnswer {
  readonly status: number
  readonly body: { readonly ok: boolean; readonly message: string; readonly added?: boolean; readonly backup?: string; readonly errors?: readonly string[] }
}

const refuse = (status: number, message: string, errors?: readonly string[]): AllowAnswer => ({ status, body: { ok: false, message, ...(errors ? { errors } : {}) } })

function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** Read-only on disk; a file without write bits counts as read-only even for root, who may write anything. */
function readOnly(file: string): boolean {
  try {
    accessSync(file, constants.W_OK)
    return (statSync(file).mode & 0o222) === 0
  } catch {
    return true
  }
}

interface Place {
  readonly list: readonly Json[]
  /** the fragment (for planWrite) that makes the list `list` */
  readonly set: (list: Json[]) => JsonObject
  readonly where: string
}

/** The "allow" list of the policy, in the file as it is now. */
function placeFor(document: JsonObject, policy: string): Result<Place> {
  const named = policy !== DEFAULT_POLICY
  const body = named ? (isObject(document.policies) ? document.policies[policy] : undefined) : document
  if (!isObject(body)) return { ok: false, error: `the policy "${policy}" is no longer in the rules file` }
  const list = body.allow
  const where = named ? `policies.${policy}.allow` : 'allow'
  if (list !== undefined && !Array.isArray(list)) return { ok: false, error: `"${where}" in the rules file is not a list` }
  const set = (allow: Json[]): JsonObject => (named ? { policies: { [policy]: { allow } } } : { allow })
  return { ok: true, value: { list: list ?? [], set, where } }
}

function parseEntry(text: string): Json | undefined {
  try {
    return JSON.parse(text) as Json
  } catch {
    return undefined
  }
}

/** Adds `suggestion` (the JSON text of one entry, as decisions suggest it) to the policy's "allow". */
export function allowEntry(rules: RulesFile, suggestion: string, policy: string): AllowAnswer {
  const { file } = rules
  if (rules.packaged) return refuse(409, `proxy-gate runs on the rules that ship with it (${file}), which are read-only: run "proxy-gate init" for an editable ./rules.json and restart, or add the entry by hand`)
  const current = readJsonFile(file)
  if (!current.ok) return refuse(409, current.error)
  const document = current.value.value
  if (!document) return refuse(409, `${file} no longer exists`)
  if (readOnly(file)) return refuse(409, `${file} is read-only: add ${suggestion} to it by hand`)
  const place = placeFor(document, policy)
  if (!place.ok) return refuse(409, `${place.error}: nothing was written`)
  const entry = parseEntry(suggestion)
  if (entry === undefined) return refuse(409, `${suggestion} is not an entry that can be added`)
  const { list, where } = place.value
  if (list.some((e) => JSON.stringify(e) === JSON.stringify(entry))) return { status: 200, body: { ok: true, added: false, message: `${suggestion} is already in "${where}" of ${file}: nothing was written` } }
  const plan = planWrite(current.value, place.value.set([...list, entry]))
  const problems = rules.problems(plan.after)
  if (problems.length > 0) return refuse(422, `with ${suggestion} added, ${file} would not load: nothing was written`, problems)
  try {
    applyWrite(file, plan, 'latest')
  } catch (error) {
    return refuse(500, `cannot write ${file}: ${(error as Error).message}`)
  }
  const backup = backupPath(file)
  const reloaded = rules.reload()
  const added = `added ${suggestion} to "${where}" in ${file} (backup: ${backup})`
  if (!reloaded.ok) return refuse(422, `${added}, but the reload failed: the previous rules stay in force`, reloaded.errors ?? [])
  return { status: 200, body: { ok: true, added: true, backup, message: `${added}; reloaded` } }
}
