// Reading the secrets' values (proxy-gate's environment, or files such as Docker and Kubernetes
// secret mounts) and arming the rules with them: the policies get each secret's placeholder and
// hosts, the values stay in a SecretValues. Errors name the secret, never hold its value.
import { readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import type { Config } from '../rules/config.js'
import { SecretValues, type SecretSpec } from '../rules/secrets.js'
import type { Policy } from '../policy/rules.js'
import type { SecretBinding } from '../policy/secrets.js'
import type { Result } from '../policy/target.js'
import { placeholderFor } from './placeholder.js'
import { secretsKey } from './key.js'

/** A secret file larger than this is a mistake (a whole certificate chain, a log), not a token. */
const MAX_VALUE_BYTES = 64 * 1024

export type Env = Readonly<Record<string, string | undefined>>

function fromFile(path: string): Result<string> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (error) {
    return { ok: false, error: `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}` }
  }
  if (Buffer.byteLength(text) > MAX_VALUE_BYTES) return { ok: false, error: `${path} is larger than ${MAX_VALUE_BYTES / 1024} KiB` }
  return { ok: true, value: text.replace(/\r?\n$/, '') }
}

/** One secret's value, from where its "from" says; undefined is not a value. */
export function readSecretValue(spec: SecretSpec, rulesFile: string, env: Env): Result<string> {
  const read: Result<string> =
    spec.from.kind === 'env'
      ? env[spec.from.ref] === undefined
        ? { ok: false, error: `environment variable ${spec.from.ref} is not set` }
        : { ok: true, value: env[spec.from.ref] as string }
      : fromFile(resolve(dirname(rulesFile), spec.from.ref))
  if (!read.ok) return { ok: false, error: `secret ${spec.name}: ${read.error}` }
  if (read.value === '') return { ok: false, error: `secret ${spec.name}: the value is empty` }
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(read.value)) return { ok: false, error: `secret ${spec.name}: the value holds a line break or another control character, which no header can carry` }
  return read
}

/** The bindings the policy gets: names, placeholders, hosts. */
function bindings(specs: readonly SecretSpec[], key: Buffer, values: SecretValues | undefined): SecretBinding[] {
  return specs.map((spec) => ({ name: spec.name, hosts: spec.hosts, ...placeholderFor(key, spec.name, values?.valueOf(spec.name)) }))
}

/** `NAME=PLACEHOLDER` for each secret (`secrets env`): the values only lend their prefixes, where they can be read. */
export function placeholderLines(config: Config, dir: string, rulesFile: string, env: Env): Result<string[]> {
  const key = secretsKey(dir)
  if (!key.ok) return key
  return {
    ok: true,
    value: config.secrets.map((spec) => {
      const value = readSecretValue(spec, rulesFile, env)
      return `${spec.name}=${placeholderFor(key.value, spec.name, value.ok ? value.value : undefined).placeholder}`
    }),
  }
}

/**
 * The rules with their secrets armed: every value read (a missing one fails, naming the secret),
 * the policies holding the bindings, the values beside them. Rules without secrets come back as they are.
 */
export function armSecrets(config: Config, dir: string, rulesFile: string, env: Env): Result<Config> {
  if (config.secrets.length === 0) return { ok: true, value: config }
  const key = secretsKey(dir)
  if (!key.ok) return key
  const values = new Map<string, string>()
  for (const spec of config.secrets) {
    const value = readSecretValue(spec, rulesFile, env)
    if (!value.ok) return value
    values.set(spec.name, value.value)
  }
  const secretValues = new SecretValues(values)
  const bound = bindings(config.secrets, key.value, secretValues)
  const bind = (policy: Policy): Policy => ({ ...policy, secrets: bound })
  const policy = bind(config.policy)
  const named = new Map([...config.policies.named].map(([name, p]) => [name, bind(p)]))
  return { ok: true, value: { ...config, policy, policies: { ...config.policies, fallback: policy, named }, secretValues } }
}
