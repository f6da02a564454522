// Podman for the sandbox test. Podman has no daemon: every `podman` call does its own work in the
// network namespace it runs in, here the loopback-only one test/run.sh made, so its bridges, veths
// and firewall rules stay there. Its storage and network definitions go to a temporary folder
// (CONTAINERS_STORAGE_CONF, CONTAINERS_CONF), with ulimits this machine's hard limits allow
// (without them every `podman run` fails setting RLIMIT_NOFILE/NPROC).
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface Podman {
  /** the environment that points podman (and proxy-gate's --engine podman) at this storage */
  readonly env: NodeJS.ProcessEnv
  podman(args: readonly string[]): { status: number | null; stdout: string; stderr: string }
  /** removes every container, network and image it made, then its folder */
  stop(): void
}

/** Why Podman cannot run here, or false when it can. */
export function podmanMissing(): string | false {
  if (process.getuid?.() !== 0) return 'needs root for rootful Podman'
  if (process.env.PROXY_GATE_NETNS !== '1') return 'needs the loopback-only network namespace that test/run.sh creates'
  for (const bin of ['podman', 'ip']) {
    if (spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0) return `needs ${bin} (apt-get install podman)`
  }
  return false
}

/** Mount points inside `dir`, deepest first: the overlay driver bind-mounts its folder onto itself, and a reset leaves that. */
function mountsBelow(dir: string): string[] {
  const points = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((point) => point.startsWith(`${dir}/`))
  return points.sort((a, b) => b.length - a.length)
}

export function startPodman(): Podman {
  const dir = mkdtempSync(join(tmpdir(), 'pg-podman-'))
  writeFileSync(join(dir, 'storage.conf'), `[storage]\ndriver = "overlay"\ngraphroot = "${dir}/root"\nrunroot = "${dir}/run"\n`)
  writeFileSync(
    join(dir, 'containers.conf'),
    `[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n[network]\nnetwork_backend = "netavark"\nnetwork_config_dir = "${dir}/networks"\n`,
  )
  const env = { ...process.env, CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf'), CONTAINERS_CONF: join(dir, 'containers.conf') }
  const podman = (args: readonly string[]): { status: number | null; stdout: string; stderr: string } => {
    const r = spawnSync('podman', args, { env, encoding: 'utf8' })
    return { status: r.status, stdout: r.stdout, stderr: r.stderr }
  }
  return {
    env,
    podman,
    stop: () => {
      podman(['system', 'reset', '--force'])
      for (const mount of mountsBelow(dir)) spawnSync('umount', ['-l', mount], { stdio: 'ignore' })
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/**
 * Rootful Podman keeps machine-wide state whatever its configuration says (the IP allocation
 * database under /run/containers, a blob cache under /var/lib/containers): CI runs the suite on three
 * Node lines at once, so each Podman test holds this lock (flock) while it uses the engine. The lock
 * goes with the flock process, which ends when this process's end of its stdin closes.
 */
export async function holdPodmanLock(): Promise<() => void> {
  const child = spawn('flock', ['--exclusive', '/tmp/proxy-gate-podman-tests.lock', 'sh', '-c', 'echo locked; exec cat'], { stdio: ['pipe', 'pipe', 'ignore'] })
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => (d.toString().includes('locked') ? resolve() : undefined))
    child.once('exit', (code) => reject(new Error(`flock exited ${String(code)}`)))
  })
  return () => void child.stdin.end()
}
