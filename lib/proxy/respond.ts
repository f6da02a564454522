// Writing the proxy's own answers (core/reply.ts) on a socket or a response, with an RFC 9209
// Proxy-Status header, and the denial for a decision: what, why, and the rules.json line to fix it.
import type { ServerResponse } from 'node:http'
import { http } from '../core/builtins.js'
import type { Socket } from 'node:net'
import { proxyStatus, reply, type ProxyReply } from '../core/reply.js'
import { denyErrorType, type Decision } from '../policy/decide.js'

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

/** The response a request before this one on the connection is still writing, if any. */
export function pendingResponse(socket: Socket): ServerResponse | undefined {
  const pending = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage
  return pending && !pending.writableFinished ? pending : undefined
}

/**
 * What follows requests whose responses are still being written (a CONNECT or Upgrade, which
 * node:http hands over at once; a head its parser refused) runs once they are all out: answers
 * keep their order (RFC 9112 9.3.2), and an earlier response never lands inside a tunnel. Cut off: closed.
 */
export function afterResponse(pending: ServerResponse, socket: Socket, then: () => void): void {
  // node:http hands the socket to the next pipelined response on 'finish', before this listener
  pending.once('finish', () => {
    const next = pendingResponse(socket)
    if (next) afterResponse(next, socket, then)
    else then()
  })
  pending.once('close', () => {
    if (!pending.writableFinished) socket.destroy()
  })
}

/** For sockets that left the HTTP machinery (CONNECT, Upgrade, parse errors): write and close. */
export function replyOnSocket(socket: Socket, r: ProxyReply): void {
  if (socket.destroyed || !socket.writable) return // closing already (an answer that said Connection: close)
  const lines = Object.entries(replyHeaders(r, true)).map(([k, v]) => `${k}: ${v}`)
  const head = [`HTTP/1.1 ${r.status} ${http.STATUS_CODES[r.status] ?? ''}`, ...lines]
  socket.end(`${head.join('\r\n')}\r\n\r\n${r.body}`)
  socket.destroySoon()
}

/**
 * How to refuse on a socket handed over by CONNECT or Upgrade: with HTTP while nothing has been
 * written on it since the handover; once something has (a 200 or a 101), the socket carries a
 * tunnel and no HTTP may go into it, so it is closed instead.
 */
export function refuserFor(socket: Socket): (r: ProxyReply) => void {
  const written = socket.bytesWritten
  return (r) => (socket.bytesWritten > written ? void socket.destroy() : replyOnSocket(socket, r))
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
