// The login service's files, rendered from absolute paths: a systemd user unit (Linux), a launchd
// LaunchAgent plist (macOS) and a Task Scheduler task (Windows). Pure: lib/cli/service.ts writes
// them and runs the platform tools. Each format quotes paths its own way (spaces, %, $, &, <).
import { join } from 'node:path'

export const SERVICE_OSES = ['macos', 'linux', 'windows'] as const
export type ServiceOs = (typeof SERVICE_OSES)[number]

/** launchd label, systemd unit and Task Scheduler task name. */
export const LAUNCHD_LABEL = 'io.github.proxy-gate'
export const UNIT_NAME = 'proxy-gate.service'
export const TASK_NAME = 'proxy-gate'

/** What the service runs: `node CLI start --rules RULES --dir CA_DIR` in `workdir`. */
export interface ServiceSpec {
  readonly node: string
  readonly cli: string
  readonly rules: string
  readonly caDir: string
  readonly workdir: string
  /** the log file (macOS, Windows; systemd's journal on Linux) */
  readonly log: string
  /** Windows: the account whose logon starts the task (DOMAIN\user) */
  readonly user: string
  /** Windows: cmd.exe, which appends the output to the log */
  readonly shell: string
}

/** Where the service file and its log live, from the user's home folder. */
export interface ServicePaths {
  readonly file: string
  readonly log: string
}

export function servicePaths(os: ServiceOs, home: string): ServicePaths {
  if (os === 'macos') return { file: join(home, 'Library', 'LaunchAgents', `${LAUNCHD_LABEL}.plist`), log: join(home, 'Library', 'Logs', 'proxy-gate', 'proxy-gate.log') }
  if (os === 'linux') return { file: join(home, '.config', 'systemd', 'user', UNIT_NAME), log: `journalctl --user -u ${UNIT_NAME}` }
  const local = join(home, 'AppData', 'Local', 'proxy-gate')
  return { file: join(local, 'proxy-gate-task.xml'), log: join(local, 'logs', 'proxy-gate.log') }
}

function argv(spec: ServiceSpec): string[] {
  return [spec.node, spec.cli, 'start', '--rules', spec.rules, '--dir', spec.caDir]
}

/** A path a format cannot carry: control characters anywhere; on Windows also `"` and `%` (cmd.exe expands %NAME%). */
export function unsafePath(os: ServiceOs, path: string): string | undefined {
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(path)) return 'it holds a control character'
  if (os === 'windows' && /["%]/.test(path)) return 'it holds " or %, which cmd.exe would read as quoting or a variable'
  return undefined
}

// systemd: `%` starts a specifier and `$` a variable in ExecStart; in double quotes, \ and " are escaped
function systemdWord(word: string): string {
  const escaped = word.replace(/%/g, '%%').replace(/\$/g, '$$$$')
  return /^[A-Za-z0-9_./:@+,=-]+$/.test(word) ? escaped : `"${escaped.replace(/[\\"]/g, (c) => `\\${c}`)}"`
}

/**
 * The user unit. Its sandboxing is the kind a user manager applies without mount namespaces
 * (prctl and seccomp: no new privileges, socket families, no realtime/SUID/personality), so reading
 * the rules and the CA folder, and writing the admin token there, work as in a terminal.
 * MemoryDenyWriteExecute would stop Node's JIT, so it is not here.
 */
function systemdUnit(spec: ServiceSpec): string {
  return `[Unit]
Description=proxy-gate egress allowlist proxy (proxy-gate service install)
Documentation=https://github.com/proxy-gate/proxy-gate#start-at-login

[Service]
Type=exec
WorkingDirectory=${spec.workdir.replace(/%/g, '%%')}
ExecStart=${argv(spec).map(systemdWord).join(' ')}
Restart=on-failure
RestartSec=2
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
UMask=0077

[Install]
WantedBy=default.target
`
}

function xmlText(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

/** The LaunchAgent: started at login and whenever it exits, its output appended to the log. */
function launchdPlist(spec: ServiceSpec): string {
  const strings = argv(spec).map((a) => `\t\t<string>${xmlText(a)}</string>`).join('\n')
  return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
\t<key>Label</key>
\t<string>${LAUNCHD_LABEL}</string>
\t<key>ProgramArguments</key>
\t<array>
${strings}
\t</array>
\t<key>WorkingDirectory</key>
\t<string>${xmlText(spec.workdir)}</string>
\t<key>RunAtLoad</key>
\t<true/>
\t<key>KeepAlive</key>
\t<true/>
\t<key>ProcessType</key>
\t<string>Standard</string>
\t<key>StandardOutPath</key>
\t<string>${xmlText(spec.log)}</string>
\t<key>StandardErrorPath</key>
\t<string>${xmlText(spec.log)}</string>
</dict>
</plist>
`
}

// the MSVCRT rules Node parses its command line with: backslashes are literal unless they precede a quote
function windowsArg(word: string): string {
  return `"${word.replace(/(\\*)$/, '$1$1')}"`
}

/**
 * The task: at this user's logon, `cmd.exe /d /s /c ""NODE" "CLI" start ... >> "LOG" 2>&1"`
 * (cmd.exe appends the output to the log; /s strips the outer quotes), no time limit, restarted
 * when it fails. Written as UTF-16 with a byte-order mark, the encoding schtasks reads best.
 */
function taskXml(spec: ServiceSpec): string {
  const command = `${argv(spec).map(windowsArg).join(' ')} >> ${windowsArg(spec.log)} 2>&1`
  const user = xmlText(spec.user)
  return `<?xml version="1.0"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Author>${user}</Author>
    <Description>proxy-gate egress allowlist proxy (proxy-gate service install)</Description>
    <URI>\\${TASK_NAME}</URI>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
      <UserId>${user}</UserId>
    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
      <UserId>${user}</UserId>
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <AllowHardTerminate>true</AllowHardTerminate>
    <StartWhenAvailable>true</StartWhenAvailable>
    <AllowStartOnDemand>true</AllowStartOnDemand>
    <Enabled>true</Enabled>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <RestartOnFailure>
      <Interval>PT1M</Interval>
      <Count>999</Count>
    </RestartOnFailure>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>${xmlText(spec.shell)}</Command>
      <Arguments>/d /s /c "${xmlText(command)}"</Arguments>
      <WorkingDirectory>${xmlText(spec.workdir)}</WorkingDirectory>
    </Exec>
  </Actions>
</Task>
`
}

export function renderService(os: ServiceOs, spec: ServiceSpec): string {
  return os === 'macos' ? launchdPlist(spec) : os === 'linux' ? systemdUnit(spec) : taskXml(spec)
}
