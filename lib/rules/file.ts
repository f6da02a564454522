// Reading rules.json from disk, choosing which one, and noticing when it changes. Validation
// itself is config.ts.
import { createHash } from 'node:crypto'
import { closeSync, existsSync, openSync, readSync, statSync, watch, type FSWatcher } from 'node:fs'
import { basename, dirname, isAbsolute, relative, resolve, sep } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { SandboxSettings } from './sandbox.js'
import type { SocksSettings } from './socks.js'
import { parseConfig, type Config, type Listen } from './config.js'
import { scanJson, type DuplicateKey, type JsonSpot } from './json-scan.js'
import type { Mode } from '../policy/rules.js'
import type { RuleError } from '../policy/rules.js'

/** Command-line values that win over the file, kept across reloads. */
export interface Overrides {
  readonly listen?: Listen
  readonly mode?: Mode
  readonly sandbox?: SandboxSettings
  readonly socks?: SocksSettings
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

/** rules.json is read whole at start and at every reload: a larger file is refused unread. */
export const MAX_RULES_BYTES = 8 * 1024 * 1024
/** The deepest rules.json needs is 6 (policies.NAME.allow[i].paths[j]); past this it is a mistake, or an attack on what walks it. */
export const MAX_RULES_DEPTH = 64

type Read = { ok: true; bytes: Buffer } | { ok: false; code: string; message: string }

/** The file's bytes, read to its end but never past MAX_RULES_BYTES (stat's size says nothing for /dev/zero or a pipe). */
function readRules(path: string): Read {
  let fd: number | undefined
  try {
    fd = openSync(path, 'r')
    const chunks: Buffer[] = []
    let total = 0
    for (;;) {
      const chunk = Buffer.allocUnsafe(64 * 1024)
      const n = readSync(fd, chunk, 0, chunk.length, null)
      if (n === 0) return { ok: true, bytes: Buffer.concat(chunks, total) }
      total += n
      if (total > MAX_RULES_BYTES) return { ok: false, code: 'too-large', message: `larger than ${MAX_RULES_BYTES / 1024 / 1024} MiB, the most a rules file may hold` }
      chunks.push(chunk.subarray(0, n))
    }
  } catch (error) {
    return { ok: false, code: (error as NodeJS.ErrnoException).code ?? 'unknown', message: `cannot read: ${(error as Error).message}` }
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

/** What the watcher compares: the bytes' hash, or why there are none. */
function readKey(read: Read): string {
  return read.ok ? createHash('sha256').update(read.bytes).digest('hex') : `error:${read.code}`
}

function fileError(file: string, message: string): RuleError {
  return { path: '(file)', entry: file, message }
}

const at = (spot: JsonSpot): string => `line ${spot.line}, column ${spot.column}`

/**
 * rules.json's text as a value: nesting bounded before JSON.parse runs, and a key written twice
 * in one object an error (JSON.parse would keep the last without a word).
 */
function parseRulesText(text: string, file: string): { ok: true; value: unknown } | { ok: false; errors: RuleError[] } {
  const scan = scanJson(text, MAX_RULES_DEPTH)
  if (scan.tooDeep) {
    return { ok: false, errors: [fileError(file, `arrays and objects nest more than ${MAX_RULES_DEPTH} deep (${at(scan.tooDeep)}, in ${scan.tooDeep.path.slice(0, 80)}${scan.tooDeep.path.length > 80 ? '…' : ''})`)] }
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    const where = scan.syntaxError ? ` at ${at(scan.syntaxError)}` : ''
    return { ok: false, errors: [fileError(file, `not valid JSON${where}: ${(error as Error).message}`)] }
  }
  if (scan.duplicates.length === 0) return { ok: true, value }
  const message = (d: DuplicateKey): string => `duplicate key ${JSON.stringify(d.key)}, also at ${at(d.first)}: JSON keeps only the last one, so the other would be ignored without a word`
  return { ok: false, errors: scan.duplicates.map((d) => ({ path: d.path, entry: `(${at(d)})`, message: message(d) })) }
}

/** The rules in the file, and the hash of the bytes they were read from (undefined when it could not be read). */
export type LoadResult = { ok: true; value: Config; readonly hash: string } | { ok: false; errors: RuleError[]; readonly hash: string | undefined }

export function loadRulesFile(path: string, overrides: Overrides = {}): LoadResult {
  const read = readRules(path)
  if (!read.ok) return { ok: false, errors: [fileError(path, read.message)], hash: undefined }
  const hash = readKey(read)
  const json = parseRulesText(read.bytes.toString('utf8'), path)
  if (!json.ok) return { ...json, hash }
  const result = parseConfig(json.value)
  if (!result.ok) return { ...result, hash }
  return { ok: true, value: withOverrides(result.value, overrides), hash }
}

/** The rules with the command line's values in place of the file's. */
export function withOverrides(config: Config, overrides: Overrides): Config {
  return { ...config, ...(Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)) as Partial<Config>) }
}

export interface RulesWatch {
  close(): void
}

export interface WatchOptions {
  /** quiet time after the last event in the folder before the file is looked at */
  readonly debounceMs?: number
  /** how often the file is stat()ed anyway, for filesystems whose events never arrive (NFS, some overlays) */
  readonly pollMs?: number
  /** the folder changed, or the file was touched, but what it says did not: no reload */
  readonly onSame?: () => void
}

function errorKey(error: unknown): string {
  return `error:${(error as NodeJS.ErrnoException).code ?? 'unknown'}`
}

/** Cheap: which file the path resolves to now (through any symlinks) and when it last changed. */
function statKey(path: string): string {
  try {
    const s = statSync(path, { bigint: true })
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`
  } catch (error) {
    return errorKey(error)
  }
}

function contentKey(path: string): string {
  return readKey(readRules(path))
}

/**
 * Whether an event in the rules file's folder may be about the file: one named after it (editors
 * rename a new file over the old one), a `..` name (a Kubernetes ConfigMap volume swaps its `..data`
 * symlink while `rules.json -> ..data/rules.json` itself never changes), or one without a name.
 * Other names are not: a log file written beside rules.json would have the rules re-read and
 * hashed after every lull in traffic.
 */
export function mayConcern(filename: string | null, rulesName: string): boolean {
  return filename === null || filename === rulesName || filename.startsWith('..')
}

/**
 * Calls `onChange` when what the path resolves to says something new: on folder events that
 * mayConcern it, and through a slow stat() poll, which catches what the events miss (a symlink to
 * another file, filesystems without inotify). Only a new content hash reloads, so a rewrite with
 * the same text, or a burst of events, is not a reload storm. It starts from `loaded`, the hash
 * of the bytes the running rules came from (loadRulesFile's), and looks once at the start: an
 * edit made after they were read and before the watch began is a change too.
 */
export function watchRulesFile(path: string, loaded: string, onChange: () => void, options: WatchOptions = {}): RulesWatch {
  const full = resolve(path)
  let seen = { stat: statKey(full), content: loaded }
  const check = (always: boolean): void => {
    const stat = statKey(full)
    if (!always && stat === seen.stat) return
    const content = contentKey(full)
    const same = content === seen.content
    seen = { stat, content }
    if (same) options.onSame?.()
    else onChange()
  }
  let timer: NodeJS.Timeout | undefined
  const settled = (): void => {
    timer = undefined
    check(true)
  }
  const name = basename(full)
  // one timer, pushed back by each event: a burst of them is one check
  const watcher: FSWatcher = watch(dirname(full), (_event, filename) => {
    if (!mayConcern(filename, name)) return
    if (timer) timer.refresh()
    else timer = setTimeout(settled, options.debounceMs ?? 100)
  })
  watcher.on('error', () => watcher.close()) // the folder went away: the poll carries on
  // one look now: the file may have changed since the running rules were read from it
  timer = setTimeout(() => {
    timer = undefined
    if (contentKey(full) !== seen.content) check(true)
  }, 0)
  const poll = setInterval(() => check(false), options.pollMs ?? 2_000)
  poll.unref()
  return {
    close: () => {
      watcher.close()
      clearTimeout(timer)
      clearInterval(poll)
    },
  }
}
