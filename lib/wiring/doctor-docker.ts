// `proxy-gate doctor` on a Docker settings file: does it point at this proxy-gate, for the host
// and for containers, with the bypass Docker Desktop needs? Pure: the caller reads the files.
// Which keys hold what comes from dockerFragment (docker.ts), the same table `docker --write` uses.
import { cidrContains, parseCidr, parseIp } from '../policy/ip.js'
import { dockerFragment, type DockerTarget, type Json, type JsonObject } from './docker.js'
import type { Check } from './doctor-checks.js'

/** This proxy-gate as clients may name it. */
export interface HereAddress {
  /** host:port to show, as `docker --write` would write it */
  readonly display: string
  /** the host names and IPs (lower case, no brackets) that reach it */
  readonly hosts: readonly string[]
  readonly port: number
}

export type FileFact = { readonly kind: 'missing' } | { readonly kind: 'unreadable'; readonly error: string } | { readonly kind: 'json'; readonly value: JsonObject }

/** What a doctor line's fix command carries: ` --rules FILE`, ` --advertise H:P` as given to doctor. */
export interface FixFlags {
  readonly rules: string
  readonly advertise: string
}

type Role = 'proxy' | 'pac' | 'exclude' | 'mode'

interface Key {
  readonly path: readonly string[]
  readonly role: Role
  /** host (Docker Desktop itself, the daemon, the CLI's containers) or containers (Docker Desktop's containers proxy) */
  readonly group: 'host' | 'containers'
}

const SENTINEL = { proxyUrl: 'doctor:proxy', pacUrl: 'doctor:pac', usePac: true, bypass: [{ kind: 'exact' as const, name: 'doctor:exclude' }] }

function roleOf(value: Json): Role | undefined {
  if (value === SENTINEL.proxyUrl) return 'proxy'
  if (value === SENTINEL.pacUrl) return 'pac'
  if (value === 'manual') return 'mode'
  if (value === 'doctor:exclude' || (Array.isArray(value) && value[0] === 'doctor:exclude')) return 'exclude'
  return undefined
}

function keysIn(fragment: JsonObject, prefix: readonly string[] = []): Key[] {
  return Object.entries(fragment).flatMap(([name, value]): Key[] => {
    const path = [...prefix, name]
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return keysIn(value, path)
    const role = roleOf(value)
    return role ? [{ path, role, group: /containers/i.test(path.join('.')) ? 'containers' : 'host' }] : []
  })
}

/** The keys `docker --target T --write` sets, by role. */
function targetKeys(target: DockerTarget): Key[] {
  return keysIn(dockerFragment(target, SENTINEL))
}

function valueAt(obj: JsonObject, path: readonly string[]): Json | undefined {
  let node: Json | undefined = obj
  for (const key of path) node = typeof node === 'object' && node !== null && !Array.isArray(node) ? node[key] : undefined
  return node
}

/** host and port of a proxy setting (`http://h:p`, `h:p`), or undefined when it is not an address. */
function hostPort(value: string): { host: string; port: number } | undefined {
  try {
    const url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`)
    const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port)
    return { host: url.hostname.replace(/^\[|\]$/g, '').toLowerCase(), port }
  } catch {
    return undefined
  }
}

/** Whether a proxy setting (or, `pac`, a PAC URL) names this proxy-gate. */
export function pointsHere(value: string, here: HereAddress, pac: boolean): boolean {
  const at = hostPort(value)
  if (!at || at.port !== here.port || !here.hosts.includes(at.host)) return false
  if (!pac) return true
  const path = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`).pathname
  return path === '/proxy.pac' || path === '/wpad.dat'
}

/** Docker Desktop's lists take `*.example.com`; NO_PROXY lists (CLI, dockerd) `.example.com` and a bare domain covers its subdomains. */
function starStyle(target: DockerTarget): boolean {
  return target === 'settings-store' || target === 'settings' || target === 'admin'
}

function excluded(name: string, entries: readonly string[], star: boolean): boolean {
  const ip = parseIp(name)
  return entries.some((raw) => {
    const e = raw.trim().toLowerCase()
    if (e === '*' || e === name) return true
    if (e.startsWith('*.')) return name.endsWith(e.slice(1))
    if (e.startsWith('.')) return name.endsWith(e)
    if (ip && e.includes('/')) {
      const cidr = parseCidr(e)
      return typeof cidr !== 'string' && cidrContains(cidr, ip)
    }
    return !star && name.endsWith(`.${e}`)
  })
}

/** What Docker Desktop must reach directly: itself, Kubernetes, and every *.docker.internal name. */
function missingBypass(target: DockerTarget, value: Json | undefined): string[] {
  const star = starStyle(target)
  const entries = Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : typeof value === 'string' ? value.split(/[,\s]+/) : []
  const needed: [string, string][] = [
    ['localhost', 'localhost'],
    ['127.0.0.1', '127.0.0.1'],
    ['kubernetes.docker.internal', 'kubernetes.docker.internal'],
    // a name nobody lists on its own: only the wildcard covers it
    ['any-name.docker.internal', star ? '*.docker.internal' : '.docker.internal'],
  ]
  return needed.filter(([name]) => !excluded(name, entries, star)).map(([, spelling]) => spelling)
}

interface GroupState {
  readonly wired: boolean
  readonly problems: string[]
  /** the bypass lacks entries Docker Desktop needs: the rules' "bypass" must change first */
  readonly bypass: boolean
}

function groupState(target: DockerTarget, keys: readonly Key[], file: JsonObject, here: HereAddress): GroupState {
  const problems: string[] = []
  const settings = keys.filter((k) => k.role === 'proxy' || k.role === 'pac').map((k) => ({ key: k, value: valueAt(file, k.path) }))
  const set = settings.filter((s): s is { key: Key; value: string } => typeof s.value === 'string' && s.value !== '')
  for (const s of set) {
    if (!pointsHere(s.value, here, s.key.role === 'pac')) problems.push(`${s.key.path.join('.')} is ${s.value}, not this proxy-gate (${s.key.role === 'pac' ? `http://${here.display}/proxy.pac` : here.display})`)
  }
  if (set.length === 0) return { wired: false, problems, bypass: false }
  const mode = keys.find((k) => k.role === 'mode')
  const modeValue = mode && valueAt(file, mode.path)
  if (mode && modeValue !== 'manual') problems.push(`${mode.path.join('.')} is ${JSON.stringify(modeValue ?? null)}, not "manual": Docker Desktop ignores the proxy values`)
  const exclude = keys.find((k) => k.role === 'exclude')
  const missing = exclude ? missingBypass(target, valueAt(file, exclude.path)) : []
  if (exclude && missing.length > 0) problems.push(`${exclude.path.join('.')} does not keep ${missing.join(', ')} direct`)
  return { wired: true, problems, bypass: missing.length > 0 }
}

function fixCommand(target: DockerTarget, flags: FixFlags): string {
  return `proxy-gate docker --target ${target}${flags.rules}${flags.advertise} --write`
}

/** The doctor line for one Docker settings file. */
export function dockerFileCheck(target: DockerTarget, path: string, fact: FileFact, here: HereAddress, flags: FixFlags): Check {
  const name = `docker ${target}`
  if (fact.kind === 'missing') return { name, status: 'not configured', detail: `no file at ${path}` }
  if (fact.kind === 'unreadable') return { name, status: 'problem', detail: fact.error, fix: `fix the file by hand (or restore ${path}.proxy-gate-backup), then: ${fixCommand(target, flags)}` }
  const keys = targetKeys(target)
  const groups = (['host', 'containers'] as const).filter((g) => keys.some((k) => k.group === g))
  const states = groups.map((g) => ({ group: g, ...groupState(target, keys.filter((k) => k.group === g), fact.value, here) }))
  const problems = states.flatMap((s) => s.problems)
  if (states.every((s) => !s.wired) && problems.length === 0) return { name, status: 'not configured', detail: `${path} sets no proxy`, fix: fixCommand(target, flags) }
  for (const s of states) if (!s.wired) problems.push(`the ${s.group === 'containers' ? 'containers' : 'Docker Desktop'} proxy is not set (${keys.filter((k) => k.group === s.group && k.role === 'proxy').map((k) => k.path.join('.')).join(', ')})`)
  if (problems.length === 0) return { name, status: 'ok', detail: `${path} points at ${here.display}` }
  const fix = states.some((s) => s.bypass) ? `add "localhost", "127.0.0.1" and "*.docker.internal" to "bypass" in the rules, then: ${fixCommand(target, flags)}` : fixCommand(target, flags)
  return { name, status: 'problem', detail: `${path}: ${problems.join('; ')}`, fix }
}
