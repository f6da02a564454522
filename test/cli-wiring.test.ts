// The wiring commands say what happened: system-proxy --apply fails when an OS tool did, docker
// --revert removes a file it created, --dry-run means something or is refused, a re-run says no change.
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { runCli } from './helpers/cli.js'
import { rulesFile, tempDir } from './helpers/files.js'

const RULES = { allow: ['registry-1.docker.io:443'], bypass: ['localhost'] }

/** A fake gsettings on PATH that records its arguments and fails for the keys in `failing`. */
function fakeGsettings(failing: string): { env: Record<string, string>; calls: () => string[] } {
  const dir = tempDir('fake-gsettings')
  const bin = join(dir, 'bin')
  mkdirSync(bin)
  const log = join(dir, 'calls')
  writeFileSync(log, '')
  const script = `#!/bin/sh\necho "$*" >> '${log}'\ncase "$3" in ${failing}) echo "gsettings: cannot set $3" >&2; exit 1;; esac\nexit 0\n`
  writeFileSync(join(bin, 'gsettings'), script)
  chmodSync(join(bin, 'gsettings'), 0o755)
  return { env: { PATH: `${bin}:${process.env.PATH ?? ''}` }, calls: () => readFileSync(log, 'utf8').split('\n').filter(Boolean) }
}

t.test('system-proxy --apply exits 1 when an OS command fails, even one before the last', { skip: process.platform !== 'linux' && 'runs the GNOME commands' }, async (t) => {
  const rules = rulesFile(RULES)
  const failing = fakeGsettings('autoconfig-url')
  const res = await runCli(['system-proxy', '--os', 'gnome', '--apply', '--rules', rules], { env: failing.env })
  t.equal(res.code, 1, res.stderr)
  t.match(res.stderr, /the commands failed/)
  t.same(failing.calls(), ["set org.gnome.system.proxy autoconfig-url http://127.0.0.1:3128/proxy.pac"], 'the first failure stops the rest')
  const working = fakeGsettings('none-fails')
  const ok = await runCli(['system-proxy', '--os', 'gnome', '--apply', '--rules', rules], { env: working.env })
  t.equal(ok.code, 0, ok.stderr)
  t.equal(working.calls().length, 2)
})

t.test('docker --revert removes a file that did not exist before --write', async (t) => {
  const dir = tempDir('docker-new')
  const file = join(dir, 'config.json')
  const rules = rulesFile(RULES)
  const wrote = await runCli(['docker', '--target', 'cli', '--write', '--file', file, '--rules', rules])
  t.equal(wrote.code, 0, wrote.stderr)
  t.ok(existsSync(file))
  const dry = await runCli(['docker', '--target', 'cli', '--revert', '--dry-run', '--file', file, '--rules', rules])
  t.equal(dry.code, 0, dry.stderr)
  t.match(dry.stdout, /dry run: --revert would change .* \(proxy-gate created it: it would be removed\)/)
  t.ok(existsSync(file), '--revert --dry-run changes nothing')
  t.ok(existsSync(`${file}.proxy-gate-backup`))
  const reverted = await runCli(['docker', '--target', 'cli', '--revert', '--file', file, '--rules', rules])
  t.equal(reverted.code, 0, reverted.stderr)
  t.match(reverted.stdout, /reverted: removed .*config\.json, which proxy-gate had created/)
  t.notOk(existsSync(file), 'no {} file left where there was none')
  t.notOk(existsSync(`${file}.proxy-gate-backup`))
})

t.test('docker --revert keeps a file proxy-gate created when other keys were added since', async (t) => {
  const dir = tempDir('docker-new')
  const file = join(dir, 'config.json')
  const rules = rulesFile(RULES)
  t.equal((await runCli(['docker', '--target', 'cli', '--write', '--file', file, '--rules', rules])).code, 0)
  writeFileSync(file, JSON.stringify({ ...(JSON.parse(readFileSync(file, 'utf8')) as object), credsStore: 'desktop' }))
  t.equal((await runCli(['docker', '--target', 'cli', '--revert', '--file', file, '--rules', rules])).code, 0)
  t.same(JSON.parse(readFileSync(file, 'utf8')), { credsStore: 'desktop' })
})

t.test('docker --dry-run without --write or --revert is refused; a second --write says only no change', async (t) => {
  const dir = tempDir('docker-dry')
  const file = join(dir, 'daemon.json')
  const rules = rulesFile(RULES)
  const dry = await runCli(['docker', '--target', 'daemon', '--dry-run', '--file', file, '--rules', rules])
  t.equal(dry.code, 2)
  t.match(dry.stderr, /--dry-run shows what --write or --revert would change/)
  t.equal(dry.stdout, '')
  const both = await runCli(['docker', '--target', 'daemon', '--write', '--revert', '--file', file, '--rules', rules])
  t.equal(both.code, 2)
  t.match(both.stderr, /choose --write or --revert/)
  t.equal((await runCli(['docker', '--target', 'daemon', '--write', '--file', file, '--rules', rules])).code, 0)
  const again = await runCli(['docker', '--target', 'daemon', '--write', '--file', file, '--rules', rules])
  t.equal(again.code, 0)
  t.equal(again.stdout, `no change: ${file} already has these values (nothing written)\n`)
})
