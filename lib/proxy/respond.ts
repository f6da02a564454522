// Responses the proxy writes itself: denials and errors, each with an RFC 9209 Proxy-Status
// header and a short text body that says what happened and how to fix it.
import { STATUS_CODES, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Decision } from '../policy/decide.js'
import { denyErrorType } from '../policy/decide.js'

/** RFC 9209 error types the proxy answers with. */
export const PROXY_ERROR_TYPES = [
  'http_request_denied',
  'destination_ip_prohibited',
  'http_request_error',
  'dns_error',
  'dns_timeout',
  'connection_refused',
  'connection_terminated',
  'connection_timeout',
  'connection_read_timeout',
  'connection_limit_reached',
  'destination_unavailable',
  'tls_certificate_error',
  'proxy_internal_error',
  'proxy_configuration_error',
  'proxy_loop_detected',
  'http_protocol_error',
] as const
export type ProxyErrorType = (typeof PROXY_ERROR_TYPES)[number]

/** What the proxy answers instead of forwarding. */
export interface ProxyReply {
  readonly status: number
  readonly type: ProxyErrorType
  /** one line for the Proxy-Status details parameter and the log */
  readonly details: string
  /** text body for people */
  readonly body: string
  /** extra response headers (e.g. Proxy-Authenticate on a 407) */
  readonly headers?: Readonly<Record<string, string>>
  /** RFC 9209 next-hop: the parent proxy (`host:port`, never its credentials) when one was used */
  readonly nextHop?: string
  /** RFC 9209 received-status: the status the next hop answered with */
  readonly receivedStatus?: number
}

/** An RFC 8941 sf-string: printable ASCII only, with `\` and `"` escaped. */
export function sfString(text: string): string {
  // eslint-disable-next-line no-control-regex
  const printable = text.replace(/[^\x20-\x7e]/g, '?')
  return `"${printable.replace(/[\\"]/g, (c) => `\\${c}`)}"`
}

export function proxyStatus(type: ProxyErrorType, details: string, hop: { readonly nextHop?: string; readonly receivedStatus?: number } = {}): string {
  const nextHop = hop.nextHop === undefined ? '' : `; next-hop=${sfString(hop.nextHop)}`
  const received = hop.receivedStatus === undefined ? '' : `; received-status=${hop.receivedStatus}`
  return `proxy-gate; error=${type}${nextHop}${received}; details=${sfString(details)}`
}

export function reply(status: number, type: ProxyErrorType, details: string, body = details): ProxyReply {
  return { status, type, details, body: `proxy-gate: ${body}\n` }
}

function fixText(decision: Decision): string {
  if (decision.reason === 'deny-rule' && decision.rule) {
    return `to allow it, remove or narrow ${decision.rule.list}[${decision.rule.index}] ${decision.rule.text} in rules.json`
  }
  if (decision.suggestion === undefined) return 'this destination cannot be allowed'
  return `to allow it, add this entry to "allow" in rules.json:\n  ${decision.suggestion}`
}

/** 403 for a policy denial: what was denied, why, and the rules.json line that would allow it. */
export function denial(method: string, target: string, decision: Decision): ProxyReply {
  const body = `denied ${method} ${target}\nwhy: ${decision.detail}\n${fixText(decision)}`
  return reply(403, denyErrorType(decision.reason), decision.detail, body)
}

function replyHeaders(r: ProxyReply, close: boolean): Record<string, string> {
  return {
    'Proxy-Status': proxyStatus(r.type, r.details, r),
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(r.body)),
    ...r.headers,
    ...(close ? { Connection: 'close' } : {}),
  }
}

/** For sockets that left the HTTP machinery (CONNECT, Upgrade, parse errors): write and close. */
export function replyOnSocket(socket: Socket, r: ProxyReply): void {
  if (socket.destroyed) return
  const lines = Object.entries(replyHeaders(r, true)).map(([k, v]) => `${k}: ${v}`)
  const head = [`HTTP/1.1 ${r.status} ${STATUS_CODES[r.status] ?? ''}`, ...lines]
  socket.end(`${head.join('\r\n')}\r\n\r\n${r.body}`)
  socket.destroySoon()
}

export function replyOnResponse(res: ServerResponse, r: ProxyReply, close: boolean): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  res.writeHead(r.status, replyHeaders(r, close)).end(r.body)
}

/**
 * The error listener of a CONNECT or Upgrade client socket from the moment the server hands it
 * over (Node has removed its own by then) until a relay takes it over. A shared function: a
 * closure would keep the request alive as long as the socket.
 */
export function destroySocket(this: Socket): void {
  this.destroy()
}
