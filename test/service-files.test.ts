// `proxy-gate service install --dry-run`: the unit, the plist and the task XML each checked by a
// strict outside parser (systemd-analyze verify, Python's plistlib, Python's XML parser plus the
// Task Scheduler schema's required elements), with paths holding spaces and the characters each
// format must escape.
import { execFile } from 'node:child_process'
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { CLI_PATH, runCli } from './helpers/cli.js'
import { tempDir } from './helpers/files.js'

const run = promisify(execFile)
const ROOT = new URL('..', import.meta.url).pathname
const SYSTEMD_ANALYZE = await run('systemd-analyze', ['--version']).then(() => true, () => false)

/** A HOME and a working folder, the rules and CA folder under names with spaces and & < % $. */
function setUp(name: string, rulesName: string): { home: string; cwd: string; rules: string; ca: string } {
  const base = tempDir(`service-${name}`)
  const home = join(base, 'home dir')
  const cwd = join(base, 'work & <stuff>')
  mkdirSync(home)
  mkdirSync(cwd)
  const rules = join(cwd, rulesName)
  copyFileSync(join(ROOT, 'rules.json'), rules)
  return { home, cwd, rules, ca: join(base, 'my certs') }
}

async function dryRun(os: string, s: ReturnType<typeof setUp>): Promise<{ stdout: string; stderr: string }> {
  const res = await runCli(['service', 'install', '--dry-run', '--os', os, '--rules', s.rules, '--dir', s.ca], { cwd: s.cwd, env: { HOME: s.home, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` } })
  if (res.code !== 0) throw new Error(`service install --dry-run --os ${os}: ${String(res.code)} ${res.stderr}`)
  return res
}

function argv(s: ReturnType<typeof setUp>): string[] {
  return [process.execPath, CLI_PATH, 'start', '--rules', s.rules, '--dir', s.ca]
}

async function python(script: string, file: string): Promise<unknown> {
  const { stdout } = await run('python3', ['-c', script, file])
  return JSON.parse(stdout) as unknown
}

t.test('the systemd unit passes systemd-analyze verify, its ExecStart quoting %, $, spaces and quotes', { skip: SYSTEMD_ANALYZE ? false : 'needs systemd-analyze (Debian: systemd)' }, async (t) => {
  const s = setUp('unit', 'rules 100% $HOME "x".json')
  const { stdout, stderr } = await dryRun('linux', s)
  const file = join(s.home, '.config', 'systemd', 'user', 'proxy-gate.service')
  t.equal(stderr, `# would write ${file}\n# would run: systemctl --user daemon-reload\n# would run: systemctl --user enable --now proxy-gate.service\n`)
  const quoted = `"${s.rules.replace('%', () => '%%').replace('$', () => '$$').replaceAll('"', () => '\\"')}"`
  t.match(stdout, `\nExecStart=${process.execPath} ${CLI_PATH} start --rules ${quoted} --dir "${s.ca}"\n`)
  t.match(stdout, `\nWorkingDirectory=${s.cwd}\n`)
  t.match(stdout, /\nRestart=on-failure\n/)
  t.match(stdout, /\nWantedBy=default\.target\n/)
  t.notMatch(stdout, /MemoryDenyWriteExecute|ProtectHome|ProtectSystem/, 'nothing that stops the JIT or hides the rules and CA')

  const runtime = tempDir('service-runtime')
  const verify = async (text: string): Promise<{ code: number; stderr: string }> => {
    const unit = join(tempDir('service-verify'), 'proxy-gate.service')
    writeFileSync(unit, text)
    // --user checks it as the user manager would; it wants a runtime folder, which root lacks here
    return run('systemd-analyze', ['--user', 'verify', '--man=no', unit], { env: { ...process.env, XDG_RUNTIME_DIR: runtime } }).then(
      (r) => ({ code: 0, stderr: r.stderr }),
      (e: unknown) => ({ code: (e as { code: number }).code, stderr: (e as { stderr: string }).stderr }),
    )
  }
  t.same(await verify(stdout), { code: 0, stderr: '' }, 'no error and no warning')
  const broken = await verify(stdout.replace(`--rules ${quoted}`, () => `--rules "${s.rules}`))
  t.match(broken.stderr, /Unbalanced quoting/, 'and the check is live: an unescaped quote is found')
  t.match((await verify(`${stdout}Bogus=1\n`)).stderr, /Unknown key 'Bogus'/)
})

const PLIST_CHECK = `
import json, plistlib, sys
with open(sys.argv[1], 'rb') as f:
    d = plistlib.load(f)
print(json.dumps(d))`

t.test('the LaunchAgent plist loads with plistlib: label, program arguments, RunAtLoad, KeepAlive, logs', async (t) => {
  const s = setUp('plist', 'rules & <b>.json')
  const { stdout, stderr } = await dryRun('macos', s)
  const file = join(s.home, 'Library', 'LaunchAgents', 'io.github.proxy-gate.plist')
  const uid = String(process.getuid?.())
  t.equal(stderr, `# would write ${file}\n# would run: launchctl bootstrap gui/${uid} '${file}'\n`)
  const copy = join(tempDir('service-plist'), 'p.plist')
  writeFileSync(copy, stdout)
  const log = join(s.home, 'Library', 'Logs', 'proxy-gate', 'proxy-gate.log')
  t.same(await python(PLIST_CHECK, copy), {
    Label: 'io.github.proxy-gate',
    ProgramArguments: argv(s),
    WorkingDirectory: s.cwd,
    RunAtLoad: true,
    KeepAlive: true,
    ProcessType: 'Standard',
    StandardOutPath: log,
    StandardErrorPath: log,
  })
})

const TASK_CHECK = `
import json, sys, xml.etree.ElementTree as ET
ns = {'t': 'http://schemas.microsoft.com/windows/2004/02/mit/task'}
root = ET.parse(sys.argv[1]).getroot()
def text(path):
    node = root.find(path, ns)
    return None if node is None else node.text
print(json.dumps({
  'root': root.tag, 'version': root.get('version'),
  'children': [c.tag.split('}')[1] for c in root],
  'command': text('t:Actions/t:Exec/t:Command'),
  'arguments': text('t:Actions/t:Exec/t:Arguments'),
  'workdir': text('t:Actions/t:Exec/t:WorkingDirectory'),
  'triggerUser': text('t:Triggers/t:LogonTrigger/t:UserId'),
  'principalUser': text('t:Principals/t:Principal/t:UserId'),
  'logonType': text('t:Principals/t:Principal/t:LogonType'),
  'timeLimit': text('t:Settings/t:ExecutionTimeLimit'),
  'restart': [text('t:Settings/t:RestartOnFailure/t:Interval'), text('t:Settings/t:RestartOnFailure/t:Count')],
  'actionsContext': root.find('t:Actions', ns).get('Context'),
  'principalId': root.find('t:Principals/t:Principal', ns).get('id'),
}))`

t.test('the task XML parses, with the schema\'s required elements: logon trigger for this user, restart on failure, no time limit', async (t) => {
  const s = setUp('task', 'rules & <b>.json')
  const { stdout, stderr } = await dryRun('windows', s)
  const file = join(s.home, 'AppData', 'Local', 'proxy-gate', 'proxy-gate-task.xml')
  t.equal(stderr, `# would write ${file}\n# would run: schtasks /Create /XML '${file}' /TN proxy-gate\n# would run: schtasks /Run /TN proxy-gate\n`)
  const copy = join(tempDir('service-task'), 'task.xml')
  writeFileSync(copy, stdout)
  const log = join(s.home, 'AppData', 'Local', 'proxy-gate', 'logs', 'proxy-gate.log')
  const line = [...argv(s), '>>'].map((w) => (w === '>>' ? w : `"${w}"`)).join(' ')
  const user = process.env.USERDOMAIN ? `${process.env.USERDOMAIN}\\${process.env.USERNAME ?? ''}` : (process.env.USERNAME ?? (await import('node:os')).userInfo().username)
  t.same(await python(TASK_CHECK, copy), {
    root: '{http://schemas.microsoft.com/windows/2004/02/mit/task}Task',
    version: '1.2',
    children: ['RegistrationInfo', 'Triggers', 'Principals', 'Settings', 'Actions'],
    command: 'C:\\Windows\\System32\\cmd.exe',
    arguments: `/d /s /c "${line} "${log}" 2>&1"`,
    workdir: s.cwd,
    triggerUser: user,
    principalUser: user,
    logonType: 'InteractiveToken',
    timeLimit: 'PT0S',
    restart: ['PT1M', '999'],
    actionsContext: 'Author',
    principalId: 'Author',
  })
})

t.test('a path cmd.exe would misread (%) is refused for Windows, with the reason', async (t) => {
  const s = setUp('task-percent', 'rules 100%.json')
  const res = await runCli(['service', 'install', '--dry-run', '--os', 'windows', '--rules', s.rules], { cwd: s.cwd, env: { HOME: s.home } })
  t.equal(res.code, 1)
  t.equal(res.stdout, '')
  t.match(res.stderr, `cannot write ${s.rules} into the service file: it holds " or %, which cmd.exe would read as quoting or a variable`)
})
