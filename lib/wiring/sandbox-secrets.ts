// What the sandbox adds for the local CA and for secrets (lib/cli/sandbox-secrets.ts gathers it):
// proxy-gate's own container gets the CA folder and the secrets' values, by name or by mount, never
// on a command line; a workload gets each secret's placeholder and a CA bundle it trusts, never a
// value. Pure.
import { isAbsolute, posix, resolve } from 'node:path'

/** Where proxy-gate's container sees the host's CA folder (ca.crt, ca.key, secrets-key): its --dir. */
export const CERTS_MOUNT = '/etc/proxy-gate-certs'
/** Where a workload sees the CA bundle (the public roots and proxy-gate's CA). */
export const WORKLOAD_BUNDLE = '/etc/proxy-gate-ca/ca-bundle.pem'
/** The variables TLS clients read a CA bundle from: OpenSSL (and Go), Node, Python requests, curl, git. */
const TRUST_VARIABLES = ['SSL_CERT_FILE', 'NODE_EXTRA_CA_CERTS', 'REQUESTS_CA_BUNDLE', 'CURL_CA_BUNDLE', 'GIT_SSL_CAINFO']

export interface FileMount {
  readonly host: string
  readonly container: string
}

/** What proxy-gate's own container gets. */
export interface ProxyGateSecrets {
  /** the host's CA folder, mounted read-only at CERTS_MOUNT; undefined: there is no CA */
  readonly caDir: string | undefined
  /** the variables `env:` secrets name: passed as `-e VAR`, so the engine reads each value from its own environment */
  readonly envNames: readonly string[]
  /** `file:` secrets outside the rules folder, each mounted read-only where the container resolves its path */
  readonly files: readonly FileMount[]
}

/** What a workload gets. */
export interface WorkloadSecrets {
  /** NAME and placeholder of each secret (none with --no-secrets) */
  readonly placeholders: readonly (readonly [string, string])[]
  /** the CA bundle on the host; undefined: the workload's trust is left as its image has it */
  readonly bundle: string | undefined
}

export const NO_PROXY_GATE_SECRETS: ProxyGateSecrets = { caDir: undefined, envNames: [], files: [] }
export const NO_WORKLOAD_SECRETS: WorkloadSecrets = { placeholders: [], bundle: undefined }

/**
 * The mounts `file:` secrets need: a path is resolved against the rules file's folder, which the
 * container sees at `mount`; a relative path into that folder is already there, any other file is
 * mounted alone at the path the container resolves it to (so the rules stay as they are).
 */
export function secretFileMounts(rulesDir: string, mount: string, refs: readonly string[]): FileMount[] {
  const mounts = refs.flatMap((ref) => {
    const container = posix.resolve(mount, ref)
    if (!isAbsolute(ref) && !posix.relative(mount, container).startsWith('..')) return []
    return [{ host: resolve(rulesDir, ref), container }]
  })
  return [...new Map(mounts.map((m) => [m.container, m])).values()]
}

/** `docker run` arguments for proxy-gate's container: the variables by name, the CA folder and the secret files read-only. */
export function proxyGateSecretArgs(s: ProxyGateSecrets): string[] {
  return [
    ...s.envNames.flatMap((name) => ['-e', name]),
    ...(s.caDir === undefined ? [] : ['-v', `${s.caDir}:${CERTS_MOUNT}:ro`]),
    ...s.files.flatMap((f) => ['-v', `${f.host}:${f.container}:ro`]),
  ]
}

/** The Compose service's volumes for the same. */
export function proxyGateSecretVolumes(s: ProxyGateSecrets): string[] {
  return [...(s.caDir === undefined ? [] : [`${s.caDir}:${CERTS_MOUNT}:ro`]), ...s.files.map((f) => `${f.host}:${f.container}:ro`)]
}

/** `start`'s arguments for the mounted CA folder. */
export function startSecretArgs(s: ProxyGateSecrets): string[] {
  return s.caDir === undefined ? [] : ['--dir', CERTS_MOUNT]
}

/** A workload's variables: each placeholder under its secret's name, and every TLS client pointed at the bundle. */
export function workloadSecretEnvironment(w: WorkloadSecrets): [string, string][] {
  const trust: [string, string][] = w.bundle === undefined ? [] : TRUST_VARIABLES.map((name) => [name, WORKLOAD_BUNDLE])
  return [...w.placeholders.map(([name, placeholder]): [string, string] => [name, placeholder]), ...trust]
}

/** A workload's volumes: the bundle, read-only. */
export function workloadSecretVolumes(w: WorkloadSecrets): string[] {
  return w.bundle === undefined ? [] : [`${w.bundle}:${WORKLOAD_BUNDLE}:ro`]
}
