// Which engine the sandbox's CLI really drives: its own `version` says (a `docker` may be Podman,
// a Docker CLI may talk to Podman's API); lib/wiring/engine.ts reads the answer.
import { spawnSync } from 'node:child_process'
import type { Result } from '../policy/target.js'
import { identifyEngine, VERSION_ARGS, type EngineIdentity } from '../wiring/engine.js'

/** Podman prints this on stderr where there is no syslog: it says nothing about the engine. */
const NOISE = /failed to connect to syslog/

export function detectEngine(cli: string): Result<EngineIdentity> {
  const result = spawnSync(cli, VERSION_ARGS, { encoding: 'utf8', timeout: 30_000 })
  if (result.error) return { ok: false, error: `cannot run ${cli}: ${result.error.message}` }
  const found = identifyEngine(cli, result.stdout)
  if (found.ok) return found
  const said = result.stderr.split('\n').filter((line) => line.trim() !== '' && !NOISE.test(line)).slice(-2).join(' ')
  return said ? { ok: false, error: `${found.error} (${said.trim()})` } : found
}
