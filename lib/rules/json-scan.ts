// What JSON.parse does not say about rules.json: how deep it nests (checked before anything is
// parsed, so no later step recurses through 100k arrays) and which keys appear twice in one
// object (JSON.parse keeps the last silently: {"deny":["evil.com"],"deny":[]} has no deny rule).
// A scanner of our own rather than a library: it walks the text once without recursion (the
// JSON parsers on npm that report duplicates recurse), holds only a stack of open containers, and
// needs no value of its own: JSON.parse still makes the value. It follows RFC 8259 exactly, so it
// agrees with JSON.parse on what is JSON (test/json-scan.test.ts holds the two to it); at a
// syntax error it stops, says where (JSON.parse's messages do not, on every Node), and JSON.parse names the error.

export interface JsonSpot {
  /** where in rules.json, as errors name it: `deny`, `policies.dev.allow[2]` */
  readonly path: string
  /** 1-based */
  readonly line: number
  readonly column: number
}

export interface DuplicateKey extends JsonSpot {
  readonly key: string
  /** where the key stood first */
  readonly first: JsonSpot
}

export type JsonScan =
  | { readonly tooDeep: JsonSpot }
  | {
      readonly tooDeep: undefined
      readonly duplicates: readonly DuplicateKey[]
      /** where the text stops being JSON (JSON.parse's messages do not all say where): undefined when it is JSON */
      readonly syntaxError: JsonSpot | undefined
    }

interface Container {
  readonly object: boolean
  readonly path: string
  /** object: key -> offset of its first occurrence */
  readonly keys: Map<string, number>
  /** array: the index of the next element; object: the key whose value comes next */
  index: number
  key: string
}

const WHITESPACE = /[ \t\n\r]*/y
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y
const LITERAL = /true|false|null/y
const ESCAPED = new Set(['"', '\\', '/', 'b', 'f', 'n', 'r', 't'])
const HEX4 = /^[0-9a-fA-F]{4}$/

function skip(pattern: RegExp, text: string, at: number): number {
  pattern.lastIndex = at
  return pattern.test(text) ? pattern.lastIndex : -1
}

/** The offset after the string that opens at `at` (a `"`), or -1. A loop, not a regex: strings may be megabytes long. */
function stringEnd(text: string, at: number): number {
  let i = at + 1
  for (;;) {
    const c = text.charCodeAt(i)
    if (Number.isNaN(c) || c < 0x20) return -1
    if (c === 0x22) return i + 1
    if (c !== 0x5c) i += 1
    else if (ESCAPED.has(text.charAt(i + 1))) i += 2
    else if (text.charAt(i + 1) === 'u' && HEX4.test(text.slice(i + 2, i + 6))) i += 6
    else return -1
  }
}

function spotAt(text: string, offset: number, path: string): JsonSpot {
  const before = text.slice(0, offset)
  const lineStart = Math.max(before.lastIndexOf('\n'), before.lastIndexOf('\r')) + 1
  const line = 1 + (before.match(/\r\n|\r|\n/g)?.length ?? 0)
  return { path, line, column: offset - lineStart + 1 }
}

function childPath(parent: Container | undefined): string {
  if (parent === undefined) return ''
  if (!parent.object) return `${parent.path}[${parent.index}]`
  return parent.path === '' ? parent.key : `${parent.path}.${parent.key}`
}

/** The scan's place in the text: the containers open around it and whether a value comes next. */
class Scanner {
  readonly open: Container[] = []
  readonly duplicates: DuplicateKey[] = []
  private offset = 0
  /** the last place the scan stood on: where a syntax error is, once `at` is -1 */
  lastGood = 0
  /** true: a value comes next (after `[`, `,` in an array, `:`); false: `,` or a closing bracket */
  wantValue = true

  constructor(
    readonly text: string,
    readonly maxDepth: number,
  ) {
    this.at = skip(WHITESPACE, text, 0)
  }

  get at(): number {
    return this.offset
  }

  set at(value: number) {
    this.offset = value
    if (value >= 0) this.lastGood = value
  }

  /** Whether the scan ended at the end of one complete value (else the text is not JSON, from lastGood on). */
  get complete(): boolean {
    return this.offset === this.text.length && this.open.length === 0 && !this.wantValue
  }

  /** One step: a value, or what follows one. false: the text ends here (or stops being JSON). */
  step(): boolean | JsonSpot {
    const c = this.text.charAt(this.at)
    if (!this.wantValue) return this.afterValue(c)
    if (c === '{' || c === '[') return this.openContainer(c)
    this.at = c === '"' ? stringEnd(this.text, this.at) : skip(c === '-' || (c >= '0' && c <= '9') ? NUMBER : LITERAL, this.text, this.at)
    this.wantValue = false
    return this.at >= 0
  }

  private openContainer(c: '{' | '['): boolean | JsonSpot {
    const path = childPath(this.open.at(-1))
    if (this.open.length >= this.maxDepth) return spotAt(this.text, this.at, path)
    const container: Container = { object: c === '{', path, keys: new Map(), index: 0, key: '' }
    this.open.push(container)
    this.at = skip(WHITESPACE, this.text, this.at + 1)
    if (this.text.charAt(this.at) === (c === '{' ? '}' : ']')) {
      this.open.pop()
      this.at += 1
      this.wantValue = false
    } else if (container.object) this.at = readKey(this.text, this.at, container, this.duplicates)
    return this.at >= 0
  }

  private afterValue(c: string): boolean {
    const top = this.open.at(-1)
    if (top === undefined) return false
    if (c === (top.object ? '}' : ']')) {
      this.open.pop()
      this.at += 1
      return true
    }
    if (c !== ',') return false
    this.at = skip(WHITESPACE, this.text, this.at + 1)
    if (top.object) this.at = readKey(this.text, this.at, top, this.duplicates)
    else top.index += 1
    this.wantValue = true
    return this.at >= 0
  }
}

/**
 * Scans JSON text: the first place where containers nest deeper than `maxDepth`, else every key
 * that repeats in its object. Stops at a syntax error with what it found before it, and its place.
 */
export function scanJson(text: string, maxDepth: number): JsonScan {
  const scanner = new Scanner(text, maxDepth)
  for (;;) {
    const step = scanner.step()
    if (typeof step === 'object') return { tooDeep: step }
    if (!step) return { tooDeep: undefined, duplicates: scanner.duplicates, syntaxError: scanner.complete ? undefined : spotAt(text, scanner.lastGood, '') }
    scanner.at = skip(WHITESPACE, text, scanner.at)
  }
}

/** Reads `"key" :` at `at` into the object `into`, noting a repeat; the offset after the colon, or -1. */
function readKey(text: string, at: number, into: Container, duplicates: DuplicateKey[]): number {
  if (text.charAt(at) !== '"') return -1
  const end = stringEnd(text, at)
  if (end < 0) return -1
  const key = JSON.parse(text.slice(at, end)) as string
  into.key = key
  const first = into.keys.get(key)
  if (first === undefined) into.keys.set(key, at)
  else {
    const path = childPath(into)
    duplicates.push({ key, ...spotAt(text, at, path), first: spotAt(text, first, path) })
  }
  const colon = skip(WHITESPACE, text, end)
  return text.charAt(colon) === ':' ? colon + 1 : -1
}
