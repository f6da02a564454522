// CONNECT tunnels.
//   client --CONNECT host:port--> check head -> parse authority -> admit -> dial checked IP -> 200 -> relay
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { checkRequestHead } from './checks.js'
import { dial, DialFailure } from './dial.js'
import { admit } from './gate.js'
import { relay } from './relay.js'
import { denial, reply, replyOnSocket, type ProxyReply } from './respond.js'
import { logDecision, type OpenConnection, type Runtime } from './runtime.js'
import { parseAuthority } from './target.js'

export async function connectRoute(rt: Runtime, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
  const id = rt.nextId()
  const rawTarget = req.url ?? ''
  socket.on('error', () => socket.destroy())
  const parsed = parseAuthority(rawTarget)
  const refuse = (r: ProxyReply): void => {
    logDecision(rt, { id, req, method: 'CONNECT', target: parsed.ok ? parsed.value : undefined, rawTarget, reply: r })
    replyOnSocket(socket, r)
  }
  const problem = checkRequestHead(req, rt.limits())
  if (problem) return refuse(problem)
  if (!parsed.ok) return refuse(reply(400, 'http_request_error', `bad CONNECT target: ${parsed.error}`))
  const target = parsed.value
  const admission = await admit(rt.gate(), target)
  if (admission.kind === 'failed') return refuse(admission.reply)
  const { decision, resolved } = admission
  logDecision(rt, { id, req, method: 'CONNECT', target, rawTarget, decision, resolved })
  if (decision.verdict === 'deny') return replyOnSocket(socket, denial('CONNECT', rawTarget, decision))
  let upstream: Socket
  try {
    upstream = (await dial(decision.dial, target.port, rt.limits().connectTimeoutMs)).socket
  } catch (error) {
    if (!(error instanceof DialFailure)) throw error
    rt.log.info('upstream failed', { id, status: error.reply.status, error: error.reply.type, detail: error.reply.details })
    return replyOnSocket(socket, error.reply)
  }
  if (socket.destroyed) return void upstream.destroy()
  socket.write('HTTP/1.1 200 Connection established\r\n\r\n')
  if (head.length > 0) upstream.write(head)
  const limits = rt.limits()
  const open: OpenConnection = {
    id,
    kind: 'tunnel',
    target,
    resolved: resolved ?? decision.dial,
    close: (reason) => tunnel.close(reason),
  }
  const chosen = upstream.remoteAddress
  const tunnel = relay(socket, upstream, { idleTimeoutMs: limits.tunnelIdleTimeoutMs, maxLifetimeMs: limits.tunnelMaxLifetimeMs }, (stats) => {
    rt.open.delete(open)
    rt.log.info('closed', { id, kind: 'tunnel', chosen, ...stats })
  })
  rt.open.add(open)
}
