// rules.json as text: its size and nesting are bounded before it is parsed, a key written twice in
// one object is an error naming the key and both places, and entryText shows any value without
// throwing. A rules file nested 100k deep once overflowed the stack in entryText: `validate`
// printed a stack trace, and a reload logged only "uncaught exception". The scanner that finds
// duplicates is held to JSON.parse on generated and mutated documents.
import { get } from 'node:http'
import { renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { entryText } from '../lib/policy/rules.js'
import { loadRulesFile, MAX_RULES_BYTES, MAX_RULES_DEPTH } from '../lib/rules/file.js'
import { scanJson, type DuplicateKey } from '../lib/rules/json-scan.js'
import { runCli, startCli } from './helpers/cli.js'
import { rulesFile, tempDir } from './helpers/files.js'
import { rawExchange, startHttpUpstream, statusOf } from './helpers/net.js'

const FAILED = 'reload failed: keeping the previous rules'
const nested = (depth: number): string => `{"allow": ${'['.repeat(depth)}${']'.repeat(depth)}}`

function fileWith(text: string): string {
  const file = join(tempDir('rules-json'), 'rules.json')
  writeFileSync(file, text)
  return file
}

const errorsOf = (text: string) => {
  const loaded = loadRulesFile(fileWith(text))
  return loaded.ok ? [] : loaded.errors
}

t.test('a key written twice in one object is an error naming the key and both places', async (t) => {
  t.same(errorsOf('{"deny":["evil.com"],"deny":[]}'), [
    { path: 'deny', entry: '(line 1, column 22)', message: 'duplicate key "deny", also at line 1, column 2: JSON keeps only the last one, so the other would be ignored without a word' },
  ])
  const text = ['{', '  "allow": [', '    { "host": "a.test", "ports": [443], "h\\u006fst": "b.test" }', '  ],', '  "policies": { "dev": { "allow": [] }, "dev": { "allow": ["x.test"] } }', '}'].join('\n')
  t.match(errorsOf(text), [
    { path: 'allow[0].host', entry: '(line 3, column 41)', message: /^duplicate key "host", also at line 3, column 7:/ },
    { path: 'policies.dev', entry: '(line 5, column 41)', message: /^duplicate key "dev", also at line 5, column 17:/ },
  ])
  t.same(errorsOf('{"allow":["a.test"],"deny":[{"host":"b.test"}]}'), [], 'the same key in two objects is no repeat')
  const cli = await runCli(['validate', '--rules', fileWith('{"deny":["evil.com"],"deny":[]}')])
  t.equal(cli.code, 1, 'validate fails')
  t.match(cli.stderr, /deny \(line 1, column 22\): duplicate key "deny", also at line 1, column 2/)
})

t.test('nesting and size are bounded before JSON.parse, with a clear error', async (t) => {
  t.same(errorsOf(nested(MAX_RULES_DEPTH - 1)).map((e) => e.path), ['allow[0]'], `${MAX_RULES_DEPTH} deep is JSON the rules judge`)
  const deep = errorsOf(nested(100_000))
  t.equal(deep.length, 1)
  t.match(deep[0]?.message, new RegExp(`^arrays and objects nest more than ${MAX_RULES_DEPTH} deep \\(line 1, column ${10 + MAX_RULES_DEPTH}, in allow(\\[0\\])+…?\\)$`))
  t.match(errorsOf(`{"allow": ["${'a'.repeat(MAX_RULES_BYTES)}"]}`), [{ path: '(file)', message: /^larger than 8 MiB/ }])
  t.match(loadRulesFile('/dev/zero'), { ok: false, errors: [{ message: /^larger than 8 MiB/ }] }, 'a file without end is read no further than the bound')
  t.match(errorsOf('{"allow": [}'), [{ path: '(file)', message: /^not valid JSON at line 1, column 12: / }], 'a syntax error is named by JSON.parse, at its line and column')
})

t.test('entryText shows any value without throwing', async (t) => {
  let deep: unknown = []
  for (let i = 0; i < 100_000; i++) deep = [deep]
  const cycle: Record<string, unknown> = {}
  cycle.self = cycle
  t.equal(entryText(deep), '(nested more than 32 deep: not shown)')
  t.equal(entryText(cycle), '(nested more than 32 deep: not shown)')
  t.match(entryText({ n: 1n }), /^\(cannot be shown: /)
  t.equal(entryText({ host: 'a', ports: [1, 2] }), '{"host":"a","ports":[1,2]}')
  t.equal(entryText(undefined), 'undefined')
})

t.test('validate: 100k nested arrays are a clear error, not a stack trace', async (t) => {
  const file = fileWith(nested(100_000))
  const cli = await runCli(['validate', '--rules', file])
  t.equal(cli.code, 1)
  t.equal(cli.stderr, `${file}: 1 problem\n  (file) ${file}: arrays and objects nest more than ${MAX_RULES_DEPTH} deep (line 1, column ${10 + MAX_RULES_DEPTH}, in ${'allow'.concat('[0]'.repeat(25))}…)\n`)
})

t.test('a reload of 100k nested arrays fails as a reload: logged, on the dashboard, the old rules kept', async (t) => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.close())
  const file = rulesFile({ allow: [`127.0.0.1:${upstream.port}`] })
  const cli = await startCli(['start', '--log-format', 'json', '--rules', file, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--admin-token-file', join(tempDir('token'), 'admin-token')])
  t.teardown(() => void cli.child.kill('SIGKILL'))
  // renamed into place: the watcher, which may reload too, never reads half of it
  writeFileSync(`${file}.tmp`, nested(100_000))
  renameSync(`${file}.tmp`, file)
  cli.child.kill('SIGHUP')
  const failed = await cli.waitFor((l) => l.message === FAILED && l.trigger === 'SIGHUP')
  t.match(failed, { errors: [/^\(file\) .*: arrays and objects nest more than 64 deep/] })
  const admin = String((await cli.waitFor((l) => l.message === 'admin listening')).url)
  const state = await new Promise<string>((resolve, reject) => {
    get(new URL('/api/state', admin), (res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => resolve(body))
    }).on('error', reject)
  })
  t.match(JSON.parse(state), { lastReload: { ok: false, errors: [/nest more than 64 deep/] } }, 'the dashboard shows the failed reload')
  const still = await rawExchange(cli.port, `GET http://127.0.0.1:${upstream.port}/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(still.text), 200, 'the old rules are in force')
  t.notOk(cli.lines.some((l) => l.message === 'uncaught exception'), 'nothing was thrown')
  t.equal(await cli.stop(), 0)
})

// ---- the scanner against JSON.parse ------------------------------------------------------------

/** A tiny deterministic generator (mulberry32). */
function random(seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const KEYS = ['a', 'b', 'host', 'é', '\u0000', '"', '\\', 'deny', '']
const SCALARS = ['0', '-1.5e+3', '12', 'true', 'false', 'null', '"x"', '"\\u00e9\\n\\"\\\\\\/\\b\\f\\r\\t"', '"\\ud800"', '"é\u2028"', '-0', '1E5']
const WHITESPACE = ['', ' ', '\n', '\r\n', '\t', '  \r']

/** JSON text for a key, sometimes spelled with escapes: the scanner compares keys as JSON.parse reads them. */
function keyText(key: string, next: () => number): string {
  if (next() < 0.3) return `"${Array.from(key, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')}"`
  return JSON.stringify(key)
}

/** A random document, with the duplicate keys it holds (path and key) as the scanner should find them. */
function document(next: () => number): { text: string; duplicates: Array<{ path: string; key: string }> } {
  const duplicates: Array<{ path: string; key: string }> = []
  const pick = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)] as T
  const ws = (): string => pick(WHITESPACE)
  const value = (path: string, depth: number): string => {
    const r = path === '' ? 1 : next()
    if (depth > 4 || r < 0.4) return pick(SCALARS)
    if (r < 0.7) {
      const n = Math.floor(next() * 4)
      const items = Array.from({ length: n }, (_, i) => `${ws()}${value(`${path}[${i}]`, depth + 1)}${ws()}`)
      return `[${items.join(',') || ws()}]`
    }
    const seen = new Set<string>()
    const members: string[] = []
    for (let i = Math.floor(next() * 4); i > 0; i--) {
      const key = pick(KEYS)
      const child = path === '' ? key : `${path}.${key}`
      if (seen.has(key)) duplicates.push({ path: child, key })
      seen.add(key)
      members.push(`${ws()}${keyText(key, next)}${ws()}:${ws()}${value(child, depth + 1)}${ws()}`)
    }
    return `{${members.join(',') || ws()}}`
  }
  // the top level is an object, as in rules.json
  return { text: `${ws()}${value('', 0)}${ws()}`, duplicates }
}

const found = (duplicates: readonly DuplicateKey[]) => duplicates.map(({ path, key }) => ({ path, key }))

t.test('the scanner finds exactly the repeated keys in 3000 generated documents, which JSON.parse reads', async (t) => {
  const next = random(23)
  let withRepeats = 0
  for (let i = 0; i < 3000; i++) {
    const { text, duplicates } = document(next)
    JSON.parse(text)
    const scan = scanJson(text, MAX_RULES_DEPTH)
    if (scan.tooDeep) return t.fail(`too deep: ${text}`)
    if (JSON.stringify(found(scan.duplicates)) !== JSON.stringify(duplicates)) return t.same(found(scan.duplicates), duplicates, text)
    if (duplicates.length > 0) withRepeats++
  }
  t.ok(withRepeats > 300, `${withRepeats} of them hold repeats`)
})

t.test('on mutated documents the scanner never throws, and where JSON.parse reads one the scanner reads it to its end', async (t) => {
  const next = random(24)
  const alphabet = ['{', '}', '[', ']', ',', ':', '"', '\\', 'u', '0', '-', 'e', '.', ' ', 'a', 'n', '\u0001']
  let parsed = 0
  for (let i = 0; i < 5000; i++) {
    const { text } = document(next)
    const at = Math.floor(next() * text.length)
    const cut = next() < 0.5 ? 1 : 0
    const mutated = text.slice(0, at) + (next() < 0.8 ? (alphabet[Math.floor(next() * alphabet.length)] ?? '') : '') + text.slice(at + cut)
    const alone = scanJson(mutated, MAX_RULES_DEPTH)
    let ok = true
    try {
      JSON.parse(mutated)
    } catch {
      ok = false
    }
    if (!alone.tooDeep && (alone.syntaxError === undefined) !== ok) return t.fail(`the scanner ${ok ? 'found a syntax error in' : 'missed the syntax error in'} ${JSON.stringify(mutated)}`)
    if (!ok) continue
    parsed++
    // a repeat placed after the document is found only by a scan that read the document correctly
    const scan = scanJson(`{"doc":${mutated},"doc":0}`, MAX_RULES_DEPTH + 1)
    if (scan.tooDeep || scan.duplicates.at(-1)?.path !== 'doc') return t.fail(`the scanner stopped inside ${JSON.stringify(mutated)}`)
  }
  t.ok(parsed > 500, `${parsed} mutated documents were still JSON`)
})

t.test('a syntax error is named with its line and column', async (t) => {
  const cases: [string, string][] = [
    ['{\n  "allow": [\n    "a.test",\n  ]\n}\n', 'line 4, column 3'],
    ['{ "allow": ["a.test"] } x', 'line 1, column 25'],
    ['{ "allow": ["a.test" }', 'line 1, column 22'],
    ['', 'line 1, column 1'],
    ['{ "allow": ["a.test"]', 'line 1, column 22'],
  ]
  for (const [text, where] of cases) {
    const scan = scanJson(text, MAX_RULES_DEPTH)
    if (scan.tooDeep) return t.fail('not too deep')
    t.equal(scan.syntaxError && `line ${scan.syntaxError.line}, column ${scan.syntaxError.column}`, where, JSON.stringify(text))
  }
  const file = join(tempDir('syntax'), 'rules.json')
  writeFileSync(file, '{\n  "allow": [\n    "a.test",\n  ]\n}\n')
  const loaded = loadRulesFile(file)
  t.notOk(loaded.ok)
  t.match(loaded.ok ? '' : loaded.errors[0]?.message, /^not valid JSON at line 4, column 3: /)
})
