// lib/core/atomic-file.ts: the one way proxy-gate replaces a file (the CA, rules.json edits,
// Docker settings, learned rules): whole or not at all, with the mode asked for from the start.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { writeFileAtomic } from '../lib/core/atomic-file.js'

function folder(): string {
  return mkdtempSync(join(tmpdir(), 'pg-atomic-'))
}

t.test('replaces the content and leaves no temporary file', async (t) => {
  const dir = folder()
  const path = join(dir, 'settings.json')
  writeFileSync(path, 'old')
  writeFileAtomic(path, 'new content\n')
  t.equal(readFileSync(path, 'utf8'), 'new content\n')
  t.same(readdirSync(dir), ['settings.json'])
})

t.test('a mode is exact even when the umask would narrow it, and never wider than asked', async (t) => {
  const dir = folder()
  const old = process.umask(0o077)
  t.teardown(() => process.umask(old))
  writeFileAtomic(join(dir, 'ca.crt'), 'cert', 0o644)
  writeFileAtomic(join(dir, 'ca.key'), 'key', 0o600)
  t.equal(statSync(join(dir, 'ca.crt')).mode & 0o777, 0o644)
  t.equal(statSync(join(dir, 'ca.key')).mode & 0o777, 0o600)
})

t.test('without a mode a new file is created as a plain write would create it', async (t) => {
  const dir = folder()
  const old = process.umask(0o022)
  t.teardown(() => process.umask(old))
  writeFileAtomic(join(dir, 'learned.json'), '{}')
  writeFileSync(join(dir, 'plain.json'), '{}')
  t.equal(statSync(join(dir, 'learned.json')).mode & 0o777, statSync(join(dir, 'plain.json')).mode & 0o777)
})

t.test('a write that cannot land leaves the old state and no temporary file', async (t) => {
  const dir = folder()
  const path = join(dir, 'taken')
  mkdirSync(join(path, 'inside'), { recursive: true }) // a non-empty folder: rename over it fails
  t.throws(() => writeFileAtomic(path, 'text'))
  t.same(readdirSync(dir), ['taken'])
  t.ok(statSync(path).isDirectory())
})
