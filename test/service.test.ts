// ci: floor line only: it checks files proxy-gate writes with the tools that read them, not Node's runtime
// `proxy-gate service install|uninstall|status` through recording stand-ins for launchctl,
// systemctl and schtasks on PATH (each appends its arguments to a file and keeps its state as
// files), in a temporary HOME: what each OS's tools are asked, refusal to overwrite, idempotence,
// a Linux without a user manager, and npx's cache refused.
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import t from 'tap'
import { CLI_PATH, runCli, type CliResult } from './helpers/cli.js'
import { tempDir } from './helpers/files.js'

const ROOT = new URL('..', import.meta.url).pathname
// first on PATH: this node is then the `node` the service file names (see the PATH test below)
const NODE_DIR = dirname(process.execPath)

const RECORD = `{ printf '%s' "\${0##*/}"; for a in "$@"; do printf '\\037%s' "$a"; done; printf '\\036'; } >> "$FAKE_STATE/calls"`

const FAKES: Record<string, string> = {
  launchctl: `case "$1" in
  print) [ -e "$FAKE_STATE/loaded" ] || { echo "Bad request. Could not find service \\"$2\\" in domain for port" >&2; exit 113; }
    printf '%s = {\\n\\tstate = running\\n\\tpid = 4242\\n}\\n' "$2" ;;
  bootstrap) [ -e "$FAKE_STATE/fail" ] && { echo "Bootstrap failed: 5: Input/output error" >&2; exit 5; }
    touch "$FAKE_STATE/loaded" ;;
  bootout) rm "$FAKE_STATE/loaded" || exit 3 ;;
esac`,
  // as the real one answers where no user manager runs (measured here: root in a container)
  systemctl: `[ -e "$FAKE_STATE/nobus" ] && { echo "Failed to connect to bus: No medium found" >&2; exit 1; }
case "$2" in
  is-active) if [ -e "$FAKE_STATE/active" ]; then echo active; else echo inactive; exit 3; fi ;;
  enable) touch "$FAKE_STATE/active" ;;
  disable) rm -f "$FAKE_STATE/active" ;;
esac`,
  schtasks: `case "$1" in
  /Query) [ -e "$FAKE_STATE/task" ] || { echo "ERROR: The system cannot find the file specified." >&2; exit 1; }
    if [ -e "$FAKE_STATE/running" ]; then echo '"\\proxy-gate","N/A","Running"'; else echo '"\\proxy-gate","N/A","Ready"'; fi ;;
  /Create) cp "$3" "$FAKE_STATE/task" ;;
  /Run) [ -e "$FAKE_STATE/task" ] && touch "$FAKE_STATE/running" ;;
  /End) rm -f "$FAKE_STATE/running" ;;
  /Delete) rm -f "$FAKE_STATE/task" "$FAKE_STATE/running" ;;
esac`,
}

interface Machine {
  readonly home: string
  readonly cwd: string
  readonly rules: string
  readonly state: string
  /** runs `proxy-gate service ARGS` with the fakes first on PATH */
  service(args: readonly string[], os: string): Promise<CliResult>
  /** the tools' calls since the last look, each as [tool, ...args] */
  calls(): string[][]
}

function machine(name: string): Machine {
  const base = tempDir(`service-${name}`)
  const bin = join(base, 'bin')
  const state = join(base, 'state')
  const home = join(base, 'home with spaces')
  const cwd = join(base, 'work dir')
  for (const dir of [bin, state, home, cwd]) mkdirSync(dir)
  for (const [tool, body] of Object.entries(FAKES)) writeFileSync(join(bin, tool), `#!/bin/sh\n${RECORD}\n${body}\n`, { mode: 0o755 })
  const rules = join(cwd, 'rules.json')
  copyFileSync(join(ROOT, 'rules.json'), rules)
  let seen = 0
  return {
    home,
    cwd,
    rules,
    state,
    service: (args, os) => runCli(['service', ...args, '--os', os], { cwd, env: { HOME: home, FAKE_STATE: state, PATH: `${bin}:${NODE_DIR}:${process.env.PATH ?? ''}` } }),
    calls: () => {
      const file = join(state, 'calls')
      const all = existsSync(file) ? readFileSync(file, 'utf8').split('\x1e').filter(Boolean) : []
      const fresh = all.slice(seen)
      seen = all.length
      return fresh.map((c) => c.split('\x1f'))
    },
  }
}

const UNIT = ['systemctl', '--user']

t.test('linux: install writes the unit and enables it; status; again is "already installed"; uninstall disables and removes', async (t) => {
  const m = machine('linux')
  const file = join(m.home, '.config', 'systemd', 'user', 'proxy-gate.service')
  const dry = await m.service(['install', '--dry-run'], 'linux')
  t.equal(dry.code, 0, dry.stderr)
  t.same(m.calls(), [], 'a dry run runs nothing')
  t.notOk(existsSync(file), 'and writes nothing')

  const install = await m.service(['install'], 'linux')
  t.equal(install.code, 0, install.stderr)
  t.equal(readFileSync(file, 'utf8'), dry.stdout, 'the file is what --dry-run printed')
  t.match(dry.stdout, `--rules "${m.rules}" `)
  t.same(m.calls(), [[...UNIT, 'is-active', 'proxy-gate.service'], [...UNIT, 'daemon-reload'], [...UNIT, 'enable', '--now', 'proxy-gate.service']])
  t.match(install.stdout, `wrote ${file}\nproxy-gate starts at login and runs now; log: journalctl --user -u proxy-gate.service`)

  const status = await m.service(['status'], 'linux')
  t.equal(status.code, 0)
  t.equal(status.stdout, `installed: yes (${file})\nrunning:   yes (active)\nlog:       journalctl --user -u proxy-gate.service\n`)
  m.calls()

  const again = await m.service(['install'], 'linux')
  t.equal(again.code, 0, again.stderr)
  t.match(again.stdout, `already installed: ${file}`)
  t.same(m.calls(), [[...UNIT, 'is-active', 'proxy-gate.service'], [...UNIT, 'daemon-reload'], [...UNIT, 'enable', '--now', 'proxy-gate.service']], 'still makes sure it is enabled and started; no restart')

  const uninstall = await m.service(['uninstall'], 'linux')
  t.equal(uninstall.code, 0, uninstall.stderr)
  t.notOk(existsSync(file))
  t.same(m.calls(), [[...UNIT, 'is-active', 'proxy-gate.service'], [...UNIT, 'disable', '--now', 'proxy-gate.service'], [...UNIT, 'daemon-reload']])
  const after = await m.service(['status'], 'linux')
  t.equal(after.code, 1)
  t.match(after.stdout, `installed: no (no ${file})\nrunning:   no (inactive)`)
  const twice = await m.service(['uninstall'], 'linux')
  t.equal(twice.code, 0)
  t.match(twice.stdout, `not installed: no ${file}`)
})

t.test('a different existing file is kept without --force; with it, replaced and restarted', async (t) => {
  const m = machine('force')
  const file = join(m.home, '.config', 'systemd', 'user', 'proxy-gate.service')
  t.equal((await m.service(['install'], 'linux')).code, 0)
  const other = join(m.cwd, 'other rules.json')
  copyFileSync(m.rules, other)
  const before = readFileSync(file, 'utf8')
  m.calls()
  const refused = await m.service(['install', '--rules', other], 'linux')
  t.equal(refused.code, 1)
  t.match(refused.stderr, `${file} exists and differs from the service file this would write: pass --force to replace it`)
  t.equal(readFileSync(file, 'utf8'), before, 'untouched')
  t.same(m.calls(), [], 'and nothing ran')
  const forced = await m.service(['install', '--rules', other, '--force'], 'linux')
  t.equal(forced.code, 0, forced.stderr)
  t.match(forced.stdout, `replaced ${file}`)
  t.match(readFileSync(file, 'utf8'), `--rules "${other}"`)
  t.same(m.calls(), [[...UNIT, 'is-active', 'proxy-gate.service'], [...UNIT, 'daemon-reload'], [...UNIT, 'enable', '--now', 'proxy-gate.service'], [...UNIT, 'restart', 'proxy-gate.service']])
})

t.test('linux without a user manager: the unit is written, and it says so and what to run', async (t) => {
  const m = machine('nobus')
  writeFileSync(join(m.state, 'nobus'), '')
  const file = join(m.home, '.config', 'systemd', 'user', 'proxy-gate.service')
  const install = await m.service(['install'], 'linux')
  t.equal(install.code, 1)
  t.ok(existsSync(file))
  t.match(install.stderr, `proxy-gate: ${file} is in place, but there is no systemd user manager to talk to here (systemctl --user daemon-reload failed: Failed to connect to bus: No medium found).`)
  t.match(install.stderr, /In a login session that has one \(a desktop login, or "loginctl enable-linger \$USER" for a server\), run:\n {2}systemctl --user daemon-reload\n {2}systemctl --user enable --now proxy-gate.service\n/)
  const status = await m.service(['status'], 'linux')
  t.equal(status.code, 1)
  t.match(status.stdout, `installed: yes (${file})\nrunning:   unknown (no systemd user manager here (Failed to connect to bus: No medium found))`)
})

t.test('macos: bootstrap into gui/UID; status reads launchctl print; re-install loads nothing twice; uninstall boots it out', async (t) => {
  const m = machine('macos')
  const file = join(m.home, 'Library', 'LaunchAgents', 'io.github.proxy-gate.plist')
  const log = join(m.home, 'Library', 'Logs', 'proxy-gate', 'proxy-gate.log')
  const target = `gui/${String(process.getuid?.())}/io.github.proxy-gate`
  const install = await m.service(['install'], 'macos')
  t.equal(install.code, 0, install.stderr)
  t.ok(existsSync(join(m.home, 'Library', 'Logs', 'proxy-gate')), 'the log folder is made')
  t.same(m.calls(), [['launchctl', 'print', target], ['launchctl', 'bootstrap', `gui/${String(process.getuid?.())}`, file]])
  t.match(readFileSync(file, 'utf8'), `<string>${CLI_PATH}</string>`)
  const status = await m.service(['status'], 'macos')
  t.equal(status.stdout, `installed: yes (${file})\nrunning:   yes (running, pid 4242)\nlog:       ${log}\n`)
  m.calls()
  const again = await m.service(['install'], 'macos')
  t.equal(again.code, 0)
  t.match(again.stdout, 'already installed')
  t.same(m.calls(), [['launchctl', 'print', target]], 'loaded already: nothing to do')
  const uninstall = await m.service(['uninstall'], 'macos')
  t.equal(uninstall.code, 0, uninstall.stderr)
  t.same(m.calls(), [['launchctl', 'print', target], ['launchctl', 'bootout', target]])
  t.notOk(existsSync(file))
})

t.test('windows: schtasks /Create /XML with a UTF-16 file, /Run; status from /Query; uninstall /End and /Delete', async (t) => {
  const m = machine('windows')
  const file = join(m.home, 'AppData', 'Local', 'proxy-gate', 'proxy-gate-task.xml')
  const dry = await m.service(['install', '--dry-run'], 'windows')
  const install = await m.service(['install'], 'windows')
  t.equal(install.code, 0, install.stderr)
  const bytes = readFileSync(file)
  t.same([...bytes.subarray(0, 2)], [0xff, 0xfe], 'a UTF-16LE byte-order mark')
  t.equal(bytes.subarray(2).toString('utf16le'), dry.stdout)
  t.same(m.calls(), [['schtasks', '/Query', '/TN', 'proxy-gate', '/FO', 'CSV', '/NH'], ['schtasks', '/Create', '/XML', file, '/TN', 'proxy-gate'], ['schtasks', '/Run', '/TN', 'proxy-gate']])
  t.ok(existsSync(join(m.home, 'AppData', 'Local', 'proxy-gate', 'logs')), 'the log folder is made (cmd.exe appends to a file there)')
  const status = await m.service(['status'], 'windows')
  t.equal(status.code, 0)
  t.match(status.stdout, /running: {3}yes \(Running\)/)
  m.calls()
  const uninstall = await m.service(['uninstall'], 'windows')
  t.equal(uninstall.code, 0, uninstall.stderr)
  t.same(m.calls(), [['schtasks', '/Query', '/TN', 'proxy-gate', '/FO', 'CSV', '/NH'], ['schtasks', '/End', '/TN', 'proxy-gate'], ['schtasks', '/Delete', '/TN', 'proxy-gate', '/F']])
  t.notOk(existsSync(file))
})

t.test('macos: a replaced file is booted out and bootstrapped again; a tool that fails is named with its answer, exit 1', async (t) => {
  const m = machine('replace')
  const uid = String(process.getuid?.())
  const file = join(m.home, 'Library', 'LaunchAgents', 'io.github.proxy-gate.plist')
  mkdirSync(dirname(file), { recursive: true })
  writeFileSync(file, 'old')
  writeFileSync(join(m.state, 'loaded'), '')
  const res = await m.service(['install', '--force'], 'macos')
  t.equal(res.code, 0, res.stderr)
  t.same(m.calls(), [['launchctl', 'print', `gui/${uid}/io.github.proxy-gate`], ['launchctl', 'bootout', `gui/${uid}/io.github.proxy-gate`], ['launchctl', 'bootstrap', `gui/${uid}`, file]])

  const failing = machine('fails')
  writeFileSync(join(failing.state, 'fail'), '')
  const failed = await failing.service(['install'], 'macos')
  t.equal(failed.code, 1)
  const placed = join(failing.home, 'Library', 'LaunchAgents', 'io.github.proxy-gate.plist')
  t.match(failed.stderr, `proxy-gate: ${placed} is in place, but launchctl bootstrap gui/${uid} '${placed}' failed: Bootstrap failed: 5: Input/output error`)
})

t.test('bad rules are refused before anything is written', async (t) => {
  const m = machine('bad-rules')
  writeFileSync(m.rules, '{"allow": [42]}')
  const res = await m.service(['install'], 'linux')
  t.equal(res.code, 1)
  t.match(res.stderr, `the service would not start with ${m.rules}: fix it first (proxy-gate validate)`)
  t.notOk(existsSync(join(m.home, '.config', 'systemd')))
  t.same(m.calls(), [])
})

t.test('usage: an unknown action or OS, and --dry-run outside install', async (t) => {
  const m = machine('usage')
  const bad = await m.service(['restart'], 'linux')
  t.equal(bad.code, 2)
  t.match(bad.stderr, 'usage: proxy-gate service install|uninstall|status')
  const os = await m.service(['status'], 'bsd')
  t.equal(os.code, 2)
  t.match(os.stderr, '--os must be one of macos, linux, windows')
  const dry = await m.service(['status', '--dry-run'], 'linux')
  t.equal(dry.code, 2)
  t.match(dry.stderr, '--dry-run goes with install')
  const help = await runCli(['service', '--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /^usage: proxy-gate service install\|uninstall\|status \[--rules FILE\] \[--dir DIR\] \[--dry-run\] \[--os macos\|linux\|windows\] \[--force\]\n/)
  t.match((await runCli(['--help'])).stdout, /^ {2}service {4}start proxy-gate at login/m)
})

t.test('run from npx\'s cache: refused, saying how to install for good', async (t) => {
  const m = machine('npx')
  const pkg = join(tempDir('service-npx'), '_npx', '0123abcd', 'node_modules', 'proxy-gate')
  mkdirSync(pkg, { recursive: true })
  cpSync(join(ROOT, 'dist'), join(pkg, 'dist'), { recursive: true })
  for (const f of ['package.json', 'rules.json']) copyFileSync(join(ROOT, f), join(pkg, f))
  symlinkSync(join(ROOT, 'node_modules'), join(pkg, 'node_modules'))
  const res = await runCli(['service', 'install', '--dry-run', '--os', 'linux'], { cwd: m.cwd, env: { HOME: m.home }, command: [process.execPath, join(pkg, 'dist', 'cli.js')] })
  t.equal(res.code, 1)
  t.equal(res.stdout, '')
  t.match(res.stderr, `this proxy-gate runs from npx's cache (${join(pkg, 'dist', 'cli.js')}), which npm clears and replaces: a login service cannot point there. Install it for good with "npm install -g proxy-gate", then run "proxy-gate service install"`)
})

t.test('linux uninstall without a user manager: the unit stays, and it prints what to run', async (t) => {
  const m = machine('nobus-uninstall')
  const file = join(m.home, '.config', 'systemd', 'user', 'proxy-gate.service')
  t.equal((await m.service(['install'], 'linux')).code, 0)
  writeFileSync(join(m.state, 'nobus'), '')
  const res = await m.service(['uninstall'], 'linux')
  t.equal(res.code, 1)
  t.ok(existsSync(file), 'not removed while it may still run')
  t.match(res.stderr, `proxy-gate: could not stop it (${file} is left in place), but there is no systemd user manager to talk to here`)
  t.match(res.stderr, /run:\n {2}systemctl --user disable --now proxy-gate.service\n {2}systemctl --user daemon-reload\n/)
})

t.test('status where the platform tool is missing: installed or not, running unknown, saying why', async (t) => {
  const m = machine('no-tool')
  const res = await runCli(['service', 'status', '--os', 'macos'], { cwd: m.cwd, env: { HOME: m.home, PATH: '/nonexistent' }, command: [process.execPath, CLI_PATH] })
  t.equal(res.code, 1)
  t.equal(res.stdout, `installed: no (no ${join(m.home, 'Library', 'LaunchAgents', 'io.github.proxy-gate.plist')})\nrunning:   unknown (launchctl: spawnSync launchctl ENOENT)\nlog:       ${join(m.home, 'Library', 'Logs', 'proxy-gate', 'proxy-gate.log')}\n`)
})

t.test('node by a name that survives upgrades: the first node on PATH that is this binary, in a folder reached without symlinks', async (t) => {
  const m = machine('stable-node')
  const base = tempDir('service-node')
  // Homebrew's layout: a real bin folder whose node is a symlink to the versioned binary
  const stable = join(base, 'bin')
  mkdirSync(stable)
  symlinkSync(process.execPath, join(stable, 'node'))
  // fnm's per-shell folder: a symlink to an installation, gone when the shell ends
  mkdirSync(join(base, 'installation'))
  symlinkSync(process.execPath, join(base, 'installation', 'node'))
  symlinkSync(join(base, 'installation'), join(base, 'shell'))
  // another node first: not this binary
  const other = join(base, 'other')
  mkdirSync(other)
  writeFileSync(join(other, 'node'), '#!/bin/sh\n', { mode: 0o755 })
  const dryRun = (path: string): Promise<CliResult> => runCli(['service', 'install', '--dry-run', '--os', 'linux'], { cwd: m.cwd, env: { HOME: m.home, PATH: path }, command: [process.execPath, CLI_PATH] })
  const picked = await dryRun([other, join(base, 'shell'), stable, NODE_DIR].join(':'))
  t.equal(picked.code, 0, picked.stderr)
  t.match(picked.stdout, `\nExecStart=${join(stable, 'node')} ${CLI_PATH} start `)
  const none = await dryRun([other, join(base, 'shell')].join(':'))
  t.match(none.stdout, `\nExecStart=${process.execPath} ${CLI_PATH} start `, 'none on PATH: process.execPath')
})
