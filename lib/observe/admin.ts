// The admin listener: dashboard, live decisions and DNS queries (server-sent events), Prometheus metrics and
// health, on its own port (loopback by default), never on the proxy port that containers reach.
// It answers only requests addressed to its own host names (a browser tricked by DNS rebinding
// sends a foreign Host), and state-changing requests need the admin token.
import { timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Activity, LiveEntry } from './activity.js'
import type { Listen } from '../rules/config.js'
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
  readonly reload: () => { ok: boolean; errors?: readonly string[] }
  readonly token: string
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
    lastReload: sources.activity.lastReload(),
  }
}

function events(req: IncomingMessage, res: ServerResponse, activity: Activity): void {
  res.writeHead(200, { ...SECURITY_HEADERS, 'Content-Type': 'text/event-stream', Connection: 'keep-alive' })
  res.write(': proxy-gate decisions\n\n')
  const send = (entry: LiveEntry): boolean => res.write(`event: ${entry.kind}\ndata: ${JSON.stringify(entry.record)}\n\n`)
  for (const entry of activity.recent().slice(-50)) send(entry)
  const unsubscribe = activity.subscribe(send)
  const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), 15_000)
  req.socket.on('close', () => {
    clearInterval(keepAlive)
    unsubscribe()
  })
}

function route(sources: AdminSources, req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0] ?? '/'
  if (req.method === 'POST' && path === '/reload') {
    if (!tokenMatches(req, sources.token)) return text(res, 401, 'the admin token is required (Authorization: Bearer TOKEN)')
    const result = sources.reload()
    return json(res, result.ok ? 200 : 422, result)
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') return text(res, 405, `${req.method ?? ''} is not allowed on ${path}`)
  const file = STATIC[path]
  if (file) return send(res, 200, file[0], file[1])
  if (path === '/healthz') return text(res, 200, 'ok')
  if (path === '/readyz') return sources.ready() ? text(res, 200, 'ready') : text(res, 503, 'not ready')
  if (path === '/api/state') return json(res, 200, state(sources))
  if (path === '/events') return events(req, res, sources.activity)
  if (path === '/metrics') {
    void sources.metrics.render().then(({ text: body, contentType }) => send(res, 200, contentType, body))
    return
  }
  text(res, 404, `${path} is not served here`)
}

export function createAdmin(listen: Listen, sources: AdminSources): Admin {
  let hosts = new Set<string>()
  const server: Server = createServer((req, res) => {
    // probes (kubelet, HAProxy) name the pod's address or no Host at all; the answer tells a rebinding page nothing
    const probe = PROBES.has((req.url ?? '').split('?')[0] ?? '')
    if (!probe && !hosts.has((req.headers.host ?? '').toLowerCase())) return text(res, 421, 'this admin listener answers only to its own address (Host header)')
    route(sources, req, res)
  })
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
