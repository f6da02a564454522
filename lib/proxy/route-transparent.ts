// Transparent listeners (sandbox): clients that know no proxy connect to proxy-gate's own address;
// the port they dialled is the destination port.
//   TLS ports:  client --TLS to ADDRESS:PORT--> ClientHello (SNI) -> admit SNI:PORT (rules, DNS, guard) -> dial checked IP -> ClientHello -> relay
//   rules with methods/paths: ... -> admit -> interceptor (intercept.ts)
//   HTTP ports: client --GET /path, Host: host--> forwardRoute / upgradeRoute with the listener's port (absolute-form.ts); CONNECT -> 405
import type { RequestHead } from './connect-head.js'
import type { Socket } from 'node:net'
import { admit, underCurrent } from '../net/gate.js'
import { parseIp, type Ip } from '../policy/ip.js'
import { checkTransparentHello, needsInterception, type Decision } from '../policy/decide.js'
import type { Interceptor } from './intercept.js'
import { openTunnel, openTunnelFor } from './route-connect.js'
import { laterHellos, readHello } from './hello.js'
import { replyOnSocket } from './respond.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { logDecision, TunnelEntry, type Runtime } from './runtime.js'
import type { Target } from '../policy/target.js'

/** One transparent listener: `ADDRESS:PORT` as logged, and the port, which is the destination port. */
export interface TransparentListener {
  readonly address: string
  readonly port: number
}

/** A connection to a transparent TLS port, decided by its ClientHello's server name. */
export async function transparentTlsRoute(rt: Runtime, interceptor: Interceptor | undefined, listener: TransparentListener, socket: Socket): Promise<void> {
  const id = rt.nextId()
  // no proxy authentication here: such clients cannot send any; source policies still apply
  const who = { source: parseIp(socket.remoteAddress ?? ''), user: undefined }
  const gate = rt.gate(who)
  const log = (fields: { decision?: Decision; resolved?: readonly Ip[] | undefined; reply?: ProxyReply; sni?: string | undefined }, target?: Target) =>
    logDecision(rt, { id, req: { socket }, method: 'TLS', target, rawTarget: listener.address, policy: gate.policyName, listener: 'transparent', ...fields })
  const hello = await readHello(socket, Buffer.alloc(0), gate.ctx.tls.helloTimeoutMs)
  if (hello === undefined) return log({ reply: reply(400, 'http_request_error', 'client closed the connection before a ClientHello') })
  const sni = hello.view.kind === 'hello' ? hello.view.sni : undefined
  const checked = checkTransparentHello(gate.ctx, listener.address, listener.port, hello.view)
  if (checked.verdict !== 'admit-sni') {
    log({ decision: checked, sni })
    return void socket.destroy()
  }
  const target = checked.target
  const { gate: current, value: admission } = await underCurrent(() => rt.gate(who), (g) => admit(g, target))
  if (admission.kind === 'failed') {
    log({ reply: admission.reply, sni }, target)
    return void socket.destroy()
  }
  const { decision, resolved } = admission
  log({ decision, resolved, sni }, target)
  if (decision.verdict === 'deny') return void socket.destroy()
  const opened = interceptor && needsInterception(current.policy, target) ? interceptor : undefined
  const entry = new TunnelEntry(rt, id, who, target, resolved, 'pending', socket)
  entry.hello = hello.view
  if (opened) return openTunnelFor(opened, entry, socket, hello.bytes, decision, true)
  return openTunnel(rt, entry, socket, decision.dial, hello.bytes, undefined, undefined, laterHellos(hello))
}

/** CONNECT on a transparent HTTP port: refused, such clients reach origins through the proxy port. */
export function transparentConnect(rt: Runtime, req: RequestHead, socket: Socket): void {
  const r = reply(405, 'http_request_error', 'CONNECT is not accepted on a transparent listener: send requests for the Host, or use the proxy port')
  logDecision(rt, { id: rt.nextId(), req, method: 'CONNECT', target: undefined, rawTarget: req.url ?? '', reply: r, listener: 'transparent' })
  replyOnSocket(socket, r)
}
