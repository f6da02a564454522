// A real Docker engine for the sandbox test, inside the loopback-only network namespace that
// test/run.sh made (so no container can reach past this machine), with its state in a temporary
// folder, and a Node base image made from this machine's own node binary (no registry needed).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync, copyFileSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { once } from 'node:events'
import type { Test } from 'tap'

export interface Engine {
  /** the environment that points the docker CLI at this engine */
  readonly env: NodeJS.ProcessEnv
  docker(args: readonly string[]): { status: number | null; stdout: string; stderr: string }
  stop(): Promise<void>
}

const BUSYBOX = '/usr/bin/busybox'

/** Why the engine cannot run here, or false when it can. */
export function engineMissing(): string | false {
  if (process.getuid?.() !== 0) return 'needs root to run dockerd'
  if (process.env.PROXY_GATE_NETNS !== '1') return 'needs the loopback-only network namespace that test/run.sh creates'
  for (const bin of ['dockerd', 'docker', 'containerd', 'runc']) {
    if (spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0) return `needs ${bin} (apt-get install docker.io)`
  }
  return false
}

/** Resolves when dockerd logs that its API listens (it is ready then), rejects if it exits first or takes 30 s. */
function untilReady(daemon: ChildProcess, log: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`dockerd not ready within 30 s: ${log()}`)), 30_000)
    const onData = (): void => {
      if (!log().includes('API listen on')) return
      clearTimeout(timer)
      resolve()
    }
    daemon.stdout?.on('data', onData)
    daemon.stderr?.on('data', onData)
    daemon.once('exit', () => {
      clearTimeout(timer)
      reject(new Error(`dockerd exited: ${log()}`))
    })
  })
}

/**
 * `args`: more dockerd flags (another bridge, --iptables=false for a second engine in the namespace).
 * `netns`: a network namespace (a /proc/PID/ns/net path) to run dockerd in instead of this one.
 */
export async function startEngine(args: readonly string[] = [], netns?: string): Promise<Engine> {
  const dir = mkdtempSync(join(tmpdir(), 'pg-dockerd-'))
  const socket = join(dir, 'docker.sock')
  const env = { ...process.env, DOCKER_HOST: `unix://${socket}`, DOCKER_CLI_HINTS: 'false' }
  const output: Buffer[] = []
  const command = ['dockerd', '--data-root', join(dir, 'root'), '--exec-root', join(dir, 'exec'), '-H', `unix://${socket}`, '--pidfile', join(dir, 'dockerd.pid'), ...args]
  // nsenter enters the namespace and execs dockerd: the child is dockerd itself, SIGTERM reaches it
  const [program = 'dockerd', ...rest] = netns === undefined ? command : ['nsenter', `--net=${netns}`, ...command]
  const daemon = spawn(program, rest, { stdio: ['ignore', 'pipe', 'pipe'] })
  daemon.stdout.on('data', (c: Buffer) => output.push(c))
  daemon.stderr.on('data', (c: Buffer) => output.push(c))
  const log = (): string => Buffer.concat(output).toString('utf8').slice(-4000)
  await untilReady(daemon, log)
  return {
    env,
    docker: (args) => {
      const r = spawnSync('docker', args, { env, encoding: 'utf8' })
      return { status: r.status, stdout: r.stdout, stderr: r.stderr }
    },
    stop: async () => {
      const exit = once(daemon, 'exit')
      daemon.kill('SIGTERM')
      await exit
      spawnSync('umount', ['-R', join(dir, 'root')], { stdio: 'ignore' })
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** The libraries `ldd` names for a binary. */
function libraries(binary: string): string[] {
  const out = spawnSync('ldd', [binary], { encoding: 'utf8' }).stdout
  return [...out.matchAll(/(\/\S+)/g)].map((m) => m[1] ?? '').filter((path) => path !== '' && existsSync(path))
}

/** `docker import`s a root filesystem with only this machine's busybox, its sh and nc linked in PATH. */
export function importBusyboxImage(engine: Pick<Engine, 'env'>, tag: string): void {
  const root = mkdtempSync(join(tmpdir(), 'pg-busybox-image-'))
  try {
    mkdirSync(join(root, 'bin'))
    mkdirSync(join(root, 'etc'))
    copyFileSync(BUSYBOX, join(root, 'bin/busybox'))
    for (const applet of ['sh', 'nc']) symlinkSync('busybox', join(root, 'bin', applet))
    writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n')
    const tar = spawnSync('sh', ['-c', `tar -C '${root}' -c . | docker import -c 'ENV PATH=/bin' - ${tag}`], { env: engine.env, encoding: 'utf8' })
    if (tar.status !== 0) throw new Error(`docker import failed: ${tar.stderr}`)
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
}

/** `docker import`s (or `podman import`s) a root filesystem with this machine's node (and busybox, if installed), as uid 1000 "node". */
export function importNodeImage(engine: Pick<Engine, 'env'>, tag: string, cli = 'docker'): void {
  const root = mkdtempSync(join(tmpdir(), 'pg-node-image-'))
  try {
    for (const file of [process.execPath, ...libraries(process.execPath)]) {
      const to = join(root, file === process.execPath ? '/usr/local/bin/node' : file)
      mkdirSync(dirname(to), { recursive: true })
      copyFileSync(file, to)
    }
    mkdirSync(join(root, 'etc'))
    writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000:node:/home/node:/bin/sh\n')
    writeFileSync(join(root, 'etc/group'), 'root:x:0:\nnode:x:1000:\n')
    mkdirSync(join(root, 'tmp'))
    chmodSync(join(root, 'tmp'), 0o1777)
    if (existsSync(BUSYBOX)) {
      mkdirSync(join(root, 'bin'))
      copyFileSync(BUSYBOX, join(root, 'bin/busybox'))
      symlinkSync('busybox', join(root, 'bin/sh'))
    }
    const tar = spawnSync('sh', ['-c', `tar -C '${root}' -c . | ${cli} import -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - ${tag}`], { env: engine.env, encoding: 'utf8' })
    if (tar.status !== 0) throw new Error(`${cli} import failed: ${tar.stderr}`)
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
}

/** A file for importBinariesImage: its text and mode. */
export interface ImageFile {
  readonly text: string
  readonly mode: number
}

/**
 * `docker import`s a root filesystem with this machine's `binaries` (each at the path it has here,
 * symbolic links followed: Debian's /usr/bin/sh is dash) and the libraries `ldd` names for them,
 * root's account and `files` (by their path in the image).
 */
export function importBinariesImage(engine: Pick<Engine, 'env'>, tag: string, binaries: readonly string[], files: Readonly<Record<string, ImageFile>>): void {
  const root = mkdtempSync(join(tmpdir(), 'pg-binaries-image-'))
  try {
    for (const file of [...binaries, ...binaries.flatMap(libraries)]) {
      mkdirSync(dirname(join(root, file)), { recursive: true })
      copyFileSync(file, join(root, file))
    }
    symlinkSync('usr/bin', join(root, 'bin'))
    mkdirSync(join(root, 'root'), { mode: 0o700 })
    mkdirSync(join(root, 'tmp'))
    chmodSync(join(root, 'tmp'), 0o1777)
    const all: Record<string, ImageFile> = { '/etc/passwd': { text: 'root:x:0:0:root:/root:/bin/sh\n', mode: 0o644 }, '/etc/group': { text: 'root:x:0:\n', mode: 0o644 }, ...files }
    for (const [path, { text, mode }] of Object.entries(all)) {
      mkdirSync(dirname(join(root, path)), { recursive: true })
      writeFileSync(join(root, path), text, { mode })
      chmodSync(join(root, path), mode)
    }
    const tar = spawnSync('sh', ['-c', `tar -C '${root}' -c . | docker import -c 'ENV PATH=/usr/bin:/bin' - ${tag}`], { env: engine.env, encoding: 'utf8' })
    if (tar.status !== 0) throw new Error(`docker import failed: ${tar.stderr}`)
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
}

/** The proxy-gate command line with the engine's DOCKER_HOST, run to its end: exit code and everything it printed. */
export async function engineCli(cliPath: string, engine: Pick<Engine, 'env'>, args: readonly string[]): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, [cliPath, ...args], { env: engine.env })
  const chunks: Buffer[] = []
  child.stdout.on('data', (c: Buffer) => chunks.push(c))
  child.stderr.on('data', (c: Buffer) => chunks.push(c))
  const [code] = (await once(child, 'close')) as [number | null]
  return { code, out: Buffer.concat(chunks).toString('utf8') }
}

function ip(args: string): void {
  const r = spawnSync('sh', ['-c', `ip ${args}`], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`ip ${args}: ${r.stderr}`)
}

/**
 * An engine on a bridge of its own (`bridge`, at `address`/24) and without iptables rules, so that
 * it can run beside another test file's engine in the same namespace; both removed at the test's end.
 */
export async function startBridgedEngine(t: Test, bridge: string, address: string): Promise<Engine> {
  ip(`link add ${bridge} type bridge`)
  t.teardown(() => ip(`link del ${bridge}`))
  ip(`addr add ${address}/24 dev ${bridge}`)
  ip(`link set ${bridge} up`)
  const engine = await startEngine(['--bridge', bridge, '--iptables=false'])
  t.teardown(() => engine.stop())
  return engine
}
