// Files that hold password hashes are for their owner only: `init` and `learn` write rules files
// 0600, `passwd` writes the file and its backup 0600 and says so when the file was readable by
// others; and `passwd` writes nothing to a rules file that does not exist or would not load.
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { hashPassword } from '../lib/proxy/auth.js'
import { runCli } from './helpers/cli.js'
import { tempDir } from './helpers/files.js'

const modeOf = (file: string) => (statSync(file).mode & 0o777).toString(8)
const PASSWORD = 'a-long-password\n'

t.test('init writes rules.json 0600, also over an existing file with --force', async (t) => {
  const cwd = tempDir('init-mode')
  const file = join(cwd, 'rules.json')
  t.equal((await runCli(['init'], { cwd })).code, 0)
  t.equal(modeOf(file), '600')
  chmodSync(file, 0o644)
  t.equal((await runCli(['init', '--force'], { cwd })).code, 0)
  t.equal(modeOf(file), '600')
})

t.test('passwd on a rules file others can read: warns, and the file and its backup are 0600', async (t) => {
  const dir = tempDir('passwd-mode')
  const rules = join(dir, 'rules.json')
  writeFileSync(rules, JSON.stringify({ allow: ['example.com:443'] }), { mode: 0o644 })
  chmodSync(rules, 0o644)
  // an older backup, readable by all, that the next write replaces
  writeFileSync(`${rules}.proxy-gate-backup`, '{}', { mode: 0o644 })
  chmodSync(`${rules}.proxy-gate-backup`, 0o644)
  const first = await runCli(['passwd', 'alice', '--rules', rules], { input: PASSWORD })
  t.equal(first.code, 0, first.stderr)
  t.match(first.stderr, `warning: ${rules} could be read by other users (mode 0644); it holds password hashes, so it is now 0600`)
  t.equal(modeOf(rules), '600')
  t.equal(modeOf(`${rules}.proxy-gate-backup`), '600')
  t.notMatch(first.stderr + first.stdout, /a-long-password/)
  const second = await runCli(['passwd', 'bob', '--rules', rules], { input: PASSWORD })
  t.equal(second.code, 0)
  t.notMatch(second.stderr, /warning/, 'no warning once it is 0600')
  t.equal(modeOf(rules), '600')
  t.equal(modeOf(`${rules}.proxy-gate-backup`), '600', 'the backup, which holds alice\'s hash now, too')
})

t.test('passwd refuses a rules file that does not exist: no file appears', async (t) => {
  const dir = tempDir('passwd-missing')
  const typo = join(dir, 'rulez.json')
  const res = await runCli(['passwd', 'alice', '--rules', typo], { input: PASSWORD })
  t.equal(res.code, 1)
  t.match(res.stderr, `there is no rules file at ${typo}: check the path, or write one first with "proxy-gate init --rules ${typo}"`)
  t.notMatch(res.stdout, /reloads/)
  t.notOk(existsSync(typo), 'no rules file holding only "auth" was made')
  t.notOk(existsSync(`${typo}.proxy-gate-backup`))
})

t.test('passwd refuses a rules file that would not load, before asking for the password; one that needs auth to load is fine', async (t) => {
  const dir = tempDir('passwd-invalid')
  const rules = join(dir, 'rules.json')
  const text = JSON.stringify({ allow: ['not a host!'] })
  writeFileSync(rules, text)
  // no input: stdin stays open, and a passwd that asked for the password would wait for it
  const res = await runCli(['passwd', 'alice', '--rules', rules])
  t.equal(res.code, 1)
  t.match(res.stderr, `${rules} would not load, so it was left as it is; fix it first (proxy-gate validate --rules ${rules}):`)
  t.match(res.stderr, /allow\[0\]/)
  t.equal(readFileSync(rules, 'utf8'), text, 'unchanged')
  t.notOk(existsSync(`${rules}.proxy-gate-backup`), 'no backup either')

  // a user policy needs "auth": passwd is how the file gets it
  writeFileSync(rules, JSON.stringify({ policies: { dev: { allow: [] } }, clients: [{ user: 'alice', policy: 'dev' }] }))
  t.not((await runCli(['validate', '--rules', rules])).code, 0, 'invalid without auth')
  const fixed = await runCli(['passwd', 'alice', '--rules', rules], { input: PASSWORD })
  t.equal(fixed.code, 0, fixed.stderr)
  t.equal((await runCli(['validate', '--rules', rules])).code, 0, 'valid with it')
})

t.test('learn writes its rules file 0600: it copies "auth" with its password hashes', async (t) => {
  const dir = tempDir('learn-mode')
  const rules = join(dir, 'rules.json')
  writeFileSync(rules, JSON.stringify({ allow: [], auth: { users: { alice: await hashPassword('alice password') } } }))
  const log = join(dir, 'decisions.log')
  writeFileSync(log, `${JSON.stringify({ level: 'info', message: 'decision', timestamp: '2026-01-01T00:00:00.000Z', target: 'api.example.com:443', decision: 'deny', reason: 'no-rule', mode: 'enforce' })}\n`)
  const out = join(dir, 'learned.json')
  const res = await runCli(['learn', '--rules', rules, '--from', log, '--out', out])
  t.equal(res.code, 0, res.stderr)
  t.match(JSON.parse(readFileSync(out, 'utf8')), { auth: { users: { alice: /^scrypt\$/ } }, allow: [{ host: 'api.example.com' }] })
  t.equal(modeOf(out), '600')
})
