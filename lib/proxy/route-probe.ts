// `proxy-gate doctor`'s end-to-end probe: a container sends `GET http://proxy-gate.invalid/doctor/NONCE`
// through its proxy settings, and proxy-gate answers it itself, whatever the rules say, and records
// the nonce for the admin API (/api/probe/NONCE) so doctor can tell that the request arrived here.
// ".invalid" is reserved (RFC 6761): the name never resolves, so nothing else can answer it, and
// only this exact shape (GET, that host, port 80, /doctor/ and 32 lowercase hex digits) is taken:
// anything else addressed to that name goes to the rules like any request. Never forwarded; it
// tells the client only that proxy-gate is there, as /healthz does, so it needs no proxy login.
import type { IncomingMessage, ServerResponse } from 'node:http'

export const PROBE_HOST = 'proxy-gate.invalid'

const PROBE_URL = /^http:\/\/proxy-gate\.invalid(?::80)?\/doctor\/([0-9a-f]{32})$/

/** The nonce of a probe request, or undefined when the request is anything else. */
export function probeNonce(req: IncomingMessage): string | undefined {
  if (req.method !== 'GET') return undefined
  return PROBE_URL.exec(req.url ?? '')?.[1]
}

export function answerProbe(res: ServerResponse, nonce: string): void {
  const body = `proxy-gate answered probe ${nonce}\n`
  res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' }).end(body)
}
