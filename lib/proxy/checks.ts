// Request-head checks every route runs before parsing the target, and requests inside opened
// tunnels too: protocol version, header count, missing or duplicate Host, framing that the proxy
// refuses to guess about; and the answer to a head the HTTP parser refused (too large, malformed).
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Limits } from '../rules/config.js'
import { countHeader } from './headers.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { afterResponse, pendingResponse, replyOnSocket } from './respond.js'
import type { RequestHead } from './connect-head.js'

const NO_TRACE = new Set(['TRACE', 'TRACK'])

export function checkRequestHead(req: RequestHead, limits: Limits): ProxyReply | undefined {
  if (req.httpVersion !== '1.1' && req.httpVersion !== '1.0') {
    return reply(req.httpVersionMajor >= 2 ? 505 : 400, 'http_request_error', `HTTP/${req.httpVersion} is not supported: use HTTP/1.1`)
  }
  const headerCount = req.rawHeaders.length / 2
  if (headerCount > limits.maxHeaderCount) {
    return reply(431, 'http_request_error', `${headerCount} header lines is more than the limit of ${limits.maxHeaderCount}`)
  }
  if (countHeader(req.rawHeaders, 'host') > 1) return reply(400, 'http_request_error', 'more than one Host header')
  if (req.httpVersion === '1.1' && req.method !== 'CONNECT' && req.headers.host === undefined) return reply(400, 'http_request_error', 'no Host header in an HTTP/1.1 request')
  const chunked = countHeader(req.rawHeaders, 'transfer-encoding') > 0
  if (chunked && req.httpVersion === '1.0') return reply(400, 'http_request_error', 'Transfer-Encoding is not allowed in HTTP/1.0')
  if (req.method === 'CONNECT' && (chunked || Number(firstContentLength(req.rawHeaders) ?? 0) > 0)) {
    return reply(400, 'http_request_error', 'a CONNECT request has no body')
  }
  if (NO_TRACE.has(req.method ?? '')) return reply(405, 'http_request_error', `${req.method} is not allowed through proxy-gate`)
  return undefined
}

/**
 * The Content-Length value req.headers would keep (the first), read from the raw lines: on a CONNECT,
 * req.headers would be built for this alone.
 */
function firstContentLength(rawHeaders: readonly string[]): string | undefined {
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] ?? ''
    if (name.length === 14 && name.toLowerCase() === 'content-length') return rawHeaders[i + 1]
  }
  return undefined
}

/** True when the request carries a body the proxy must forward or drain. */
export function hasBody(req: IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0
}

function clientErrorReply(error: NodeJS.ErrnoException): ProxyReply {
  if (error.code === 'HPE_HEADER_OVERFLOW') return reply(431, 'http_request_error', 'request head is larger than the limit')
  if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') return reply(408, 'http_request_error', 'request was not received in time')
  return reply(400, 'http_request_error', `malformed request (${error.code ?? 'parse error'})`)
}

/** Connections whose refused head is answered once the responses before it are out. */
const waiting = new WeakSet<Socket>()

/**
 * Answers a request Node's HTTP parser refused ('clientError'), on the proxy port and inside opened
 * tunnels: `noted` logs the answer. Nothing is written to a client that is gone, or into a
 * response under way (a second status line would corrupt it): the answer follows the earlier
 * responses once they are out, whether its last bytes were still being written or not (which one
 * depends on the kernel's timing, and the client must get the same answer either way).
 */
export function answerClientError(error: NodeJS.ErrnoException, socket: Socket, noted: (r: ProxyReply) => void): void {
  if (error.code === 'ECONNRESET' || !socket.writable) return void socket.destroy()
  const pending = pendingResponse(socket)
  // bytes after an answer that said Connection: close: nothing more is said, whatever the timing
  if (error.code === 'HPE_CLOSED_CONNECTION') {
    if (!pending) socket.destroySoon()
    return
  }
  // a timeout is about an unfinished request behind the response under way: that response has begun, so nothing more can be said
  const timeout = error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
  if (pending && timeout && pending.headersSent) return void socket.destroy()
  // node:http's parser reports its error again for every later chunk: answered (and logged) once
  if (waiting.has(socket) && !timeout) return
  const r = clientErrorReply(error)
  noted(r)
  // earlier pipelined requests answer first: responses keep their order (a timeout, about that request itself, at once)
  if (pending && !timeout) {
    waiting.add(socket)
    afterResponse(pending, socket, () => replyOnSocket(socket, r))
  } else replyOnSocket(socket, r)
}
