// What happens while `start` is still starting: an edit to rules.json made after the rules were
// read is applied once it runs (the watcher starts from the bytes that were loaded, not from a
// later read), and a SIGHUP is a reload, never the end of the process (Node.js dies of a SIGHUP
// it has no listener for). To hold `start` at a known point, tls.upstreamCaFiles names a FIFO:
// start reads it after the rules and before it listens, and waits there until the test writes.
import { execFileSync } from 'node:child_process'
import { closeSync, constants, existsSync, openSync, readdirSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { CLI_PATH, startCli, type CliLine, type RunningCli } from './helpers/cli.js'
import { rulesFile, tempDir, writeJson } from './helpers/files.js'
import { rawExchange, selfSigned, startHttpUpstream, statusOf, type Upstream } from './helpers/net.js'

/**
 * dist/cli.js without tap's NODE_OPTIONS (which tap puts back into the environment of every
 * process a test spawns: env unsets it): the code tap loads into child processes catches SIGHUP
 * itself, which would hide whether proxy-gate does. setpriv: killed when the test process dies.
 */
const WITHOUT_TAP: readonly [string, ...string[]] = ['/usr/bin/env', '-u', 'NODE_OPTIONS', ...(existsSync('/usr/bin/setpriv') ? ['/usr/bin/setpriv', '--pdeathsig', 'KILL'] : []), process.execPath, CLI_PATH]

/** The write end of the FIFO, once start has opened it to read (ENXIO until then). */
async function whenReading(fifo: string): Promise<number> {
  for (;;) {
    try {
      return openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENXIO') throw error
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** The process started with `--rules FILE` (a fresh temporary path: only the one this test started). */
function pidOf(file: string): number {
  const pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name))
  const found = pids.find((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(file)
    } catch {
      return false // gone meanwhile
    }
  })
  if (found === undefined) throw new Error(`no process has --rules ${file}`)
  return Number(found)
}

interface Held {
  readonly a: Upstream
  readonly b: Upstream
  readonly rules: string
  /** SIGHUP to the starting process */
  readonly hangUp: () => void
  /** lets start go on past the FIFO; resolves once it listens */
  readonly release: () => Promise<RunningCli>
}

/** `start` with rules allowing upstream `a`, held while it reads the CA file (after the rules). */
async function held(t: Test): Promise<Held> {
  const a = await startHttpUpstream()
  const b = await startHttpUpstream()
  const dir = tempDir('start-races')
  const fifo = join(dir, 'ca.fifo')
  execFileSync('mkfifo', [fifo])
  const rules = writeJson(dir, 'rules.json', { allow: [`127.0.0.1:${a.port}`], tls: { upstreamCaFiles: ['ca.fifo'] } })
  const args = ['start', '--log-format', 'json', '--rules', rules, '--listen', '127.0.0.1:0', '--admin-listen', 'off']
  const starting = startCli(args, { command: WITHOUT_TAP })
  const fd = await Promise.race([whenReading(fifo), starting.then(() => Promise.reject(new Error('start listened without reading the CA file')))])
  let child: RunningCli | undefined
  t.teardown(async () => {
    child?.child.kill('SIGKILL')
    await Promise.all([a.close(), b.close()])
  })
  return {
    a,
    b,
    rules,
    hangUp: () => process.kill(pidOf(rules), 'SIGHUP'),
    release: async () => {
      writeSync(fd, selfSigned(['ca.test']).cert)
      closeSync(fd)
      child = await starting
      return child
    },
  }
}

/** Replaces the rules the way editors do: a new file renamed over the old one. */
function edit(file: string, rules: unknown): void {
  writeFileSync(`${file}.tmp`, JSON.stringify(rules))
  renameSync(`${file}.tmp`, file)
}

const get = (cli: RunningCli, port: number) => rawExchange(cli.port, `GET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`).then((r) => statusOf(r.text))

/** The line, or a failure after `ms` (what the old code never logged would hang the test). */
function within(cli: RunningCli, match: (l: CliLine) => boolean, what: string, ms = 10_000): Promise<CliLine> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`never logged: ${what}`)), ms)
    void cli.waitFor(match).then((line) => {
      clearTimeout(timer)
      resolve(line)
    })
  })
}

t.test('an edit made while start starts, after the rules were read, is applied', async (t) => {
  const { a, b, rules, release } = await held(t)
  edit(rules, { allow: [`127.0.0.1:${b.port}`] })
  const cli = await release()
  t.match(cli.lines.find((l) => l.message === 'listening'), { allow: 1 }, 'it started on the rules it had read')
  t.match(await within(cli, (l) => l.message === 'reloaded', 'the reload of the edit'), { trigger: 'file changed' })
  t.equal(await get(cli, b.port), 200, 'the edit is in force')
  t.equal(await get(cli, a.port), 403)
  t.equal(await cli.stop(), 0)
})

t.test('a SIGHUP before start listens is a reload once it does, not the end of the process', async (t) => {
  const { a, b, rules, hangUp, release } = await held(t)
  hangUp()
  edit(rules, { allow: [`127.0.0.1:${b.port}`] })
  const cli = await release()
  await within(cli, (l) => l.message === 'reloaded' && l.trigger === 'SIGHUP', 'the reload of the SIGHUP')
  t.equal(await get(cli, b.port), 200, 'the rules the SIGHUP found are in force')
  t.equal(await get(cli, a.port), 403)
  t.equal(await cli.stop(), 0)
})

t.test('with the options before the command, SIGHUP is still a reload once start listens', async (t) => {
  const file = rulesFile({ allow: [] })
  const cli = await startCli(['--rules', file, 'start', '--log-format', 'json', '--listen', '127.0.0.1:0', '--admin-listen', 'off'], { command: WITHOUT_TAP })
  t.teardown(() => void cli.child.kill('SIGKILL'))
  cli.child.kill('SIGHUP')
  t.match(await within(cli, (l) => l.message === 'reloaded' && l.trigger === 'SIGHUP', 'the reload of the SIGHUP'), { allow: 0 })
  t.equal(await cli.stop(), 0)
})
