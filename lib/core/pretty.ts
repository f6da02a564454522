// What a person at a terminal reads: one short line per decision, DNS query or event, in colour
// when the terminal has it. The JSON records stay the machine's form; this reads their fields by
// name, and any record it does not know becomes a compact `message key=value` line. Every text
// taken from a record is shown through visible(): a Host header's control characters never reach
// the terminal as controls.
import { visible } from './visible.js'

/** One log record as winston hands it over: level, message, timestamp and the event's fields. */
export type LogRecord = Readonly<Record<string, unknown>>

type Style = 'red' | 'green' | 'yellow' | 'cyan' | 'dim'
type Paint = (style: Style, text: string) => string

const SGR: Record<Style, readonly [number, number]> = { red: [31, 39], green: [32, 39], yellow: [33, 39], cyan: [36, 39], dim: [2, 22] }

/** Lines after the first are indented past the `HH:MM:SS ` prefix. */
const INDENT = ' '.repeat(9)

/** Allowed requests remembered until their `closed` record, so a failure can say what failed. */
const REMEMBERED = 4096

interface Context {
  readonly paint: Paint
  /** decision id -> `METHOD target` of allowed requests still open */
  readonly open: Map<string, string>
}

type Render = (r: LogRecord, c: Context) => string[]

function str(r: LogRecord, key: string): string | undefined {
  const v = r[key]
  return typeof v === 'string' ? visible(v) : undefined
}

function num(r: LogRecord, key: string): number | undefined {
  const v = r[key]
  return typeof v === 'number' ? v : undefined
}

/** The parts that have something in them, two spaces apart. */
function parts(...texts: Array<string | undefined>): string {
  return texts.filter((t) => t !== undefined && t !== '').join('  ')
}

function parenthesised(notes: Array<string | false | undefined>): string | undefined {
  const kept = notes.filter((n): n is string => typeof n === 'string' && n !== '')
  return kept.length > 0 ? `(${kept.join(', ')})` : undefined
}

/** Why a decision went the way it did, in a few words. */
function because(r: LogRecord): string | undefined {
  const reason = str(r, 'reason')
  const short = reason === 'no-rule' ? 'no allow rule' : reason === 'deny-rule' || reason === 'allow-rule' ? str(r, 'rule') : undefined
  // "-> add" says how a rule can name an address the guard refused
  if (short === undefined) return str(r, 'detail')?.replace(/, which is refused unless a rule names it$/, '') ?? reason
  return r.wouldDeny === true ? `report mode: would deny: ${short}` : short
}

/** A TLS server name worth showing: one that the target does not already say. */
function otherSni(r: LogRecord): string | undefined {
  const sni = str(r, 'sni')
  return sni !== undefined && !(str(r, 'target') ?? '').startsWith(`${sni}:`) ? `sni ${sni}` : undefined
}

function remember(open: Map<string, string>, id: string, what: string): void {
  if (open.size >= REMEMBERED) open.delete(open.keys().next().value ?? '')
  open.set(id, what)
}

const decision: Render = (r, { paint, open }) => {
  const verdict = str(r, 'decision')
  const what = `${str(r, 'method') ?? '?'} ${str(r, 'target') ?? '?'}${str(r, 'path') ?? ''}`
  const id = str(r, 'id')
  if (verdict === 'allow' && id !== undefined) remember(open, id, what)
  const tag = verdict === 'allow' ? paint(r.wouldDeny === true ? 'yellow' : 'green', 'ALLOW') : verdict === 'deny' ? paint('red', 'DENY ') : paint('red', 'ERROR')
  const policy = str(r, 'policy')
  const status = num(r, 'status')
  const notes = parenthesised([
    otherSni(r),
    r.intercepted === true && 'in an opened tunnel',
    str(r, 'listener'),
    policy !== undefined && policy !== 'default' && `policy ${policy}`,
    // a SOCKS client is sent a reply code, not this status
    verdict === 'error' && status !== undefined && str(r, 'listener') !== 'socks' && `${status} sent`,
  ])
  const suggestion = str(r, 'suggestion')
  return [parts(`${tag} ${what}`, because(r), notes, suggestion && paint('cyan', `-> add ${suggestion}`))]
}

/** Finished connections are not news; one that ended on an error is. */
const closed: Render = (r, { paint, open }) => {
  const id = str(r, 'id') ?? ''
  const what = open.get(id) ?? `${str(r, 'kind') ?? 'connection'} ${id}`
  open.delete(id)
  const error = str(r, 'error')
  if (error === undefined) return []
  const status = num(r, 'status')
  return [parts(`${paint('yellow', 'ENDED')} ${what}`, error, status === undefined ? undefined : `(${status} sent)`)]
}

const upstreamFailed: Render = (r, { paint, open }) => {
  const id = str(r, 'id') ?? ''
  const what = open.get(id) ?? id
  open.delete(id)
  const status = num(r, 'status')
  return [parts(`${paint('red', 'FAIL ')} ${what}`, str(r, 'detail') ?? str(r, 'error'), status === undefined ? undefined : `(${status} sent)`)]
}

const dns: Render = (r, { paint }) => {
  const answer = str(r, 'answer')
  const tag = answer === 'allow' ? paint('green', 'DNS  ') : paint('red', 'DNS  ')
  const result = answer === 'allow' ? because(r) : `${answer === 'deny' ? 'NXDOMAIN' : (answer ?? '?').toUpperCase()}: ${because(r) ?? '?'}`
  const suggestion = str(r, 'suggestion')
  return [parts(`${tag} ${str(r, 'name') ?? '?'} ${str(r, 'qtype') ?? '?'}`, result, parenthesised([str(r, 'policy') !== 'default' && str(r, 'policy')]), suggestion && paint('cyan', `-> add ${suggestion}`))]
}

const revoked: Render = (r, { paint, open }) => {
  open.delete(str(r, 'id') ?? '')
  return [parts(`${paint('yellow', 'CUT  ')} ${str(r, 'kind') ?? ''} ${str(r, 'target') ?? '?'}`, `the new rules deny it: ${str(r, 'detail') ?? str(r, 'reason') ?? ''}`)]
}

function counts(r: LogRecord): string {
  return `${num(r, 'allow') ?? 0} allow, ${num(r, 'deny') ?? 0} deny`
}

const listening: Render = (r) => {
  const upstream = str(r, 'upstream')
  return [parts(`listening on ${str(r, 'url') ?? '?'}`, `(${str(r, 'mode') ?? '?'}, ${counts(r)} in ${str(r, 'rules') ?? '?'}${upstream ? `, via ${upstream}` : ''})`)]
}

/** `dockerDesktopAdmin` -> `docker desktop admin` */
function words(key: string): string {
  return key.replace(/[A-Z]/g, (c) => ` ${c.toLowerCase()}`)
}

/** Every field on a line of its own, under the message. */
const block: Render = (r, { paint }) => {
  const fields = Object.entries(fieldsOf(r)).filter((e): e is [string, string] => typeof e[1] === 'string')
  const width = Math.max(...fields.map(([k]) => words(k).length))
  return [`${visible(String(r.message))}:`, ...fields.map(([k, v]) => `  ${paint('dim', visible(words(k)).padEnd(width))}  ${visible(v)}`)]
}

const reloaded: Render = (r) => {
  const closedCount = num(r, 'closed') ?? 0
  return [parts(`reloaded ${str(r, 'rules') ?? '?'} (${str(r, 'trigger') ?? '?'}): ${counts(r)}`, closedCount > 0 ? `closed ${closedCount} open connection${closedCount === 1 ? '' : 's'} the new rules deny` : undefined)]
}

const reloadFailed: Render = (r, { paint }) => {
  const errors = Array.isArray(r.errors) ? r.errors.map(String) : []
  return [`${paint('red', 'ERROR')} reload of ${str(r, 'rules') ?? '?'} failed (${str(r, 'trigger') ?? '?'}): keeping the previous rules`, ...errors.map((e) => `  ${visible(e)}`)]
}

const shuttingDown: Render = (r) => [`shutting down (${str(r, 'signal') ?? '?'}): ${num(r, 'open') ?? 0} open connections`]

const plural = (n: number, what: string): string => `${n} ${what}${n === 1 ? '' : 's'}`
const seconds = (ms: number): string => `${ms / 1000} s`

// the drain's phases: a line only for a phase that has something to say (no delay, nothing open: silent)
const draining: Render = (r) => {
  const delay = num(r, 'drainDelayMs') ?? 0
  return delay > 0 ? [`draining for ${seconds(delay)}: not ready, still accepting (${plural(num(r, 'connections') ?? 0, 'connection')})`] : []
}
const stoppedAccepting: Render = (r) => {
  const open = num(r, 'connections') ?? 0
  return open > 0 ? [`stopped accepting; ${plural(open, 'connection')} may finish within ${seconds(num(r, 'graceMs') ?? 0)}`] : []
}
const closingRest: Render = (r) => [`grace period over: closing ${plural(num(r, 'connections') ?? 0, 'connection')} still open`]
const stopped: Render = (r) => {
  const code = num(r, 'code') ?? 0
  return [code === 0 ? 'stopped' : `stopped (exit code ${code})`]
}

const admin: Render = (r) => [`dashboard ${str(r, 'url') ?? '?'}  (metrics ${str(r, 'metrics') ?? '?'}, token in ${str(r, 'tokenFile') ?? '?'})`]

const RENDERERS: Readonly<Record<string, Render>> = {
  decision,
  closed,
  dns,
  revoked,
  listening,
  reloaded,
  'upstream failed': upstreamFailed,
  'wire it up': block,
  'reload failed: keeping the previous rules': reloadFailed,
  'shutting down': shuttingDown,
  'draining: not ready, still accepting': draining,
  'stopped accepting': stoppedAccepting,
  'closing what is still open': closingRest,
  stopped,
  'admin listening': admin,
}

function fieldsOf(r: LogRecord): Record<string, unknown> {
  const { level: _level, message: _message, timestamp: _timestamp, ...fields } = r
  return fields
}

/** JSON, or String() for what JSON cannot write (a BigInt, a cycle): a log line must never throw. */
function asJson(v: unknown): string {
  try {
    return JSON.stringify(v)
  } catch {
    return String(v)
  }
}

function valueText(v: unknown): string {
  const text = typeof v === 'string' ? v : asJson(v)
  return visible(/^[^\s"=]+$/.test(text) ? text : JSON.stringify(text))
}

/** `message key=value ...` with a WARN or ERROR tag; a stack (`error` with lines) goes below, indented. */
const fallback: Render = (r, { paint }) => {
  const level = str(r, 'level')
  const tag = level === 'error' ? paint('red', 'ERROR') : level === 'warn' ? paint('yellow', 'WARN ') : level === 'debug' ? paint('dim', 'DEBUG') : undefined
  const error = r.error
  const stack = typeof error === 'string' && error.includes('\n') ? error.split('\n') : undefined
  const fields = Object.entries(fieldsOf(r))
    .filter(([k, v]) => v !== undefined && !(stack && k === 'error'))
    .map(([k, v]) => `${visible(k)}=${valueText(v)}`)
  return [[tag, visible(String(r.message)), ...fields].filter((t) => t !== undefined).join(' '), ...(stack ?? []).map((l) => `  ${visible(l.trim())}`)]
}

/** `HH:MM:SS` in local time, from winston's ISO timestamp. */
function clock(timestamp: unknown): string {
  const at = typeof timestamp === 'string' ? new Date(timestamp) : new Date()
  return [at.getHours(), at.getMinutes(), at.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':')
}

/**
 * A formatter for records, each to the lines a person reads (none for a record not worth
 * showing). It remembers what allowed requests were, so that a failure can name its request.
 */
export function prettyFormatter(colour: boolean): (record: LogRecord) => string[] {
  const paint: Paint = colour ? (style, text) => `\x1b[${SGR[style][0]}m${text}\x1b[${SGR[style][1]}m` : (_style, text) => text
  const context: Context = { paint, open: new Map() }
  return (record) => {
    const message = String(record.message)
    const render = (Object.hasOwn(RENDERERS, message) ? RENDERERS[message] : undefined) ?? fallback
    const [first, ...more] = render(record, context)
    if (first === undefined) return []
    return [`${paint('dim', clock(record.timestamp))} ${first}`, ...more.map((l) => `${INDENT}${l}`)]
  }
}

/**
 * Whether to colour a terminal's lines: FORCE_COLOR decides when set (0 or false: no), as in
 * Node.js; else NO_COLOR with any non-empty value says no (no-color.org); else the stream must be
 * a terminal that has colours.
 */
export function wantsColour(env: NodeJS.ProcessEnv, out: { readonly isTTY?: boolean; hasColors?(env?: object): boolean }): boolean {
  const force = env.FORCE_COLOR
  if (force !== undefined) return force !== '0' && force !== 'false'
  if (env.NO_COLOR) return false
  if (out.isTTY !== true || !out.hasColors) return false
  const { NO_COLOR: _empty, ...rest } = env // Node.js counts an empty NO_COLOR too; no-color.org does not
  return out.hasColors(rest)
}
