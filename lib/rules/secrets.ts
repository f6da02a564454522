// The "secrets" section of rules.json: for each secret, where proxy-gate reads its value (its own
// environment or a file) and the hosts the value may go to. Validated once at load; the values
// are read elsewhere (lib/secrets/), and no message here can hold one.
import { entryText, parseRule, type RuleError } from '../policy/rules.js'
import type { SecretHost } from '../policy/secrets.js'

export interface SecretSource {
  readonly kind: 'env' | 'file'
  /** the variable's name, or the file's path as written (relative to the rules file) */
  readonly ref: string
}

export interface SecretSpec {
  readonly name: string
  readonly from: SecretSource
  readonly hosts: readonly SecretHost[]
}

/** A name the workload can hold as an environment variable of the same name. */
const NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/
const ENV = /^[A-Za-z_][A-Za-z0-9_]*$/
const KEYS = ['from', 'hosts']
const SECRET_PORTS = [[443, 443]] as const

type Report = (path: string, value: unknown, message: string) => void

function parseSource(report: Report, path: string, value: unknown): SecretSource | undefined {
  if (typeof value === 'string' && value.startsWith('env:') && ENV.test(value.slice(4))) return { kind: 'env', ref: value.slice(4) }
  if (typeof value === 'string' && value.startsWith('file:') && value.length > 5) return { kind: 'file', ref: value.slice(5) }
  report(path, value, 'must be "env:VARIABLE" (proxy-gate\'s own environment) or "file:PATH" (relative to the rules file)')
  return undefined
}

/** Whether a host entry names its ports (without, a secret's host means 443 only: never cleartext unless asked for). */
function namesPorts(entry: unknown): boolean {
  if (typeof entry === 'string') return /\]:|^[^[:]*:[^:]*$/.test(entry)
  return typeof entry === 'object' && entry !== null && 'ports' in entry
}

function parseHost(report: Report, path: string, entry: unknown, index: number): SecretHost | undefined {
  const extra = typeof entry === 'object' && entry !== null ? Object.keys(entry).find((k) => k !== 'host' && k !== 'ports') : undefined
  if (extra !== undefined) {
    report(path, entry, `unknown key "${extra}" (a secret's host takes only "host" and "ports")`)
    return undefined
  }
  const rule = parseRule(entry, 'allow', index)
  if (!rule.ok) report(path, entry, rule.error)
  else if (rule.value.pattern.kind === 'cidr') report(path, entry, 'a secret goes to host names ("api.example.com", "*.example.com"), not to IP addresses')
  else return { text: rule.value.text, pattern: rule.value.pattern, ports: namesPorts(entry) ? rule.value.ports : SECRET_PORTS }
  return undefined
}

function parseHosts(report: Report, path: string, value: unknown): SecretHost[] {
  if (!Array.isArray(value) || value.length === 0) {
    report(path, value, 'must be a non-empty list of hosts in the allow-rule grammar, like ["api.github.com:443"]')
    return []
  }
  return value.flatMap((entry: unknown, i: number) => parseHost(report, `${path}[${i}]`, entry, i) ?? [])
}

function parseSecret(report: Report, name: string, value: unknown): SecretSpec | undefined {
  const path = `secrets.${name}`
  if (!NAME.test(name)) report(path, name, 'a secret\'s name must be usable as an environment variable: letters, digits and "_", not starting with a digit, at most 64')
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    report(path, value, 'must be { "from": "env:VAR" | "file:PATH", "hosts": [HOSTS] }')
    return undefined
  }
  const obj = value as Record<string, unknown>
  const unknown = Object.keys(obj).filter((key) => !KEYS.includes(key))
  for (const key of unknown) report(`${path}.${key}`, obj[key], `unknown key "${key}" (allowed: ${KEYS.join(', ')})`)
  const from = parseSource(report, `${path}.from`, obj.from)
  const hosts = parseHosts(report, `${path}.hosts`, obj.hosts)
  return from && hosts.length > 0 && NAME.test(name) && unknown.length === 0 ? { name, from, hosts } : undefined
}

/** The "secrets" object; every problem is reported with the secret's name. */
export function parseSecrets(errors: RuleError[], value: unknown): SecretSpec[] {
  if (value === undefined) return []
  const report: Report = (path, v, message) => errors.push({ path, entry: entryText(v), message })
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    report('secrets', value, '"secrets" is { "NAME": { "from": "env:VAR" | "file:PATH", "hosts": [HOSTS] } }')
    return []
  }
  return Object.entries(value as Record<string, unknown>).flatMap(([name, spec]) => parseSecret(report, name, spec) ?? [])
}

/**
 * The secrets' values, read at start and on reload (lib/secrets/values.ts): kept out of JSON,
 * inspect output and string conversion, like the parent proxy's credentials.
 */
export class SecretValues {
  readonly #values: ReadonlyMap<string, string>
  constructor(values: ReadonlyMap<string, string>) {
    this.#values = values
  }
  /** the value of a secret, to put on the wire toward one of its hosts: nowhere else */
  valueOf(name: string): string | undefined {
    return this.#values.get(name)
  }
  toJSON(): string {
    return `[${this.#values.size} secret values]`
  }
  toString(): string {
    return this.toJSON()
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toJSON()
  }
}
