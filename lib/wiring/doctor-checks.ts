// `proxy-gate doctor`'s verdicts: each a pure function from what was found (files read, HTTP
// answers, docker output: gathered by cli/doctor.ts) to one line: ok, problem or not configured,
// what it means, and the command that fixes it.
import { pointsHere, type HereAddress } from './doctor-docker.js'

export type Status = 'ok' | 'problem' | 'not configured'

export interface Check {
  readonly name: string
  readonly status: Status
  readonly detail: string
  readonly fix?: string
}

/** How proxy-gate's /readyz answered at the address the rules say. */
export type RunningFact = { readonly kind: 'ready' } | { readonly kind: 'not ready'; readonly status: number } | { readonly kind: 'unreachable'; readonly error: string }

export function runningCheck(fact: RunningFact, address: string, startCommand: string): Check {
  const name = 'proxy-gate'
  if (fact.kind === 'ready') return { name, status: 'ok', detail: `running at ${address} (/readyz: ready)` }
  if (fact.kind === 'not ready') return { name, status: 'problem', detail: `${address} answers /readyz with ${fact.status}: starting or shutting down`, fix: 'wait a moment and run doctor again' }
  return { name, status: 'problem', detail: `nothing answers at ${address} (${fact.error})`, fix: `${startCommand}   (or keep it running: proxy-gate service install)` }
}

export function rulesCheck(file: string, problems: string | undefined): Check {
  if (problems === undefined) return { name: 'rules', status: 'ok', detail: `${file} is valid` }
  return { name: 'rules', status: 'problem', detail: `${file} has problems: ${problems}`, fix: `proxy-gate validate --rules ${file}` }
}

/** The local CA as the rules need it: only rules that limit methods or paths do. */
export type CaFact = { readonly needed: false } | { readonly needed: true; readonly ok: true; readonly notAfter: Date; readonly cert: string } | { readonly needed: true; readonly ok: false; readonly error: string }

/** Warn this long before the CA expires: every client trusting it must be given the new one. */
const CA_WARN_DAYS = 30
const DAY_MS = 86_400_000

export function caCheck(fact: CaFact, now: number, dirFlag: string): Check {
  const name = 'local CA'
  if (!fact.needed) return { name, status: 'not configured', detail: 'no rule limits methods or paths: the local CA is not needed' }
  if (!fact.ok) return { name, status: 'problem', detail: fact.error, fix: `proxy-gate ca init${dirFlag}` }
  const days = Math.floor((fact.notAfter.getTime() - now) / DAY_MS)
  if (days < CA_WARN_DAYS) return { name, status: 'problem', detail: `${fact.cert} expires in ${days} days (${fact.notAfter.toISOString()})`, fix: `proxy-gate ca init --force${dirFlag}, then trust the new ca.crt where clients check TLS` }
  return { name, status: 'ok', detail: `${fact.cert} valid until ${fact.notAfter.toISOString().slice(0, 10)}` }
}

/** The proxy lines of `docker info`, or why there are none. */
export type DockerInfoFact = { readonly kind: 'unavailable'; readonly why: string } | { readonly kind: 'info'; readonly http: string; readonly https: string; readonly noProxy: string }

/** Docker Desktop's daemon always shows its own proxy, which forwards to what its settings say (checked above). */
const DESKTOP_PROXY = 'http.docker.internal'

export function dockerInfoCheck(fact: DockerInfoFact, here: HereAddress): Check {
  const name = 'docker info'
  if (fact.kind === 'unavailable') return { name, status: 'not configured', detail: fact.why }
  const set = [fact.http, fact.https].filter((v) => v !== '')
  const shown = `HTTP Proxy: ${fact.http || '(none)'}, HTTPS Proxy: ${fact.https || '(none)'}, No Proxy: ${fact.noProxy || '(none)'}`
  if (set.length === 0) return { name, status: 'not configured', detail: `dockerd has no proxy: pulls go out directly (${shown})`, fix: 'proxy-gate docker --target daemon --write (Docker Engine) or --target settings-store (Docker Desktop)' }
  if (set.every((v) => v.includes(DESKTOP_PROXY))) return { name, status: 'ok', detail: `Docker Desktop's own proxy, which forwards as its settings say (${shown})` }
  const elsewhere = set.filter((v) => !pointsHere(v, here, false) && !v.includes(DESKTOP_PROXY))
  if (elsewhere.length > 0) return { name, status: 'problem', detail: `dockerd uses ${elsewhere.join(', ')}, not this proxy-gate (${here.display}) (${shown})`, fix: 'proxy-gate docker --target daemon --write, then restart dockerd' }
  return { name, status: 'ok', detail: shown }
}

/** What became of the end-to-end probe. */
export type ProbeFact =
  | { readonly kind: 'skipped'; readonly why: string; readonly fix?: string }
  /** the container had no HTTP_PROXY/http_proxy */
  | { readonly kind: 'no proxy variable' }
  /** the container's request got no answer from a proxy-gate */
  | { readonly kind: 'failed'; readonly output: string }
  /** a proxy-gate answered; this one's admin API says whether it was this one */
  | { readonly kind: 'answered'; readonly confirmed: { readonly ok: true; readonly client: string } | { readonly ok: false; readonly why: string } }

export function probeCheck(fact: ProbeFact, image: string, here: HereAddress, cliFix: string): Check {
  const name = 'container probe'
  switch (fact.kind) {
    case 'skipped':
      return { name, status: 'not configured', detail: `skipped: ${fact.why}`, ...(fact.fix ? { fix: fact.fix } : {}) }
    case 'no proxy variable':
      return { name, status: 'problem', detail: `a container (${image}) started by this Docker CLI has no HTTP_PROXY: its requests reach proxy-gate only if Docker Desktop intercepts them`, fix: cliFix }
    case 'failed':
      return { name, status: 'problem', detail: `a container's request through its HTTP_PROXY did not reach proxy-gate: ${fact.output}`, fix: `check that ${here.display} is reachable from containers (${cliFix})` }
    case 'answered':
      if (fact.confirmed.ok) return { name, status: 'ok', detail: `a container's request reached this proxy-gate (from ${fact.confirmed.client})` }
      return { name, status: 'problem', detail: `a proxy-gate answered the container, but this one's admin API cannot confirm it: ${fact.confirmed.why}`, fix: 'pass doctor the --admin-listen and --admin-token-file (or --dir) that "proxy-gate start" uses' }
  }
}

export function loginServiceCheck(installed: boolean): Check {
  const name = 'login service'
  if (installed) return { name, status: 'ok', detail: 'proxy-gate starts at login' }
  return { name, status: 'not configured', detail: 'proxy-gate does not start at login: after a reboot Docker comes up and proxy-gate does not', fix: 'proxy-gate service install' }
}

const MARK: Record<Status, string> = { ok: 'ok', problem: 'PROBLEM', 'not configured': '--' }

/** The report as text: a line per check, its fix indented below it. */
export function formatChecks(checks: readonly Check[]): string {
  const width = Math.max(...checks.map((c) => c.name.length))
  return checks
    .map((c) => `${MARK[c.status].padEnd(8)} ${c.name.padEnd(width)}  ${c.detail}${c.fix ? `\n${' '.repeat(9 + width + 2)}fix: ${c.fix}` : ''}`)
    .join('\n')
}

export function hasProblem(checks: readonly Check[]): boolean {
  return checks.some((c) => c.status === 'problem')
}
