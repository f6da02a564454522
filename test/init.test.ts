// The rules that ship in the package, used when there is no ./rules.json, and `proxy-gate init`,
// which writes an editable copy: dist/cli.js in its own process, run in empty folders.
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { runCli, startCli } from './helpers/cli.js'
import { tempDir } from './helpers/files.js'
import { connectHead } from './helpers/http.js'
import { rawExchange, statusOf } from './helpers/net.js'

/** The rules and schema that ship in the package (here: the repository's own). */
const PACKAGED = fileURLToPath(new URL('../rules.json', import.meta.url))
const SCHEMA_URL = new URL('../rules.schema.json', import.meta.url).href

function readJson(file: string): Record<string, unknown> {
  return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>
}

t.test('without --rules and ./rules.json: the packaged rules, read-only; a --rules FILE must exist', async (t) => {
  const cwd = tempDir('no-rules')
  const shipped = readFileSync(PACKAGED, 'utf8')
  const notice = /no \.\/rules\.json here: using the rules that ship with proxy-gate, .*rules\.json \(read-only; "proxy-gate init" writes an editable copy\)/
  const validate = await runCli(['validate'], { cwd })
  t.equal(validate.code, 0)
  t.equal(validate.stdout.split(': ok')[0], PACKAGED)
  t.match(validate.stderr, notice)
  const check = await runCli(['check', 'example.com:443'], { cwd })
  t.equal(check.code, 1)
  t.match(check.stdout, /decision: deny/)
  t.match(check.stderr, notice)
  const pac = await runCli(['pac'], { cwd })
  t.equal(pac.code, 0)
  t.match(pac.stdout, /PROXY 127\.0\.0\.1:3128/)
  const missing = await runCli(['validate', '--rules', 'rules.json'], { cwd })
  t.equal(missing.code, 1)
  t.match(missing.stderr, /cannot read: ENOENT/)
  const passwd = await runCli(['passwd', 'bob'], { cwd, input: 'a-long-password\n' })
  t.equal(passwd.code, 1)
  t.match(passwd.stderr, /passwd does not edit the rules that ship with proxy-gate .*run "proxy-gate init"/)
  t.equal(readFileSync(PACKAGED, 'utf8'), shipped, 'the packaged rules are untouched')
  t.notOk(existsSync(join(cwd, 'rules.json')), 'and no rules.json appeared')
})

t.test('learn on the packaged rules: the learned file points at the packaged schema; never written over them', async (t) => {
  const cwd = tempDir('learn-packaged')
  const log = join(cwd, 'empty.log')
  writeFileSync(log, '')
  const res = await runCli(['learn', '--from', log], { cwd })
  t.equal(res.code, 0, res.stderr)
  const learned = readJson(join(cwd, 'learned-rules.json'))
  t.same(learned, { ...readJson(PACKAGED), $schema: SCHEMA_URL })
  const over = await runCli(['learn', '--from', log, '--out', PACKAGED, '--force'], { cwd })
  t.equal(over.code, 2)
  t.match(over.stderr, /--out is the rules file that ships with proxy-gate/)
})

t.test('init: the shipped rules with notes and the packaged schema, never replaced without --force', async (t) => {
  const cwd = tempDir('init')
  const file = join(cwd, 'rules.json')
  const first = await runCli(['init'], { cwd })
  t.equal(first.code, 0, first.stderr)
  t.match(first.stdout, `wrote ${file}`)
  const written = readJson(file)
  t.same(written, { ...readJson(PACKAGED), $schema: SCHEMA_URL })
  const entries = written.allow as Array<{ note?: unknown }>
  t.ok(entries.length > 0 && entries.every((e) => typeof e.note === 'string' && e.note !== ''), 'every entry says what it is for')
  t.ok(existsSync(fileURLToPath(SCHEMA_URL)))
  const validate = await runCli(['validate'], { cwd })
  t.equal(validate.code, 0)
  t.equal(validate.stdout.split(': ok')[0], file, 'commands now pick ./rules.json')
  t.equal(validate.stderr, '')

  writeFileSync(file, '{ "allow": ["mine.example:443"] }')
  const again = await runCli(['init'], { cwd })
  t.equal(again.code, 1)
  t.match(again.stderr, /rules\.json already exists: pass --force/)
  t.equal(readFileSync(file, 'utf8'), '{ "allow": ["mine.example:443"] }')
  const forced = await runCli(['init', '--force'], { cwd })
  t.equal(forced.code, 0)
  t.same(readJson(file), written)

  const other = await runCli(['init', '--rules', 'sub/custom.json'], { cwd })
  t.equal(other.code, 1)
  t.match(other.stderr, /cannot write .*sub\/custom\.json/)
  const packaged = await runCli(['init', '--rules', PACKAGED, '--force'], { cwd })
  t.equal(packaged.code, 1)
  t.match(packaged.stderr, /is the rules file that ships with proxy-gate/)
})

t.test('start without ./rules.json: the packaged rules, said in the first log line, not watched', async (t) => {
  const cwd = tempDir('start-packaged')
  const tokenFile = join(cwd, 'admin-token')
  const cli = await startCli(['start', '--log-format', 'json', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--admin-token-file', tokenFile], { cwd })
  t.teardown(() => cli.child.kill('SIGKILL'))
  t.match(cli.lines[0], { level: 'info', message: /rules that ship with proxy-gate \(read-only, not watched\); "proxy-gate init" writes an editable copy/, rules: PACKAGED, watched: false })
  t.match(await cli.waitFor((l) => l.message === 'listening'), { rules: PACKAGED })
  const denied = await rawExchange(cli.port, connectHead('example.com:443'))
  t.equal(statusOf(denied.text), 403)
  cli.child.kill('SIGTERM')
  t.equal(await cli.exited, 0)
})
