// The openssl command line, for checks with a TLS client other than Node's.
import { spawn, spawnSync } from 'node:child_process'

export const OPENSSL_SKIP = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0 ? false : 'needs the openssl command (apt-get install openssl)'

export interface SClient {
  /** 0 after a handshake that succeeded, 1 when it failed */
  readonly code: number | null
  /** stdout and stderr together */
  readonly output: string
}

/**
 * Runs `openssl s_client -brief ARGS` with stdin at its end: s_client leaves as soon as the
 * handshake is over, with 0 when it succeeded and 1 when it failed (never waits for a timeout).
 */
export function sClient(args: readonly string[]): Promise<SClient> {
  return new Promise((resolve, reject) => {
    const child = spawn('openssl', ['s_client', '-brief', ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 })
    let output = ''
    child.stdout.on('data', (d: Buffer) => (output += d.toString()))
    child.stderr.on('data', (d: Buffer) => (output += d.toString()))
    child.once('error', reject)
    child.once('close', (code) => resolve({ code, output }))
  })
}
