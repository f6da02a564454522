// `start` tells the truth before and as it listens: the wiring hints name the address and rules
// it runs with, and admin-listener problems refuse the start before anything listens.
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { runCli, startCli } from './helpers/cli.js'
import { rulesFile, tempDir } from './helpers/files.js'

function hintArgs(hint: unknown): string[] {
  const command = String(hint).split('   (')[0] ?? ''
  const words = command.split(' ')
  return words.slice(2).filter((w) => w !== '--write')
}

t.test('the wire-it-up hints carry --rules and the address --listen chose, and run as printed', async (t) => {
  const file = rulesFile({ allow: ['example.test:443'] })
  const tokenFile = join(tempDir('token'), 'admin-token')
  const proxy = await startCli(['start', '--log-format', 'json', '--listen', '127.0.0.1:0', '--rules', file, '--admin-listen', '127.0.0.1:0', '--admin-token-file', tokenFile])
  t.teardown(() => proxy.stop())
  const hints = await proxy.waitFor((l) => l.message === 'wire it up')
  const address = `127.0.0.1:${proxy.port}`
  for (const key of ['dockerDesktop', 'dockerDesktopAdmin', 'systemProxy']) {
    t.match(String(hints[key]), ` --rules ${file}`, `${key} names the rules file`)
    t.match(String(hints[key]), ` --advertise ${address}`, `${key} names the listener`)
  }
  t.match(String(hints.containerEnv), ` --advertise host.docker.internal:${proxy.port}`)
  t.match(String(hints.dockerDesktopAdmin), /--target admin --pac /, 'the admin hint keeps --pac')
  // the commands as printed (without --write: they print what they would write) use this proxy's address
  const store = await runCli(hintArgs(hints.dockerDesktop))
  t.equal(store.code, 0, store.stderr)
  t.match(store.stdout, `"http://${address}"`)
  const admin = await runCli(hintArgs(hints.dockerDesktopAdmin))
  t.match(admin.stdout, `"pac": "http://${address}/proxy.pac"`)
  const cli = await runCli(hintArgs(hints.containerEnv))
  t.match(cli.stdout, `"http://host.docker.internal:${proxy.port}"`)
  const system = await runCli([...hintArgs(hints.systemProxy), '--os', 'gnome'])
  t.match(system.stdout, `http://${address}/proxy.pac`)
})

t.test('without --listen or --rules the hints stay short', async (t) => {
  const dir = tempDir('hints')
  writeFileSync(join(dir, 'rules.json'), JSON.stringify({ listen: '127.0.0.1:0', allow: [] }))
  const proxy = await startCli(['start', '--log-format', 'json', '--admin-listen', 'off'], { cwd: dir })
  t.teardown(() => proxy.stop())
  const hints = await proxy.waitFor((l) => l.message === 'wire it up')
  t.equal(String(hints.dockerDesktop), 'npx proxy-gate docker --target settings-store --write   (then restart Docker Desktop)')
})

t.test('admin-listener problems refuse the start before the proxy listens', async (t) => {
  const file = rulesFile({ listen: '127.0.0.1:0', allow: [] })
  const open = await runCli(['start', '--log-format', 'json', '--rules', file, '--admin-listen', '192.0.2.1:0'])
  t.equal(open.code, 1)
  t.match(open.stderr, /proxy-gate did not start: the admin listener shows traffic; listening on 192\.0\.2\.1 needs --insecure-open/)
  t.equal(open.stdout, '', 'nothing logged: no listening line, no hints')
  const tokenFile = join(tempDir('token'), 'admin-token')
  writeFileSync(tokenFile, 'a-token-of-enough-length-0123456789\n')
  chmodSync(tokenFile, 0o644)
  const readable = await runCli(['start', '--log-format', 'json', '--rules', file, '--admin-listen', '127.0.0.1:0', '--admin-token-file', tokenFile])
  t.equal(readable.code, 1)
  t.match(readable.stderr, /can be read by other users: chmod 600 it/)
  t.equal(readable.stdout, '', 'nothing logged: no listening line, no hints')
  const badAddress = await runCli(['start', '--rules', file, '--admin-listen', 'nope'])
  t.equal(badAddress.code, 1)
  t.match(badAddress.stderr, /--admin-listen: /)
  t.equal(badAddress.stdout, '')
})
