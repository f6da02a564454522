// The admin listener: dashboard, live decisions and DNS queries (server-sent events), Prometheus metrics and
// health, on its own port (loopback by default), never on the proxy port that containers reach.
// It answers only requests addressed to its own host names (a browser tricked by DNS rebinding
// sends a foreign Host), and state-changing requests need the admin token and must not come from
// another site. The token is never served: the page gets it from the person (the token file).
import { timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { http } from '../core/builtins.js'
import type { AddressInfo, Socket } from 'node:net'
import type { Activity, DeniedTarget, LiveEntry } from './activity.js'
import type { AllowAnswer, ReloadResult } from './allow.js'
import type { Listen } from '../rules/config.js'
import type { Logger } from '../core/log.js'
import { DASHBOARD_CSS, DASHBOARD_HTML, DASHBOARD_JS } from './dashboard-page.js'
import type { Metrics } from './metrics.js'
import type { OpenView } from '../proxy/runtime.js'
import { formatTarget } from '../policy/target.js'

export interface AdminSources {
  readonly activity: Activity
  readonly metrics: Metrics
  readonly open: () => OpenView
  readonly ready: () => boolean
  readonly mode: () => string
  readonly rulesFile: string
  /** reloads the rules file; resolves with whether the new rules are in force */
  readonly reload: () => ReloadResult
  /** adds a suggested entry to the "allow" of the named policy in the rules file, and reloads */
  readonly allow: (suggestion: string, policy: string) => AllowAnswer
  readonly token: string
  /** where the token is, for the page to tell the person */
  readonly tokenFile: string
  /** where a dropped /events subscriber is said */
  readonly log?: Logger
}

export interface Admin {
  listen(): Promise<AddressInfo>
  close(): Promise<void>
}

const SECURITY_HEADERS = {
  'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-store',
}

const STATIC: Record<string, [string, string]> = {
  '/': ['text/html; charset=utf-8', DASHBOARD_HTML],
  '/dashboard.css': ['text/css; charset=utf-8', DASHBOARD_CSS],
  '/dashboard.js': ['text/javascript; charset=utf-8', DASHBOARD_JS],
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) }).end(body)
}

const text = (res: ServerResponse, status: number, body: string) => send(res, status, 'text/plain; charset=utf-8', `${body}\n`)
const json = (res: ServerResponse, status: number, value: unknown) => send(res, status, 'application/json', JSON.stringify(value))

/** The Host names this listener answers to: loopback names and its own address, with its port. */
const PROBES = new Set(['/healthz', '/readyz'])

function allowedHosts(listen: Listen, port: number): Set<string> {
  const own = listen.host.includes(':') ? `[${listen.host}]` : listen.host
  return new Set(['localhost', '127.0.0.1', '[::1]', own].map((h) => `${h}:${port}`))
}

/** Why a state-changing request is refused before its token is looked at: another site sent it. */
function crossSite(req: IncomingMessage, hosts: ReadonlySet<string>): string | undefined {
  const site = req.headers['sec-fetch-site']
  if (site !== undefined && site !== 'same-origin') return `refused: the request came from another site (Sec-Fetch-Site: ${site})`
  const origin = req.headers.origin
  if (origin !== undefined && !(origin.startsWith('http://') && hosts.has(origin.slice(7).toLowerCase()))) return `refused: the request came from another origin (${origin.slice(0, 200)})`
  return undefined
}

function tokenMatches(req: IncomingMessage, token: string): boolean {
  const header = req.headers.authorization ?? ''
  const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '')
  const expected = Buffer.from(token)
  return given.length === expected.length && timingSafeEqual(given, expected)
}

function state(sources: AdminSources): unknown {
  return {
    mode: sources.mode(),
    counters: sources.activity.counters(),
    denied: sources.activity.topDenied(20),
    openCount: sources.open().size,
    // the list is capped; the count is not
    open: [...sources.open()].slice(0, 200).map((c) => ({ id: c.id, kind: c.kind, target: formatTarget(c.target) })),
    rulesFile: sources.rulesFile,
    tokenFile: sources.tokenFile,
    lastReload: sources.activity.lastReload(),
  }
}

/** Unsent bytes after which an /events subscriber counts as not reading and is dropped (EventSource reconnects). */
const EVENTS_MAX_BUFFERED = 256 * 1024
const EVENTS_PER_ADDRESS = 8
const EVENTS_IN_ALL = 32

/** The open /events streams, counted per client address and in all. */
function eventStreams() {
  const perAddress = new Map<string, number>()
  let all = 0
  return {
    /** the refusal for one more stream from `address`, if it is over a cap */
    refusal(address: string): [number, string] | undefined {
      if ((perAddress.get(address) ?? 0) >= EVENTS_PER_ADDRESS) return [429, `too many live event streams from this address (at most ${EVENTS_PER_ADDRESS}): close a dashboard tab`]
      if (all >= EVENTS_IN_ALL) return [503, `too many live event streams (at most ${EVENTS_IN_ALL} in all): close a dashboard tab`]
      return undefined
    },
    add(address: string): () => void {
      perAddress.set(address, (perAddress.get(address) ?? 0) + 1)
      all++
      return () => {
        const left = (perAddress.get(address) ?? 1) - 1
        if (left > 0) perAddress.set(address, left)
        else perAddress.delete(address)
        all--
      }
    },
  }
}

type EventStreams = ReturnType<typeof eventStreams>

function eventText(entry: LiveEntry): string {
  // activity.ts keeps the events as they came: their `type` is the SSE event name here
  const { type: _type, ...record } = entry.record as LiveEntry['record'] & { readonly type?: string }
  return `event: ${entry.kind}\ndata: ${JSON.stringify(record)}\n\n`
}

/** The last 50 entries, fewer when they are large: a new subscriber starts well under the bound. */
function backlog(recent: readonly LiveEntry[]): string {
  const texts: string[] = []
  let size = 0
  for (const entry of recent.slice(-50).reverse()) {
    const text = eventText(entry)
    size += text.length
    if (size > EVENTS_MAX_BUFFERED / 2) break
    texts.unshift(text)
  }
  return texts.join('')
}

function events(req: IncomingMessage, res: ServerResponse, sources: AdminSources, streams: EventStreams): void {
  const address = req.socket.remoteAddress ?? ''
  const refusal = streams.refusal(address)
  if (refusal) return text(res, refusal[0], refusal[1])
  const remove = streams.add(address)
  res.writeHead(200, { ...SECURITY_HEADERS, 'Content-Type': 'text/event-stream', Connection: 'keep-alive' })
  // a subscriber that does not read would keep every event in memory: past the bound it is dropped
  const write = (chunk: string): void => {
    if (res.destroyed) return
    res.write(chunk)
    if (res.writableLength <= EVENTS_MAX_BUFFERED) return
    sources.log?.warn('events subscriber dropped: it does not read', { client: `${address}:${req.socket.remotePort ?? ''}`, unsent: res.writableLength, limit: EVENTS_MAX_BUFFERED })
    res.destroy()
  }
  write(`: proxy-gate decisions\n\n${backlog(sources.activity.recent())}`)
  const unsubscribe = sources.activity.subscribe((entry) => write(eventText(entry)))
  const keepAlive = setInterval(() => write(': keep-alive\n\n'), 15_000)
  req.socket.on('close', () => {
    clearInterval(keepAlive)
    unsubscribe()
    remove()
  })
}

const MAX_ALLOW_BODY = 4096
const TOKEN_REQUIRED = 'the admin token is required (Authorization: Bearer TOKEN)'

/** The body, or undefined when it is larger than `limit` (the rest is read and dropped). */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let size = 0
    req.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size <= limit) chunks.push(chunk)
    })
    req.on('end', () => resolve(size <= limit ? Buffer.concat(chunks) : undefined))
    req.on('error', () => resolve(undefined))
  })
}

/** What the page asks to allow: a row of the most denied, and the rule it showed for that row. */
interface AllowAsk {
  readonly id: string
  readonly suggestion: string
}

function allowAsk(body: Buffer): AllowAsk | undefined {
  try {
    const value = JSON.parse(body.toString('utf8')) as unknown
    if (typeof value !== 'object' || value === null) return undefined
    const { id, suggestion } = value as { id?: unknown; suggestion?: unknown }
    return typeof id === 'string' && typeof suggestion === 'string' ? { id, suggestion } : undefined
  } catch {
    return undefined
  }
}

const refuse = (res: ServerResponse, status: number, message: string) => json(res, status, { ok: false, message })

/** The row's suggestion is not the rule the page showed (a new denial changed it): 409 with the row as it is now. */
function changed(res: ServerResponse, row: DeniedTarget): void {
  const message =
    row.suggestion === undefined
      ? `no rule can allow ${row.target} now: ${row.detail ?? 'it is denied'}; nothing was written`
      : `the rule suggested for ${row.target} is now ${row.suggestion}, not the one shown: nothing was written; check it and press allow again`
  json(res, 409, { ok: false, message, row })
}

/**
 * POST /allow {"id": ROW, "suggestion": RULE}: adds RULE to the "allow" of the row's policy, only
 * while it is what the row suggests: a row's suggestion changes with each new denial.
 */
async function allow(sources: AdminSources, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase()
  if (type !== 'application/json') return refuse(res, 415, 'the body must be JSON (Content-Type: application/json)')
  const body = Number(req.headers['content-length'] ?? 0) > MAX_ALLOW_BODY ? undefined : await readBody(req, MAX_ALLOW_BODY)
  if (!body) {
    // the body may not have been read: the connection cannot be reused
    res.setHeader('Connection', 'close')
    return refuse(res, 413, `the body is limited to ${MAX_ALLOW_BODY} bytes`)
  }
  const ask = allowAsk(body)
  if (!ask) return refuse(res, 400, 'the body must be {"id": "...", "suggestion": "..."}: a row of the most denied (/api/state) and the rule shown for it')
  const row = sources.activity.denied(ask.id)
  if (!row) return refuse(res, 404, 'that destination is no longer among the most denied: reload the page')
  if (row.suggestion !== ask.suggestion) return changed(res, row)
  const answer = sources.allow(ask.suggestion, row.policy)
  if (answer.body.ok) sources.activity.forgetDenied(ask.id)
  json(res, answer.status, answer.body)
}

function post(sources: AdminSources, hosts: ReadonlySet<string>, path: string, req: IncomingMessage, res: ServerResponse): void {
  const reason = crossSite(req, hosts)
  const authorised = reason === undefined && tokenMatches(req, sources.token)
  if (path === '/allow') {
    if (reason) return refuse(res, 403, reason)
    if (!authorised) return refuse(res, 401, TOKEN_REQUIRED)
    return void allow(sources, req, res).catch((error: unknown) => refuse(res, 500, `allow failed: ${(error as Error).message}`))
  }
  if (reason) return text(res, 403, reason)
  if (!authorised) return text(res, 401, TOKEN_REQUIRED)
  const result = sources.reload()
  json(res, result.ok ? 200 : 422, result)
}

/** GET /api/probe/NONCE, with the admin token: whether `proxy-gate doctor`'s probe NONCE arrived. */
function probe(sources: AdminSources, req: IncomingMessage, res: ServerResponse, nonce: string): void {
  if (!tokenMatches(req, sources.token)) return text(res, 401, TOKEN_REQUIRED)
  const seen = sources.activity.probe(nonce)
  json(res, seen ? 200 : 404, seen ? { seen: true, at: seen.at, client: seen.client } : { seen: false })
}

function route(sources: AdminSources, hosts: ReadonlySet<string>, streams: EventStreams, req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0] ?? '/'
  if (req.method === 'POST' && (path === '/reload' || path === '/allow')) return post(sources, hosts, path, req, res)
  if (req.method !== 'GET' && req.method !== 'HEAD') return text(res, 405, `${req.method ?? ''} is not allowed on ${path}`)
  const file = STATIC[path]
  if (file) return send(res, 200, file[0], file[1])
  if (path === '/healthz') return text(res, 200, 'ok')
  if (path === '/readyz') return sources.ready() ? text(res, 200, 'ready') : text(res, 503, 'not ready')
  if (path === '/api/state') return json(res, 200, state(sources))
  if (path.startsWith('/api/probe/')) return probe(sources, req, res, path.slice('/api/probe/'.length))
  if (path === '/events') return events(req, res, sources, streams)
  if (path === '/metrics') {
    void sources.metrics.render().then(
      ({ text: body, contentType }) => send(res, 200, contentType, body),
      (error: unknown) => text(res, 500, `metrics failed: ${(error as Error).message}`),
    )
    return
  }
  text(res, 404, `${path} is not served here`)
}

/** Connections the admin listener holds at once; each holds at most one unsent response. */
const MAX_CONNECTIONS = 256
/** A connection whose response makes no progress (the client does not read) for this long is closed. */
const STALL_MS = 60_000

export function createAdmin(listen: Listen, sources: AdminSources): Admin {
  let hosts = new Set<string>()
  const streams = eventStreams()
  // connections with a response not yet handed to the kernel
  const answering = new WeakSet<Socket>()
  const server: Server = http.createServer((req, res) => {
    // a request sent before the previous answer is out (HTTP pipelining, which no browser does) would
    // queue its response behind one the client may never read: one at a time, or the connection closes
    if (answering.has(req.socket)) return void req.socket.destroy()
    answering.add(req.socket)
    res.once('finish', () => answering.delete(req.socket))
    // probes (kubelet, HAProxy) name the pod's address or no Host at all; the answer tells a rebinding page nothing
    const probe = PROBES.has((req.url ?? '').split('?')[0] ?? '')
    if (!probe && !hosts.has((req.headers.host ?? '').toLowerCase())) return text(res, 421, 'this admin listener answers only to its own address (Host header)')
    route(sources, hosts, streams, req, res)
  })
  server.maxConnections = MAX_CONNECTIONS
  server.timeout = STALL_MS
  server.on('clientError', (_error, socket) => socket.destroy())
  return {
    listen: () =>
      new Promise((resolve, reject) => {
        server.once('error', reject)
        server.listen(listen.port, listen.host, () => {
          const address = server.address() as AddressInfo
          hosts = allowedHosts(listen, address.port)
          resolve(address)
        })
      }),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}
