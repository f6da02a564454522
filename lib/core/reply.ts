// What the proxy answers instead of forwarding, as a value: status, RFC 9209 error type, one
// line of details and a text body. Every part that can fail a request builds one; the proxy
// writes it (proxy/respond.ts).
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
function sfString(text: string): string {
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
