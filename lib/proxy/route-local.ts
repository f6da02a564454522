// Requests addressed to proxy-gate itself (origin-form): the health check, the PAC file and the
// local CA's certificate.
//   client --GET /path--> /healthz | /readyz | /proxy.pac | /wpad.dat | /ca.crt | 404
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { PacFlavor } from '../wiring/pac.js'
import { reply } from '../core/reply.js'
import { replyOnResponse } from './respond.js'

export interface PacFile {
  readonly text: string
  readonly etag: string
}

export interface LocalSources {
  pac(flavor: PacFlavor): PacFile
  /** the local CA certificate (PEM), undefined when there is none */
  caCert(): string | undefined
  /** listening with rules loaded and not shutting down */
  ready(): boolean
}

const PAC_PATHS = new Set(['/proxy.pac', '/wpad.dat'])

function servePac(req: IncomingMessage, res: ServerResponse, pac: PacFile): void {
  const headers = { 'Content-Type': 'application/x-ns-proxy-autoconfig', ETag: pac.etag, 'Cache-Control': 'max-age=60' }
  if (req.headers['if-none-match'] === pac.etag) {
    res.writeHead(304, headers).end()
    return
  }
  res.writeHead(200, { ...headers, 'Content-Length': Buffer.byteLength(pac.text) })
  res.end(req.method === 'HEAD' ? undefined : pac.text)
}

function serveCaCert(req: IncomingMessage, res: ServerResponse, pem: string | undefined): void {
  if (pem === undefined) {
    return replyOnResponse(res, reply(404, 'http_request_error', 'proxy-gate has no local CA: run "proxy-gate ca init", then restart it'), false)
  }
  const headers = { 'Content-Type': 'application/x-x509-ca-cert', 'Content-Disposition': 'attachment; filename="proxy-gate-ca.crt"', 'Cache-Control': 'no-cache' }
  res.writeHead(200, { ...headers, 'Content-Length': Buffer.byteLength(pem) })
  res.end(req.method === 'HEAD' ? undefined : pem)
}

export function localRoute(req: IncomingMessage, res: ServerResponse, sources: LocalSources): void {
  const [path = '', query = ''] = (req.url ?? '').split('?')
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    return replyOnResponse(res, reply(405, 'http_request_error', `${req.method ?? ''} is not served on ${path}`), false)
  }
  if (path === '/readyz') {
    const ready = sources.ready()
    res.writeHead(ready ? 200 : 503, { 'Content-Type': 'text/plain; charset=utf-8' }).end(ready ? 'ready\n' : 'not ready\n')
    return
  }
  if (path === '/healthz') {
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' }).end('ok\n')
    return
  }
  if (PAC_PATHS.has(path)) {
    const flavor = new URLSearchParams(query).get('flavor') === 'docker' ? 'docker' : 'standard'
    return servePac(req, res, sources.pac(flavor))
  }
  if (path === '/ca.crt') return serveCaCert(req, res, sources.caCert())
  replyOnResponse(res, reply(404, 'http_request_error', `${path} is not served here; send proxy requests in absolute form (http://host/path) or use CONNECT`), false)
}
