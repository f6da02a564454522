// One raw HTTP/1.1 answer from proxy-gate, read the way the refusal tests check it (status,
// lower-cased headers, body, the Proxy-Status header), and the CONNECT head those tests send.
import { statusOf } from './net.js'

/** A raw response split into its parts. */
export interface Parsed {
  readonly status: number | undefined
  readonly headers: ReadonlyMap<string, string>
  readonly body: string
}

/** Splits one raw HTTP/1.1 response into status, lower-cased headers and body. */
export function parseResponse(text: string): Parsed {
  const end = text.indexOf('\r\n\r\n')
  const head = end < 0 ? text : text.slice(0, end)
  const headers = new Map<string, string>()
  for (const line of head.split('\r\n').slice(1)) {
    const colon = line.indexOf(':')
    if (colon > 0) headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim())
  }
  return { status: statusOf(text), headers, body: end < 0 ? '' : text.slice(end + 4) }
}

/** The Proxy-Status header split into its error type and unescaped details. */
export function proxyStatus(parsed: Parsed): { error: string | undefined; details: string | undefined } {
  const m = /^proxy-gate; error=([a-z_]+); details="((?:[^"\\]|\\.)*)"$/.exec(parsed.headers.get('proxy-status') ?? '')
  return { error: m?.[1], details: m?.[2]?.replace(/\\(.)/g, '$1') }
}

/** A CONNECT request head for `target`, with any extra header lines (each ending in CRLF). */
export function connectHead(target: string, extra = ''): string {
  return `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${extra}\r\n`
}
