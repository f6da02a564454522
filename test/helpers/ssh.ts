// A real OpenSSH server for the tests of ssh and git over SSH through proxy-gate: its own config,
// host key and client key (made with ssh-keygen in a temporary folder), on port 22 of a stand-in
// address, serving a bare git repository with one commit. Clients get an `ssh` command line that
// trusts exactly this host key and reaches the server through a ProxyCommand.
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { userInfo } from 'node:os'
import { join } from 'node:path'
import { tempDir } from './files.js'

const SSHD = '/usr/sbin/sshd'
const NEEDED = ['ssh', 'ssh-keygen', 'nc', 'git']

function missing(): string[] {
  const onPath = NEEDED.filter((bin) => spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0)
  return existsSync(SSHD) ? onPath : [SSHD, ...onPath]
}

const absent = missing()
/** Why these tests cannot run here (.ci/run installs openssh-server, openssh-client, netcat-openbsd and git), or false. */
export const SSH_SKIP = absent.length === 0 ? false : `needs ${absent.join(', ')} (Debian: openssh-server, netcat-openbsd, git)`

/** The one file in the served repository's commit, and what it says. */
export const REPO_FILE = 'README'
export const REPO_TEXT = 'served over ssh\n'

export interface TestSshd {
  /** the address it listens on, port 22 (and the ports startSshd was given) */
  readonly host: string
  /** the account clients log in as (the test's own: sshd can only log in existing users) */
  readonly user: string
  /** the bare repository's absolute path, for `git clone USER@NAME:PATH` */
  readonly repo: string
  /** a scratch folder for the test (clones go here) */
  readonly dir: string
  /** the options that make ssh log in with the test key and trust only the test server's host key */
  readonly sshOptions: readonly string[]
  /** `ssh`, those options and `-o ProxyCommand=...` (OpenSSH expands %h and %p) */
  sshCommand(proxyCommand: string): string[]
  /** the same as one shell command line, for GIT_SSH_COMMAND */
  gitSshCommand(proxyCommand: string): string
  /** what sshd has written to its log (stderr) so far */
  log(): string
  close(): Promise<void>
}

function run(command: string, args: readonly string[], cwd?: string): void {
  const r = spawnSync(command, args, { cwd, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${String(r.status ?? r.signal)}): ${r.stderr}`)
}

function keygen(file: string): string {
  run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'proxy-gate-test', '-f', file])
  return readFileSync(`${file}.pub`, 'utf8').trim()
}

/** A bare repository with one commit holding REPO_FILE. */
function bareRepo(dir: string): string {
  const repo = join(dir, 'repo.git')
  const work = join(dir, 'seed')
  run('git', ['init', '-q', '--bare', repo])
  run('git', ['init', '-q', work])
  writeFileSync(join(work, REPO_FILE), REPO_TEXT)
  run('git', ['add', REPO_FILE], work)
  run('git', ['-c', 'user.name=test', '-c', 'user.email=test@example.invalid', 'commit', '-q', '-m', 'seed'], work)
  run('git', ['push', '-q', repo, 'HEAD:refs/heads/main'], work)
  run('git', ['symbolic-ref', 'HEAD', 'refs/heads/main'], repo)
  return repo
}

function config(dir: string, host: string, ports: readonly number[], user: string): string {
  const file = join(dir, 'sshd_config')
  const lines = [
    ...ports.map((port) => `ListenAddress ${host}:${port}`),
    `HostKey ${join(dir, 'host_key')}`,
    `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
    `PidFile ${join(dir, 'sshd.pid')}`,
    `AllowUsers ${user}`,
    'PermitRootLogin prohibit-password',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    'StrictModes no',
    'PrintMotd no',
    'LogLevel VERBOSE',
  ]
  writeFileSync(file, `${lines.join('\n')}\n`)
  return file
}

/** Resolves once sshd says it listens; rejects with what it said if it exits first. */
function listening(child: ChildProcessWithoutNullStreams, said: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (!/Server listening on /.test(said())) return
      child.stderr.off('data', check)
      resolve()
    }
    child.stderr.on('data', check)
    child.once('exit', (code) => reject(new Error(`sshd exited (${String(code)}) before listening: ${said()}`)))
  })
}

export const shellQuote = (word: string): string => `'${word.replaceAll("'", `'\\''`)}'`

/** Starts sshd on HOST:22 (a stand-in address of the test namespace) and on any `morePorts` there. */
export async function startSshd(host: string, morePorts: readonly number[] = []): Promise<TestSshd> {
  const dir = tempDir('sshd')
  const user = userInfo().username
  const hostKey = keygen(join(dir, 'host_key'))
  writeFileSync(join(dir, 'authorized_keys'), `${keygen(join(dir, 'client_key'))}\n`)
  // the host key under every name: the client trusts this key and no other, whatever name it dialled
  writeFileSync(join(dir, 'known_hosts'), `* ${hostKey}\n`)
  const repo = bareRepo(dir)
  // sshd's privilege separation folder; Debian's service makes it at boot, a machine without the service running has none
  if (!existsSync('/run/sshd')) mkdirSync('/run/sshd', { mode: 0o755 })
  // through setpriv where it is there: sshd dies with the test process even when tap kills it
  const args = ['-D', '-e', '-f', config(dir, host, [22, ...morePorts], user)]
  const child = existsSync('/usr/bin/setpriv') ? spawn('/usr/bin/setpriv', ['--pdeathsig', 'KILL', SSHD, ...args]) : spawn(SSHD, args)
  let said = ''
  child.stderr.on('data', (d: Buffer) => (said += d.toString()))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  await listening(child, () => said)
  const sshOptions = ['-F', '/dev/null', '-i', join(dir, 'client_key'), '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${join(dir, 'known_hosts')}`, '-o', 'StrictHostKeyChecking=yes']
  const sshCommand = (proxyCommand: string): string[] => ['ssh', ...sshOptions, '-o', `ProxyCommand=${proxyCommand}`]
  return {
    host,
    user,
    repo,
    dir,
    sshOptions,
    sshCommand,
    gitSshCommand: (proxyCommand) => sshCommand(proxyCommand).map(shellQuote).join(' '),
    log: () => said,
    close: async () => {
      child.kill('SIGTERM')
      await exited
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
