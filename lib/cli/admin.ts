// `start`'s observability: metrics and dashboard state fed by the proxy's events, the admin
// listener, and its token file (created once, mode 0600).
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { createActivity, type Activity } from '../observe/activity.js'
import { createAdmin, type Admin } from '../observe/admin.js'
import { allowEntry, type ReloadResult } from '../observe/allow.js'
import { parseListen, type Listen } from '../rules/config.js'
import { isLoopback } from './common.js'
import type { Logger } from '../core/log.js'
import { createMetrics, type Metrics } from '../observe/metrics.js'
import type { OpenView, ProxyEvent } from '../proxy/runtime.js'
import type { Proxy } from '../proxy/server.js'
import type { Result } from '../policy/target.js'
import type { JsonObject } from '../wiring/docker.js'

export interface Watchers {
  readonly activity: Activity
  readonly metrics: Metrics
  /** ProxyOptions.observe */
  observe(event: ProxyEvent): void
  /** the proxy whose open connections the metrics count */
  watch(proxy: Proxy): void
}

export function createWatchers(): Watchers {
  let open: () => OpenView = () => new Set()
  const activity = createActivity()
  const metrics = createMetrics(() => open())
  return {
    activity,
    metrics,
    observe(event) {
      metrics.observe(event)
      activity.observe(event)
    },
    watch(proxy) {
      open = () => proxy.open
    },
  }
}

/** Reads the admin token, creating it (random, mode 0600) on first use. */
function adminToken(path: string): Result<string> {
  try {
    mkdirSync(dirname(path), { recursive: true })
    writeFileSync(path, `${randomBytes(32).toString('base64url')}\n`, { flag: 'wx', mode: 0o600 })
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') return { ok: false, error: `cannot create ${path}: ${(error as Error).message}` }
  }
  if ((statSync(path).mode & 0o077) !== 0) return { ok: false, error: `${path} can be read by other users: chmod 600 it` }
  const token = readFileSync(path, 'utf8').trim()
  return token.length >= 16 ? { ok: true, value: token } : { ok: false, error: `${path} holds no usable token (delete it to make a new one)` }
}

/** The admin listener as checked before anything listens: its address and token. */
export interface AdminPlan {
  readonly listen: Listen
  readonly token: string
  readonly tokenFile: string
}

/** Checks --admin-listen and the token file (undefined: "off"); `start` does this before the proxy listens. */
export function planAdmin(listenFlag: string, insecureOpen: boolean, tokenFile: string): Result<AdminPlan | undefined> {
  if (listenFlag === 'off') return { ok: true, value: undefined }
  const listen = parseListen(listenFlag)
  if (!listen.ok) return { ok: false, error: `--admin-listen: ${listen.error}` }
  if (!isLoopback(listen.value.host) && !insecureOpen) {
    return { ok: false, error: `the admin listener shows traffic; listening on ${listen.value.host} needs --insecure-open` }
  }
  const token = adminToken(tokenFile)
  return token.ok ? { ok: true, value: { listen: listen.value, token: token.value, tokenFile } } : token
}

export interface AdminStart {
  readonly plan: AdminPlan | undefined
  readonly rulesFile: string
  /** the rules that ship in the package, which the dashboard's Allow does not edit */
  readonly packaged: boolean
  readonly proxy: Proxy
  readonly watchers: Watchers
  readonly mode: () => string
  readonly reload: () => ReloadResult
  /** what a reload would refuse in a rules document */
  readonly problems: (document: JsonObject) => readonly string[]
  readonly log: Logger
}

/** Starts the admin listener as planned (none when --admin-listen is "off"). */
export async function startAdmin(options: AdminStart): Promise<Admin | undefined> {
  const { plan } = options
  if (!plan) return undefined
  const { watchers, proxy, rulesFile } = options
  const rules = { file: rulesFile, packaged: options.packaged, problems: options.problems, reload: options.reload }
  const admin = createAdmin(plan.listen, {
    activity: watchers.activity,
    metrics: watchers.metrics,
    open: () => proxy.open,
    ready: () => proxy.ready(),
    mode: options.mode,
    rulesFile,
    reload: options.reload,
    allow: (suggestion, policy) => {
      const answer = allowEntry(rules, suggestion, policy)
      options.log.info('allow from the dashboard', { rules: rulesFile, entry: suggestion, policy, result: answer.body.message })
      return answer
    },
    token: plan.token,
    tokenFile: plan.tokenFile,
    log: options.log,
  })
  try {
    const address = await admin.listen()
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
    options.log.info('admin listening', { url: `http://${host}:${address.port}/`, metrics: `http://${host}:${address.port}/metrics`, tokenFile: plan.tokenFile })
    return admin
  } catch (error) {
    // the proxy matters more than its dashboard: run without it rather than not at all
    const { host, port } = plan.listen
    options.log.warn('admin listener not started: the dashboard and /metrics are off', { listen: `${host.includes(':') ? `[${host}]` : host}:${port}`, error: (error as Error).message })
    return undefined
  }
}
