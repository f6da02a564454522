// ci: floor line only: pure functions, no I/O: the same under any Node
// Every number in rules.json has a range, the same in rules.schema.json and in validation: the
// numbers are found by walking the schema (a new unbounded one fails here), and each is tried at its
// bounds and one past them through parseConfig. A timeout past what a timer can wait (2^31-1 ms)
// is refused at load, where it used to fire after 1 ms; the scrypt cost in an auth hash is bounded too.
import { readFileSync } from 'node:fs'
import t from 'tap'
import { MAX_TIMER_MS } from '../lib/rules/bounds.js'
import { parseConfig } from '../lib/rules/config.js'
import { formatRuleErrors, type RuleError } from '../lib/policy/rules.js'
import { formatScryptHash } from '../lib/rules/auth.js'

type Schema = Record<string, unknown>

const SCHEMA = JSON.parse(readFileSync(new URL('../rules.schema.json', import.meta.url), 'utf8')) as Schema

/** A place in rules.json: keys, with '[]' for "an item of this array" (built as a one-item array). */
type Path = readonly string[]

interface NumberSlot {
  readonly path: Path
  readonly schema: Schema
  /** for each object on the way: the required keys to fill in */
  readonly required: ReadonlyMap<number, readonly string[]>
}

/** Strings that required keys need so that a document is valid apart from the number under test. */
const FILLERS: Record<string, unknown> = { host: 'example.com', address: '127.0.0.1' }

/** limits.headerTimeoutMs may not be longer than limits.requestTimeoutMs: room for each to reach its own bounds. */
const BASE = { limits: { headerTimeoutMs: 100, requestTimeoutMs: MAX_TIMER_MS } }

function resolveRef(node: Schema): Schema {
  const ref = node.$ref
  if (typeof ref !== 'string') return node
  return ref.replace(/^#\//, '').split('/').reduce<Schema>((at, key) => at[key] as Schema, SCHEMA)
}

/** Every integer or number in the schema, wherever it sits (objects, arrays, oneOf, $ref, named policies). */
function numbersIn(node: Schema, path: Path = [], required = new Map<number, readonly string[]>()): NumberSlot[] {
  const schema = resolveRef(node)
  if (schema.type === 'integer' || schema.type === 'number') return [{ path, schema, required }]
  const found: NumberSlot[] = []
  const alternatives = (schema.oneOf ?? schema.anyOf ?? []) as Schema[]
  for (const alt of alternatives) found.push(...numbersIn(alt, path, required))
  if (schema.items) found.push(...numbersIn(schema.items as Schema, [...path, '[]'], required))
  const props = (schema.properties ?? {}) as Record<string, Schema>
  const withRequired = Array.isArray(schema.required) ? new Map([...required, [path.length, schema.required as string[]]]) : required
  for (const [key, child] of Object.entries(props)) found.push(...numbersIn(child, [...path, key], withRequired))
  if (typeof schema.additionalProperties === 'object') found.push(...numbersIn(schema.additionalProperties as Schema, [...path, 'named'], withRequired))
  return found
}

/** A rules document with `value` at the slot's place, required keys filled in, over BASE. */
function documentWith(slot: NumberSlot, value: number): Record<string, unknown> {
  const build = (depth: number): unknown => {
    if (depth === slot.path.length) return value
    const key = slot.path[depth] as string
    const inner = build(depth + 1)
    if (key === '[]') return [inner]
    const filled = Object.fromEntries((slot.required.get(depth) ?? []).filter((k) => k !== key).map((k) => [k, FILLERS[k]]))
    return { ...filled, [key]: inner }
  }
  const doc = build(0) as Record<string, unknown>
  const limits = doc.limits as Record<string, unknown> | undefined
  return { ...doc, limits: { ...BASE.limits, ...limits } }
}

function label(path: Path): string {
  return path.join('.').replaceAll('.[]', '[]')
}

function errorsFor(doc: Record<string, unknown>): RuleError[] {
  const parsed = parseConfig(doc)
  return parsed.ok ? [] : parsed.errors
}

const SLOTS = numbersIn(SCHEMA)

t.test('every number in the schema is a whole number with a minimum and a maximum', async (t) => {
  const found = SLOTS.map((s) => label(s.path))
  const known = ['limits.headerTimeoutMs', 'limits.drainDelayMs', 'limits.maxHeaderBytes', 'tls.helloTimeoutMs', 'tls.ports[]', 'dns.timeoutMs', 'dns.cacheSize', 'sandbox.dns', 'sandbox.dnsQueriesPerSecond', 'sandbox.http[]', 'sandbox.socks', 'allow[].ports[]', 'policies.named.deny[].ports[]']
  t.same(known.filter((k) => !found.includes(k)), [], 'the walk finds the numbers rules.json has')
  for (const slot of SLOTS) {
    const { type, minimum, maximum } = slot.schema
    t.equal(type, 'integer', `${label(slot.path)} is an integer`)
    t.ok(typeof minimum === 'number' && typeof maximum === 'number' && minimum <= maximum, `${label(slot.path)} has a range (${String(minimum)}-${String(maximum)})`)
    if (label(slot.path).endsWith('Ms')) t.ok(typeof maximum === 'number' && maximum <= MAX_TIMER_MS, `${label(slot.path)}: no longer than a timer can wait`)
  }
})

t.test('validation takes each number at its bounds and refuses one past them, naming the key, the value and the range', async (t) => {
  for (const slot of SLOTS) {
    const min = slot.schema.minimum as number
    const max = slot.schema.maximum as number
    const where = label(slot.path)
    const key = slot.path.filter((k) => k !== '[]').at(-1) as string
    for (const value of [min, max]) t.same(formatRuleErrors(errorsFor(documentWith(slot, value))), '', `${where} = ${value} is accepted`)
    for (const value of [min - 1, max + 1, min + 0.5]) {
      const lines = formatRuleErrors(errorsFor(documentWith(slot, value))).split('\n')
      const named = lines.find((line) => line.includes(key) && line.includes(String(value)))
      t.ok(named, `${where} = ${value} is refused: ${lines.join(' | ')}`)
      if (value !== min + 0.5) t.ok(named?.includes(String(min)) && named.includes(String(max)), `...and the error gives the range ${min}-${max}: ${named ?? ''}`)
    }
  }
})

t.test('a timeout past what a timer can wait is refused at load', async (t) => {
  const errors = errorsFor({ tls: { helloTimeoutMs: 3_000_000_000 }, limits: { tunnelIdleTimeoutMs: 2 ** 31 } })
  t.same(
    errors.map((e) => `${e.path} ${e.entry}: ${e.message}`),
    ['limits.tunnelIdleTimeoutMs 2147483648: must be a whole number from 100 to 2147483647 (milliseconds)', 'tls.helloTimeoutMs 3000000000: must be a whole number from 100 to 300000 (milliseconds)'],
  )
})

t.test('an auth hash whose scrypt cost is out of range is refused at load (a login would fail on it, or take the CPU)', async (t) => {
  const hash = (N: number, r: number, p: number) => formatScryptHash({ N, r, p, salt: Buffer.alloc(16, 1), key: Buffer.alloc(32, 2) })
  const errorsOf = (h: string) => errorsFor({ auth: { users: { alice: h } } }).map((e) => `${e.path}: ${e.message}`)
  t.same(errorsOf(hash(16_384, 8, 1)), [], 'what proxy-gate passwd writes')
  t.same(errorsOf(hash(1_024, 1, 1)), [], 'the least cost accepted')
  for (const [N, r, p] of [
    [131_072, 8, 1], // 128 MiB of memory: past what one check may use
    [65_536, 16, 1],
    [16_384, 8, 17],
    [16_384, 33, 1],
    [12_288, 8, 1], // not a power of two
    [1 << 30, 1, 1],
  ] as const) {
    const [line] = errorsOf(hash(N, r, p))
    t.match(line, new RegExp(`^auth\\.users\\.alice: scrypt cost N=${N}, r=${r}, p=${p} is out of range`), `N=${N} r=${r} p=${p}`)
  }
})
