// The command line as a user runs it: dist/cli.js in its own process, once (exit code and
// output) or long-running (`start`, `learn`) with its JSON log lines read as they come.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'

/** The built command line, dist/cli.js. */
export const CLI_PATH = new URL('../../dist/cli.js', import.meta.url).pathname

/** What a one-shot run of the command line left behind. */
export interface CliResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Where and how proxy-gate is spawned. */
export interface SpawnOptions {
  /** variables added to the inherited environment */
  readonly env?: Readonly<Record<string, string>>
  /** working directory (default: this process's) */
  readonly cwd?: string
  /** the program and its first arguments (default: node dist/cli.js) */
  readonly command?: readonly [string, ...string[]]
}

/** Options for runCli. */
export interface RunOptions extends SpawnOptions {
  /** written to stdin, which is then closed */
  readonly input?: string
}

/**
 * Through setpriv --pdeathsig where it is there (util-linux): proxy-gate is killed when the test
 * process dies. tap kills a file that times out with SIGKILL, skipping its teardowns, and the
 * proxy-gate it started would outlive the suite. setpriv execs node: the PID stays the same.
 */
const DEFAULT_COMMAND: readonly [string, ...string[]] = existsSync('/usr/bin/setpriv') ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL', process.execPath, CLI_PATH] : [process.execPath, CLI_PATH]

function spawnCli(args: readonly string[], options: SpawnOptions): ChildProcessWithoutNullStreams {
  const [program, ...first] = options.command ?? DEFAULT_COMMAND
  return spawn(program, [...first, ...args], { cwd: options.cwd, env: { ...process.env, ...options.env } })
}

/** Runs `node dist/cli.js ARGS` to its end and collects its exit code, stdout and stderr. */
export function runCli(args: readonly string[], options: RunOptions = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawnCli(args, options)
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    if (options.input !== undefined) child.stdin.end(options.input)
  })
}

/** One JSON log line of a running proxy-gate. */
export type CliLine = Record<string, unknown>

/** A long-running proxy-gate process that has logged `listening`. */
export interface RunningCli {
  readonly child: ChildProcessWithoutNullStreams
  /** the `url` of its `listening` line */
  readonly url: string
  /** the port of that url */
  readonly port: number
  /** every JSON line on stdout so far, in order */
  readonly lines: CliLine[]
  /** everything on stderr so far */
  stderr(): string
  /** resolves with the first line (already logged or future) that matches */
  waitFor(match: (l: CliLine) => boolean): Promise<CliLine>
  /** resolves with the exit code */
  readonly exited: Promise<number | null>
  /** SIGTERM, then the exit code */
  stop(): Promise<number | null>
}

/** Spawns `node dist/cli.js ARGS` (which must log JSON) and resolves once it logs `listening`. */
export async function startCli(args: readonly string[], options: SpawnOptions = {}): Promise<RunningCli> {
  const child = spawnCli(args, options)
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const lines: CliLine[] = []
  const waiters: Array<[(l: CliLine) => boolean, (l: CliLine) => void]> = []
  createInterface({ input: child.stdout }).on('line', (text) => {
    const line = JSON.parse(text) as CliLine
    lines.push(line)
    for (const w of [...waiters]) {
      if (!w[0](line)) continue
      waiters.splice(waiters.indexOf(w), 1)
      w[1](line)
    }
  })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const waitFor = (match: (l: CliLine) => boolean): Promise<CliLine> => {
    const found = lines.find(match)
    return found ? Promise.resolve(found) : new Promise((resolve) => waiters.push([match, resolve]))
  }
  const listening = await Promise.race([waitFor((l) => l.message === 'listening'), exited.then(() => undefined)])
  if (!listening) throw new Error(`proxy-gate exited before listening: ${stderr}`)
  const url = String(listening.url)
  return {
    child,
    url,
    port: Number(/:(\d+)$/.exec(url)?.[1]),
    lines,
    stderr: () => stderr,
    waitFor,
    exited,
    stop: () => {
      child.kill('SIGTERM')
      return exited
    },
  }
}

/** proxy-gate running on a pseudo-terminal, as a person at a terminal runs it. */
export interface TerminalCli {
  /** everything it has written to the terminal so far */
  output(): string
  /** resolves with the output once it matches (rejects if proxy-gate exits first) */
  waitFor(match: RegExp): Promise<string>
  /** Ctrl-C typed at the terminal, then the exit code */
  interrupt(): Promise<number | null>
  /** for teardown: kills `script` and proxy-gate if they still run (a failed test must not leave them) */
  kill(): void
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${String(pid)}/task/${String(pid)}/children`, 'utf8').split(' ').filter(Boolean).map(Number)
  } catch {
    return []
  }
}

function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`
}

/**
 * Runs `node dist/cli.js ARGS` under util-linux `script`, which gives it a pseudo-terminal as
 * stdin and stdout. `env` is its whole environment apart from PATH (so colour variables are unset
 * unless given).
 */
export function startCliOnTerminal(args: readonly string[], env: Readonly<Record<string, string>>): TerminalCli {
  // exec: the shell that `script` starts would take Ctrl-C's SIGINT as its own and exit 130
  const command = `exec ${[process.execPath, CLI_PATH, ...args].map(shellQuote).join(' ')}`
  const child = spawn('script', ['-qfec', command, '/dev/null'], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } })
  let running = true
  let output = ''
  const waiters = new Set<() => void>()
  child.stdout.on('data', (d: Buffer) => {
    output += d.toString()
    for (const w of [...waiters]) w()
  })
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code) => {
      running = false
      resolve(code)
    }),
  )
  const waitFor = (match: RegExp): Promise<string> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (!match.test(output)) return
        waiters.delete(check)
        resolve(output)
      }
      waiters.add(check)
      check()
      void exited.then(() => waiters.has(check) && reject(new Error(`proxy-gate exited before printing ${String(match)}:\n${output}`)))
    })
  return {
    output: () => output,
    waitFor,
    interrupt: () => {
      child.stdin.write('\x03')
      return exited
    },
    kill: () => {
      if (!running || child.pid === undefined) return
      // proxy-gate runs in the terminal's own session: killing `script` alone would hang up the
      // terminal, which proxy-gate takes as SIGHUP (reload) and outlives
      for (const pid of childrenOf(child.pid)) process.kill(pid, 'SIGKILL')
      child.kill('SIGKILL')
    },
  }
}
