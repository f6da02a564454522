// The sandbox's CA and secrets, gathered from the rules and the CA folder for `sandbox up`, `run`
// and `compose` (the arguments and Compose entries: lib/wiring/sandbox-secrets.ts). Values are read
// here only to fail `up` early, naming the secret; none is ever returned.
import { statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { writeCaBundle } from '../certs/bundle.js'
import { loadCa } from '../certs/ca.js'
import { rulesWithRequestLimits } from '../policy/rules.js'
import type { Result } from '../policy/target.js'
import type { Config } from '../rules/config.js'
import { secretsKey } from '../secrets/key.js'
import { placeholderLines, readSecretValue, type Env } from '../secrets/values.js'
import { MOUNT } from '../wiring/sandbox.js'
import { secretFileMounts, type ProxyGateSecrets, type WorkloadSecrets } from '../wiring/sandbox-secrets.js'
import { needsCa } from './ca.js'

/**
 * What proxy-gate's container (running as `user`) needs: the CA folder when the rules need it
 * (refused when there is none), or when there is one the container can read (so that a reload may
 * add rules that need it); and the secrets' sources.
 */
export function proxyGateSecrets(config: Config, rulesFile: string, dir: string, user: string | undefined): Result<ProxyGateSecrets> {
  const ca = loadCa(dir)
  const problem = needsCa(config, ca)
  if (problem !== undefined) return { ok: false, error: problem }
  if (config.secrets.length > 0) {
    // the container sees the folder read-only: the key its placeholders come from must exist before
    const key = secretsKey(dir)
    if (!key.ok) return key
  }
  const envNames = [...new Set(config.secrets.filter((s) => s.from.kind === 'env').map((s) => s.from.ref))]
  const files = secretFileMounts(
    dirname(rulesFile),
    MOUNT,
    config.secrets.filter((s) => s.from.kind === 'file').map((s) => s.from.ref),
  )
  const mounted = ca.ok && (opensTunnels(config) || caFiles(dir, false).every((f) => readableBy(f, user ?? IMAGE_USER)))
  return { ok: true, value: { caDir: mounted ? dir : undefined, envNames, files } }
}

/** `up` reads every value where it runs, so that a missing one fails here, naming the secret, and not inside the container. */
export function secretValuesProblem(config: Config, rulesFile: string, env: Env): string | undefined {
  for (const spec of config.secrets) {
    const read = readSecretValue(spec, rulesFile, env)
    if (read.ok) continue
    const where = spec.from.kind === 'env' ? `; the proxy-gate container gets ${spec.from.ref} from the environment "sandbox up" runs in` : ''
    return `${read.error}${where}`
  }
  return undefined
}

/** The image's user (Dockerfile), when `up` does not pick the rules file's owner. */
const IMAGE_USER = '1000:1000'

/** Whether `user` (UID:GID, no other groups) may read the file, by its owner, group and mode. */
function readableBy(path: string, user: string): boolean {
  const [uid, gid] = user.split(':').map(Number)
  const { uid: owner, gid: group, mode } = statSync(path)
  return (mode & (owner === uid ? 0o400 : group === gid ? 0o040 : 0o004)) !== 0
}

/** The CA folder's files proxy-gate reads. */
function caFiles(dir: string, withKey: boolean): string[] {
  return ['ca.crt', 'ca.key', ...(withKey ? ['secrets-key'] : [])].map((f) => join(dir, f))
}

/**
 * Why proxy-gate's container, running as `user` (undefined: the image's), could not read the CA,
 * the key or a secret's file it is given, or undefined: said before anything starts.
 */
export function unreadableProblem(secrets: ProxyGateSecrets, hasSecrets: boolean, user: string | undefined): string | undefined {
  const as = user ?? IMAGE_USER
  const files = [
    ...(secrets.caDir === undefined ? [] : caFiles(secrets.caDir, hasSecrets)),
    ...secrets.files.map((f) => f.host),
  ]
  const unreadable = files.filter((f) => !readableBy(f, as))
  if (unreadable.length === 0) return undefined
  return `the proxy-gate container runs as ${as} (the rules file's owner, or the image's user when root owns it) and could not read ${unreadable.join(', ')}: give that user the files (chown), or keep the rules file, the CA folder and the secret files under one user`
}

/** Whether proxy-gate opens tunnels under these rules: only then is a workload's trust changed. */
function opensTunnels(config: Config): boolean {
  return config.secrets.length > 0 || rulesWithRequestLimits(config.policy).length > 0
}

/** What a workload gets: the placeholders (unless `withPlaceholders` is false) and, when proxy-gate opens tunnels, the CA bundle (written here). */
export function workloadSecrets(config: Config, rulesFile: string, dir: string, env: Env, withPlaceholders: boolean): Result<WorkloadSecrets> {
  if (!opensTunnels(config)) return { ok: true, value: { placeholders: [], bundle: undefined } }
  const ca = loadCa(dir)
  if (!ca.ok) return { ok: false, error: needsCa(config, ca) ?? ca.error }
  const bundle = writeCaBundle(dir, ca.value.certPem)
  if (!bundle.ok) return bundle
  if (!withPlaceholders || config.secrets.length === 0) return { ok: true, value: { placeholders: [], bundle: bundle.value } }
  const lines = placeholderLines(config, dir, rulesFile, env)
  if (!lines.ok) return lines
  // NAME=PLACEHOLDER: a name holds no "="
  const placeholders = lines.value.map((line): [string, string] => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)])
  return { ok: true, value: { placeholders, bundle: bundle.value } }
}
