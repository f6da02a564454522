// Merging proxy-gate's keys into someone else's JSON settings file: every other key kept, a
// backup beside it, written atomically as UTF-8 without BOM, and a revert from that backup.
import { existsSync, readFileSync, statSync, unlinkSync } from 'node:fs'
import { writeFileAtomic } from '../core/atomic-file.js'
import type { Json, JsonObject } from './docker.js'
import type { Result } from '../policy/target.js'

export interface Change {
  readonly path: string
  readonly from: Json | undefined
  readonly to: Json | undefined
}

function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** Paths of the values a fragment sets (objects are walked into; arrays and scalars are values). */
function leaves(fragment: JsonObject, prefix: string[] = []): string[][] {
  return Object.entries(fragment).flatMap(([key, value]) => (isObject(value) ? leaves(value, [...prefix, key]) : [[...prefix, key]]))
}

function getPath(obj: JsonObject, path: readonly string[]): Json | undefined {
  let node: Json | undefined = obj
  for (const key of path) node = isObject(node) ? node[key] : undefined
  return node
}

function setPath(obj: JsonObject, path: readonly string[], value: Json | undefined): JsonObject {
  const [key, ...rest] = path as [string, ...string[]]
  const copy: JsonObject = { ...obj }
  if (rest.length === 0) {
    if (value === undefined) Reflect.deleteProperty(copy, key)
    else copy[key] = value
    return copy
  }
  const child = copy[key]
  const updated = setPath(isObject(child) ? child : {}, rest, value)
  // removing a key proxy-gate added must not leave behind an empty object it created
  if (value === undefined && Object.keys(updated).length === 0) Reflect.deleteProperty(copy, key)
  else copy[key] = updated
  return copy
}

function mergeFragment(existing: JsonObject, fragment: JsonObject): JsonObject {
  return leaves(fragment).reduce((acc, path) => setPath(acc, path, getPath(fragment, path)), existing)
}

/** Puts back, for each key the fragment manages, the value the backup had (or removes it). */
function revertFragment(current: JsonObject, backup: JsonObject, fragment: JsonObject): JsonObject {
  return leaves(fragment).reduce((acc, path) => setPath(acc, path, getPath(backup, path)), current)
}

function changesBetween(before: JsonObject, after: JsonObject, fragment: JsonObject): Change[] {
  return leaves(fragment)
    .map((path) => ({ path: path.join('.'), from: getPath(before, path), to: getPath(after, path) }))
    .filter((c) => JSON.stringify(c.from) !== JSON.stringify(c.to))
}

export interface JsonFile {
  /** undefined when the file does not exist yet */
  readonly value: JsonObject | undefined
  /** the file's text as read (undefined when it does not exist) */
  readonly text?: string
}

/** Reads a JSON object file. A file that is not a JSON object is an error: it will not be touched. */
export function readJsonFile(path: string): Result<JsonFile> {
  if (!existsSync(path)) return { ok: true, value: { value: undefined } }
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (error) {
    return { ok: false, error: `cannot read ${path}: ${(error as Error).message}` }
  }
  try {
    const value = JSON.parse(text.replace(/^\uFEFF/, '')) as Json
    if (!isObject(value)) return { ok: false, error: `${path} does not hold a JSON object; it was left untouched` }
    return { ok: true, value: { value, text } }
  } catch (error) {
    return { ok: false, error: `${path} is not valid JSON (${(error as Error).message}); it was left untouched` }
  }
}

/** An existing file's permission bits, which a rewrite keeps (rules.json may hold password hashes). */
function modeOf(path: string): number | undefined {
  try {
    return statSync(path).mode & 0o777
  } catch {
    return undefined
  }
}

/** The indentation a JSON text uses (that of its first indented line), so a rewrite keeps it; 2 spaces if none. */
function indentOf(text: string | undefined): string {
  return /^([ \t]+)\S/m.exec(text ?? '')?.[1] ?? '  '
}

/** Writes the JSON text atomically (core/atomic-file.ts): readers see the old file or the new one, never half. */
export function writeJsonAtomic(path: string, value: JsonObject, mode = modeOf(path), indent = '  '): void {
  writeFileAtomic(path, `${JSON.stringify(value, null, indent)}
`, mode)
}

export function backupPath(path: string): string {
  return `${path}.proxy-gate-backup`
}

export interface WritePlan {
  readonly before: JsonObject
  /** the file's text before: what the backup holds, byte for byte */
  readonly text: string | undefined
  readonly after: JsonObject
  readonly changes: readonly Change[]
}

export function planWrite(current: JsonFile, fragment: JsonObject): WritePlan {
  const before = current.value ?? {}
  const after = mergeFragment(before, fragment)
  const changes = changesBetween(before, after, fragment)
  return { before, text: current.text, after, changes }
}

/**
 * Which file the backup beside it holds: 'first', the file as it was before proxy-gate first
 * wrote to it (what --revert restores, however often the settings were written since); 'latest',
 * the file as it was before the last write that changed something.
 */
export type BackupRule = 'first' | 'latest'

/**
 * `mode`: the file's and the backup's; by default the file's own (the backup holds what it held: not wider).
 * The backup of a file that did not exist is empty (no JSON at all): --revert then removes the file again.
 */
export function applyWrite(path: string, plan: WritePlan, backup: BackupRule, mode = modeOf(path)): void {
  if ((backup === 'latest' && plan.changes.length > 0) || !existsSync(backupPath(path))) writeFileAtomic(backupPath(path), plan.text ?? '', mode)
  writeJsonAtomic(path, plan.after, mode, indentOf(plan.text))
}

export interface RevertPlan {
  readonly after: JsonObject
  readonly changes: readonly Change[]
  /** the file did not exist before proxy-gate wrote it, and holds nothing else now: it goes */
  readonly remove: boolean
  readonly text: string | undefined
}

/** What restoring the managed keys from the backup would change (nothing is written). */
export function planRevert(path: string, fragment: JsonObject): Result<RevertPlan> {
  const absent = existsSync(backupPath(path)) && statSync(backupPath(path)).size === 0
  const backup = absent ? { ok: true as const, value: { value: {} } } : readJsonFile(backupPath(path))
  if (!backup.ok) return backup
  if (!backup.value.value) return { ok: false, error: `no backup at ${backupPath(path)}: nothing to revert` }
  const current = readJsonFile(path)
  if (!current.ok) return current
  const before = current.value.value ?? {}
  const after = revertFragment(before, backup.value.value, fragment)
  const remove = absent && current.value.value !== undefined && Object.keys(after).length === 0
  return { ok: true, value: { after, changes: changesBetween(before, after, fragment), remove, text: current.value.text } }
}

/** Restores the managed keys as planned (or removes a file proxy-gate created), and removes the backup. */
export function applyRevert(path: string, plan: RevertPlan): void {
  if (plan.remove) unlinkSync(path)
  else writeJsonAtomic(path, plan.after, undefined, indentOf(plan.text))
  unlinkSync(backupPath(path))
}
