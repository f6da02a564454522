// Debian's HAProxy as the load balancer in front of proxy-gate instances: TCP mode, health checks
// on each instance's /readyz, short timings so a test sees state changes within ~100 ms.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'
import { join } from 'node:path'
import { tempDir } from './files.js'

const HAPROXY = '/usr/sbin/haproxy'

/** false when HAProxy is installed, else why a test needs it. */
export const HAPROXY_SKIP = existsSync(HAPROXY) ? false : `needs ${HAPROXY} (apt-get install haproxy)`

export interface Backend {
  /** where it takes traffic */
  readonly port: number
  /** where /readyz answers (the admin listener) */
  readonly checkPort: number
}

export interface Haproxy {
  /** the TCP frontend on 127.0.0.1 */
  readonly port: number
  /** resolves once HAProxy has logged that backend `index` is UP (or DOWN) `count` times in all */
  waitFor(index: number, state: 'UP' | 'DOWN', count?: number): Promise<void>
  close(): Promise<void>
}

function config(port: number, backends: readonly Backend[]): string {
  const servers = backends.map((b, i) => `  server s${i} 127.0.0.1:${b.port} check port ${b.checkPort} inter 100ms fall 1 rise 1`)
  return [
    'global',
    '  maxconn 1000',
    'defaults',
    '  mode tcp',
    '  timeout connect 1s',
    '  timeout client 10s',
    '  timeout server 10s',
    '  timeout check 500ms',
    '  retries 3',
    '  option redispatch 1',
    'frontend in',
    `  bind 127.0.0.1:${port}`,
    '  default_backend gates',
    'backend gates',
    '  balance roundrobin',
    '  option httpchk GET /readyz',
    '  http-check expect status 200',
    ...servers,
    '',
  ].join('\n')
}

/**
 * A free loopback port below the ephemeral range, for a listener that must come back on the same
 * port after a restart: a port from port 0 could meanwhile become the local end of some outgoing
 * connection, and the restart would fail with EADDRINUSE.
 */
export async function stablePort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    const server = createServer()
    const free = await new Promise<boolean>((resolve) => server.once('error', () => resolve(false)).listen(port, '127.0.0.1', () => resolve(true)))
    if (!free) continue
    await new Promise((resolve) => server.close(resolve))
    return port
  }
}

/** HAProxy logs nothing once it listens: connect until the frontend accepts (or HAProxy exits). */
async function accepting(port: number, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 250 && child.exitCode === null; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1')
      socket.once('connect', () => resolve(true)).once('error', () => resolve(false))
      socket.once('connect', () => socket.destroy())
    })
    if (ok) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error('haproxy did not start listening')
}

/** Runs HAProxy in the foreground on `port` in front of `backends` and resolves once it has started. */
export async function startHaproxy(port: number, backends: readonly Backend[]): Promise<Haproxy> {
  const file = join(tempDir('haproxy'), 'haproxy.cfg')
  writeFileSync(file, config(port, backends))
  const child = spawn(HAPROXY, ['-db', '-f', file], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  const waiters: Array<() => void> = []
  child.stderr.on('data', (d: Buffer) => {
    log += d.toString()
    for (const w of [...waiters]) w()
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  void exited.then(() => {
    for (const w of [...waiters]) w()
  })
  const until = (holds: () => boolean): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (child.exitCode !== null) reject(new Error(`haproxy exited: ${log}`))
        if (!holds()) return
        waiters.splice(waiters.indexOf(check), 1)
        resolve()
      }
      waiters.push(check)
      check()
    })
  const seen = (index: number, state: string): number => log.split('\n').filter((l) => l.includes(`Server gates/s${index} is ${state}`)).length
  await accepting(port, child)
  return {
    port,
    waitFor: (index, state, count = 1) => until(() => seen(index, state) >= count),
    close: async () => {
      child.kill('SIGTERM')
      await exited
    },
  }
}
