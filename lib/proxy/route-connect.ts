// CONNECT tunnels.
//   other ports: client --CONNECT host:port--> check head -> parse -> admit -> dial checked IP -> 200 -> relay
//                (the client's first bytes may open a ClientHello? held, and read on, until its SNI is checked
//                as on TLS ports; a hello that cannot be read is refused there too)
//   TLS ports:   client --CONNECT host:port--> check head -> parse -> admit -> 200 -> ClientHello (SNI) -> admit again -> dial -> relay
//   rules with methods/paths: ... -> 200 [-> ClientHello] -> interceptor (intercept.ts); on other ports
//                the first bytes tell TLS from plain HTTP
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { checkRequestHead } from './checks.js'
import { dial, DialFailure } from '../net/dial.js'
import { admit, admitHello, type Admission, type Gate } from '../net/gate.js'
import { formatIp, type Ip } from '../policy/ip.js'
import type { ClientIdentity } from '../policy/clients.js'
import type { Interceptor } from './intercept.js'
import { defersToSni, isTlsPort, needsInterception, type Decision, type HelloView } from '../policy/decide.js'
import { relay, upstreamReads, type Held, type Screen } from './relay.js'
import { denial, destroySocket, replyOnSocket } from './respond.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { logDecision, tunnelClosed, type OpenConnection, type Runtime } from './runtime.js'
import { parseAuthority, type Target } from '../policy/target.js'
import { parentFor } from '../net/upstream.js'
import { startsLikeTls } from '../policy/tls-hello.js'
import { readHello, type Hello } from './hello.js'

const ESTABLISHED = 'HTTP/1.1 200 Connection established\r\n\r\n'

/** What a tunnel's decision lines share: one object per tunnel instead of a closure for each use. */
interface Asked {
  readonly rt: Runtime
  readonly id: string
  readonly req: IncomingMessage
  readonly rawTarget: string
  readonly policy: string
}

function logAsked(asked: Asked, target: Target | undefined, decision: Decision | undefined, resolved: readonly Ip[] | undefined, r?: ProxyReply, sni?: string): void {
  const { rt, id, req, rawTarget, policy } = asked
  logDecision(rt, { id, req, method: 'CONNECT', target, rawTarget, policy, decision, resolved, reply: r, sni })
}

function refuse(asked: Asked, socket: Socket, target: Target | undefined, r: ProxyReply): undefined {
  logAsked(asked, target, undefined, undefined, r)
  replyOnSocket(socket, r)
  return undefined
}

/** A route's work: a promise while it waits for something (DNS, a dial), undefined when it finished at once. */
type Routed = Promise<void> | undefined

export function connectRoute(rt: Runtime, interceptor: Interceptor | undefined, who: ClientIdentity, req: IncomingMessage, socket: Socket, head: Buffer): Routed {
  const rawTarget = req.url ?? ''
  const parsed = parseAuthority(rawTarget)
  const gate = rt.gate(who)
  const asked: Asked = { rt, id: rt.nextId(), req, rawTarget, policy: gate.policyName }
  const problem = checkRequestHead(req, rt.limits())
  if (problem) return refuse(asked, socket, parsed.ok ? parsed.value : undefined, problem)
  if (!parsed.ok) return refuse(asked, socket, undefined, reply(400, 'http_request_error', `bad CONNECT target: ${parsed.error}`))
  const target = parsed.value
  const admission = admit(gate, target)
  // IP literals and names no rule allows are decided at once; only a resolution is waited for
  if (admission instanceof Promise) return admission.then((a) => admitted(asked, interceptor, who, socket, head, gate, target, a))
  return admitted(asked, interceptor, who, socket, head, gate, target, admission)
}

function admitted(asked: Asked, interceptor: Interceptor | undefined, who: ClientIdentity, socket: Socket, head: Buffer, gate: Gate, target: Target, admission: Admission): Routed {
  if (admission.kind === 'failed') return refuse(asked, socket, target, admission.reply)
  const { decision, resolved } = admission
  const deferred = defersToSni(gate.ctx, target, decision)
  if (decision.verdict === 'deny' && !deferred) {
    logAsked(asked, target, decision, resolved)
    replyOnSocket(socket, denial('CONNECT', asked.rawTarget, decision))
    return undefined
  }
  const opened = interceptor && needsInterception(gate.policy, target) ? interceptor : undefined
  if (isTlsPort(gate.ctx, target.port)) return onTlsPort(asked, interceptor, who, socket, head, gate, target, decision, resolved)
  logAsked(asked, target, decision, resolved)
  const { rt, id } = asked
  const check: SniCheck = { asked, socket, gate, target, decision, resolved }
  if (!opened) {
    if (head.length > 0 && startsLikeTls(head)) return openChecked(check, who, head)
    // the upstream is dialled first and relayed at once (server-first protocols: SSH, SMTP); the client's first chunk says whether to read on
    const screen: Screen | undefined = head.length > 0 ? undefined : (first) => (startsLikeTls(first) ? (held) => holdForSni(first, held, check) : undefined)
    return openTunnel(rt, id, socket, target, decision.dial, resolved ?? decision.dial, head, true, who, screen)
  }
  return openOpened(check, opened, who, head)
}

/** A ClientHello sent along with the CONNECT: checked before dialling. */
async function openChecked(check: SniCheck, who: ClientIdentity, head: Buffer): Promise<void> {
  const { asked, socket, target, decision, resolved } = check
  const hello = await checkSni(check, head)
  if (hello === undefined) return void socket.destroy()
  return openTunnel(asked.rt, asked.id, socket, target, decision.dial, resolved ?? decision.dial, hello.bytes, true, who)
}

/** An opened tunnel carries HTTP, whose client speaks first: its first bytes tell TLS from plain HTTP. */
async function openOpened(check: SniCheck, opened: Interceptor, who: ClientIdentity, head: Buffer): Promise<void> {
  const { asked, socket, target, decision, resolved } = check
  socket.write(ESTABLISHED)
  const first = await firstChunk(socket, head, asked.rt.limits().tunnelIdleTimeoutMs)
  if (first === undefined) return void socket.destroy()
  if (!startsLikeTls(first)) return openTunnelFor(opened, asked.id, socket, first, target, decision, resolved, false, who)
  const hello = await checkSni(check, first)
  if (hello === undefined) return void socket.destroy()
  return openTunnelFor(opened, asked.id, socket, hello.bytes, target, decision, resolved, hello.view.kind === 'hello', who)
}

/** A tunnel on a port not listed as TLS, admitted: TLS there gets the same SNI check, on the client's first bytes. */
interface SniCheck {
  readonly asked: Asked
  readonly socket: Socket
  readonly gate: Gate
  readonly target: Target
  readonly decision: Decision
  readonly resolved: readonly Ip[] | undefined
}

async function checkSni(check: SniCheck, bytes: Buffer): Promise<Hello | undefined> {
  const { asked, socket, gate, target, decision, resolved } = check
  const hello = await readHello(socket, bytes, gate.ctx.tls.helloTimeoutMs)
  if (hello === undefined) return undefined
  // one rule for every port (checkHello): a hello that cannot be read is refused; bytes no TLS server reads as one pass here
  const sni = serverName(hello.view)
  const second = await admitHello(gate, target, decision, hello.view)
  if (second.kind === 'failed') {
    logAsked(asked, target, undefined, undefined, second.reply, sni)
    return undefined
  }
  // logged again only when the ClientHello changed the decision (a denial, or report mode's wouldDeny)
  if (second.decision !== decision) logAsked(asked, target, second.decision, resolved, undefined, sni)
  return second.decision.verdict === 'deny' ? undefined : hello
}

/** TLS port: answer first, then decide on the ClientHello the client sends next. */
async function onTlsPort(asked: Asked, interceptor: Interceptor | undefined, who: ClientIdentity, socket: Socket, head: Buffer, gate: Gate, target: Target, decision: Decision, resolved: readonly Ip[] | undefined): Promise<void> {
  const { rt, id } = asked
  socket.write(ESTABLISHED)
  const hello = await readHello(socket, head, gate.ctx.tls.helloTimeoutMs)
  if (hello === undefined) return logAsked(asked, target, decision, resolved, reply(400, 'http_request_error', 'client closed the tunnel before a ClientHello'))
  const sni = serverName(hello.view)
  const second: Admission & { ruleTarget: Target } = await admitHello(gate, target, decision, hello.view)
  if (second.kind === 'failed') {
    logAsked(asked, target, undefined, undefined, second.reply, sni)
    return void socket.destroy()
  }
  logAsked(asked, target, second.decision, second.resolved ?? resolved, undefined, sni)
  if (second.decision.verdict === 'deny') return void socket.destroy()
  if (interceptor && needsInterception(gate.policy, second.ruleTarget)) {
    return openTunnelFor(interceptor, id, socket, hello.bytes, second.ruleTarget, second.decision, second.resolved ?? resolved, true, who)
  }
  return openTunnel(rt, id, socket, second.ruleTarget, second.decision.dial, second.resolved ?? resolved ?? second.decision.dial, hello.bytes, false, who)
}

/** The ClientHello's server name for the log: none for an empty one or no ClientHello. */
function serverName(view: HelloView): string | undefined {
  return view.kind === 'hello' ? view.sni || undefined : undefined
}

/** A relayed tunnel's held first chunk: the rest of the ClientHello is read, then passed on or the tunnel closed. */
function holdForSni(first: Buffer, held: Held, check: SniCheck): void {
  checkSni(check, first).then(
    (hello) => (hello === undefined ? held.close('TLS server name refused') : held.pass(hello.bytes)),
    () => held.close('TLS server name check failed'),
  )
}

/** The client's first bytes in a tunnel (what came with the CONNECT, else its next chunk), the socket paused behind them. */
function firstChunk(socket: Socket, head: Buffer, timeoutMs: number): Promise<Buffer | undefined> {
  if (head.length > 0) return Promise.resolve(head)
  return new Promise((resolve) => {
    const finish = (chunk: Buffer | undefined): void => {
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('close', onClose)
      socket.pause()
      resolve(chunk)
    }
    const onData = (chunk: Buffer): void => finish(chunk)
    const onClose = (): void => finish(undefined)
    const timer = setTimeout(() => finish(undefined), timeoutMs)
    socket.on('data', onData)
    socket.once('close', onClose)
    socket.resume()
  })
}

/**
 * Dials the checked addresses (or the parent proxy, for the name), sends what the client already sent, and relays. `answer` says
 * whether the 200 is still to be written (or, on failure, an error status can still be sent).
 */
export async function openTunnel(rt: Runtime, id: string, socket: Socket, target: Target, addresses: readonly Ip[], resolved: readonly Ip[], first: Buffer, answer: boolean, who: ClientIdentity, screen?: Screen): Promise<void> {
  const limits = rt.limits()
  let upstream: Socket
  // with "upstream": through the parent (CONNECT, its 2xx before any tunnel byte), unless upstreamBypass
  const parent = parentFor(rt.upstream?.(), target)
  let handshake = { sent: 0, received: 0 }
  let dialed: Ip | undefined
  const dialStarted = performance.now()
  try {
    if (parent) ({ socket: upstream, ...handshake } = await parent.tunnel(target, limits))
    else ({ socket: upstream, ip: dialed } = await dial(addresses, target.port, limits.connectTimeoutMs, upstreamReads))
    rt.record({ type: 'timing', what: 'connect', ms: performance.now() - dialStarted, ok: true })
  } catch (error) {
    rt.record({ type: 'timing', what: 'connect', ms: performance.now() - dialStarted, ok: false })
    if (!(error instanceof DialFailure)) throw error
    rt.log.info('upstream failed', { id, status: error.reply.status, error: error.reply.type, detail: error.reply.details, nextHop: error.reply.nextHop })
    return answer ? replyOnSocket(socket, error.reply) : void socket.destroy()
  }
  if (socket.destroyed) return void upstream.destroy()
  if (answer) socket.write(ESTABLISHED)
  if (first.length > 0) upstream.write(first)
  socket.off('error', destroySocket)
  const open: OpenConnection = { id, kind: 'tunnel', target, resolved, who, close: (reason) => tunnel.close(reason) }
  const tunnel = relay(socket, upstream, limits, (stats) => {
    rt.open.delete(open)
    // formatted only now: upstream.remoteAddress would keep a peer-name object on the socket for the tunnel's life;
    // without the parent's handshake bytes
    const { bytesFromClient, bytesToClient, durationMs, error } = stats
    rt.record(tunnelClosed(id, dialed && formatIp(dialed), bytesFromClient - handshake.sent, bytesToClient - handshake.received, durationMs, error, parent?.hop))
  }, screen)
  rt.open.add(open)
}

/** Hands a tunnel whose rules limit methods or paths to the interceptor, pinned to the checked IP. */
export function openTunnelFor(interceptor: Interceptor, id: string, socket: Socket, first: Buffer, target: Target, decision: Decision, resolved: readonly Ip[] | undefined, tls: boolean, who: ClientIdentity): Promise<void> {
  const ip = decision.dial[0]
  if (ip === undefined) throw new Error('allowed decision without an address')
  return interceptor.open({ id, socket, first, target, ip, resolved: resolved ?? decision.dial, tls, who })
}
