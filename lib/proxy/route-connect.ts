// CONNECT tunnels.
//   other ports: client --CONNECT host:port--> check head -> parse -> admit -> dial checked IP -> 200 -> relay
//                (the client's first bytes may open a ClientHello? held, and read on, until its SNI is checked
//                as on TLS ports; a hello that cannot be read is refused there too)
//   TLS ports:   client --CONNECT host:port--> check head -> parse -> admit -> 200 -> ClientHello (SNI) -> admit again -> dial -> relay
//   rules with methods/paths: ... -> 200 [-> ClientHello] -> interceptor (intercept.ts); on other ports
//                the first bytes tell TLS from plain HTTP
// Everything from admit on is tunnelRoute, which the SOCKS listener (route-socks.ts) calls too: only
// how the client is answered differs (TunnelAnswer: a 200 or an HTTP error here, a reply code there).
import type { RequestHead } from './connect-head.js'
import type { Socket } from 'node:net'
import { checkRequestHead } from './checks.js'
import { dial, DialFailure } from '../net/dial.js'
import { admit, admitHello, underCurrent, type Admission, type Gate } from '../net/gate.js'
import { formatIp, type Ip } from '../policy/ip.js'
import type { ClientIdentity } from '../policy/clients.js'
import type { Interceptor } from './intercept.js'
import { defersToSni, isTlsPort, needsInterception, type Decision, type HelloView } from '../policy/decide.js'
import { relay, upstreamReads, type Held, type Inspect, type Screen } from './relay.js'
import { denial, destroySocket, replyOnSocket } from './respond.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { logDecision, tunnelClosed, TunnelEntry, type Listener, type Runtime } from './runtime.js'
import { parseAuthority, type Target } from '../policy/target.js'
import { parentFor } from '../net/upstream.js'
import { misplacedInHead } from './secrets.js'
import { startsLikeTls } from '../policy/tls-hello.js'
import { laterHellos, readHello, type Hello } from './hello.js'

/** How a tunnel's client is told the tunnel is open, or why it is not. */
export interface TunnelAnswer {
  /** what the client reads before the first tunnel byte */
  readonly established: string | Buffer
  /** a refusal before any tunnel byte (an error, or a denial): answered, then closed */
  refuse(socket: Socket, r: ProxyReply): void
}

const HTTP_ANSWER: TunnelAnswer = { established: 'HTTP/1.1 200 Connection established\r\n\r\n', refuse: replyOnSocket }

/** What a tunnel's decision lines share: one object per tunnel instead of a closure for each use. */
export interface Asked {
  readonly rt: Runtime
  readonly id: string
  readonly req: { readonly socket: Socket }
  readonly rawTarget: string
  readonly policy: string
  readonly answer: TunnelAnswer
  /** set for tunnels asked for on another listener than the proxy port */
  readonly listener?: Listener
}

function logAsked(asked: Asked, target: Target | undefined, decision: Decision | undefined, resolved: readonly Ip[] | undefined, r?: ProxyReply, sni?: string): void {
  const { rt, id, req, rawTarget, policy, listener } = asked
  logDecision(rt, { id, req, method: 'CONNECT', target, rawTarget, policy, decision, resolved, reply: r, sni, listener })
}

export function refuse(asked: Asked, socket: Socket, target: Target | undefined, r: ProxyReply): undefined {
  logAsked(asked, target, undefined, undefined, r)
  asked.answer.refuse(socket, r)
  return undefined
}

/** A route's work: a promise while it waits for something (DNS, a dial), undefined when it finished at once. */
type Routed = Promise<void> | undefined

export function connectRoute(rt: Runtime, interceptor: Interceptor | undefined, who: ClientIdentity, req: RequestHead, socket: Socket, head: Buffer): Routed {
  const rawTarget = req.url ?? ''
  const parsed = parseAuthority(rawTarget)
  const gate = rt.gate(who)
  const asked: Asked = { rt, id: rt.nextId(), req, rawTarget, policy: gate.policyName, answer: HTTP_ANSWER }
  const problem = checkRequestHead(req, rt.limits())
  if (problem) return refuse(asked, socket, parsed.ok ? parsed.value : undefined, problem)
  if (!parsed.ok) return refuse(asked, socket, undefined, reply(400, 'http_request_error', `bad CONNECT target: ${parsed.error}`))
  return tunnelRoute(asked, interceptor, who, socket, head, parsed.value, req.rawHeaders)
}

/** A tunnel to `target` from admission on: the one decision path for CONNECT and SOCKS (whose requests have no headers). */
export function tunnelRoute(asked: Asked, interceptor: Interceptor | undefined, who: ClientIdentity, socket: Socket, head: Buffer, target: Target, rawHeaders: readonly string[] = []): Routed {
  const { rt } = asked
  // a secret's placeholder in the request: nothing of it leaves, but the attempt is refused and named
  const carried = misplacedInHead(rt.gate(who), target, asked.rawTarget, rawHeaders, asked.listener === 'socks' ? 'the SOCKS request' : 'the CONNECT request')
  if (carried?.verdict === 'deny') {
    logAsked(asked, target, carried, undefined)
    asked.answer.refuse(socket, denial('CONNECT', asked.rawTarget, carried))
    return undefined
  }
  // IP literals and names no rule allows are decided at once; only a resolution is waited for
  const decided = underCurrent(() => rt.gate(who), (g) => admit(g, target))
  if (decided instanceof Promise) return decided.then((d) => admitted(asked, interceptor, who, socket, head, d.gate, target, d.value))
  return admitted(asked, interceptor, who, socket, head, decided.gate, target, decided.value)
}

function admitted(asked: Asked, interceptor: Interceptor | undefined, who: ClientIdentity, socket: Socket, head: Buffer, gate: Gate, target: Target, admission: Admission): Routed {
  if (admission.kind === 'failed') return refuse(asked, socket, target, admission.reply)
  const { decision, resolved } = admission
  const deferred = defersToSni(gate.ctx, target, decision)
  if (decision.verdict === 'deny' && !deferred) {
    logAsked(asked, target, decision, resolved)
    asked.answer.refuse(socket, denial('CONNECT', asked.rawTarget, decision))
    return undefined
  }
  const opened = interceptor && needsInterception(gate.policy, target) ? interceptor : undefined
  const { rt, id } = asked
  // registered now, in the tick it was decided: a reload from here on re-decides it (a deferred one waits for its server name)
  const entry = deferred ? undefined : new TunnelEntry(rt, id, who, target, resolved, isTlsPort(gate.ctx, target.port) ? 'pending' : opened ? 'opened' : 'relayed', socket, asked.listener)
  if (isTlsPort(gate.ctx, target.port)) return onTlsPort(asked, interceptor, who, socket, head, target, decision, entry)
  logAsked(asked, target, decision, resolved)
  const tunnel = entry as TunnelEntry
  const check: SniCheck = { asked, socket, gate, target, decision, resolved, entry: tunnel }
  if (!opened) {
    if (head.length > 0 && startsLikeTls(head)) return openChecked(check, tunnel, head)
    // the upstream is dialled first and relayed at once (server-first protocols: SSH, SMTP); the client's first chunk says whether to read on
    const screen: Screen | undefined = head.length > 0 ? undefined : (first) => (startsLikeTls(first) ? (held) => holdForSni(first, held, check) : undefined)
    return openTunnel(rt, tunnel, socket, decision.dial, head, asked.answer, screen)
  }
  return openOpened(check, opened, tunnel, head)
}

/** Read after each wait: a reload that revoked the tunnel meanwhile destroyed its socket. */
function closed(socket: Socket): boolean {
  return socket.destroyed
}

/** A ClientHello sent along with the CONNECT: checked before dialling. */
async function openChecked(check: SniCheck, entry: TunnelEntry, head: Buffer): Promise<void> {
  const { asked, socket, decision } = check
  const hello = await checkSni(check, head)
  if (hello === undefined) return void socket.destroy()
  return openTunnel(asked.rt, entry, socket, decision.dial, hello.bytes, asked.answer, undefined, laterHellos(hello))
}

/** An opened tunnel carries HTTP, whose client speaks first: its first bytes tell TLS from plain HTTP. */
async function openOpened(check: SniCheck, opened: Interceptor, entry: TunnelEntry, head: Buffer): Promise<void> {
  const { asked, socket, decision } = check
  socket.write(asked.answer.established)
  const first = await firstChunk(socket, head, asked.rt.limits().tunnelIdleTimeoutMs)
  if (first === undefined || closed(socket)) return void socket.destroy()
  if (!startsLikeTls(first)) return openTunnelFor(opened, entry, socket, first, decision, false)
  const hello = await checkSni(check, first)
  if (hello === undefined || closed(socket)) return void socket.destroy()
  return openTunnelFor(opened, entry, socket, hello.bytes, decision, hello.view.kind === 'hello')
}

/** A tunnel on a port not listed as TLS, admitted: TLS there gets the same SNI check, on the client's first bytes. */
interface SniCheck {
  readonly asked: Asked
  readonly socket: Socket
  readonly gate: Gate
  readonly target: Target
  readonly decision: Decision
  readonly resolved: readonly Ip[] | undefined
  /** its registration, which keeps what the hello said for reloads */
  readonly entry: TunnelEntry
}

async function checkSni(check: SniCheck, bytes: Buffer): Promise<Hello | undefined> {
  const { asked, socket, gate, target, decision, resolved } = check
  const hello = await readHello(socket, bytes, gate.ctx.tls.helloTimeoutMs)
  if (hello === undefined) return undefined
  check.entry.hello = hello.view
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

/**
 * TLS port: answer first, then decide on the ClientHello the client sends next, under the rules in
 * force by then. `entry` is the tunnel's registration, or undefined for a deferred one (admitted by its server name here).
 */
async function onTlsPort(asked: Asked, interceptor: Interceptor | undefined, who: ClientIdentity, socket: Socket, head: Buffer, target: Target, decision: Decision, entry: TunnelEntry | undefined): Promise<void> {
  const { rt, id } = asked
  socket.write(asked.answer.established)
  const hello = await readHello(socket, head, rt.gate(who).ctx.tls.helloTimeoutMs)
  if (hello === undefined) return logAsked(asked, target, decision, entry?.resolved, reply(400, 'http_request_error', 'client closed the tunnel before a ClientHello'))
  if (closed(socket)) return
  const sni = serverName(hello.view)
  const { gate, value: second } = await underCurrent(() => rt.gate(who), (g) => admitHello(g, target, decision, hello.view))
  if (second.kind === 'failed') {
    logAsked(asked, target, undefined, undefined, second.reply, sni)
    return void socket.destroy()
  }
  const resolved = second.resolved ?? entry?.resolved
  logAsked(asked, target, second.decision, resolved, undefined, sni)
  if (second.decision.verdict === 'deny' || closed(socket)) return void socket.destroy()
  const opened = interceptor && needsInterception(gate.policy, second.ruleTarget) ? interceptor : undefined
  const tunnel = entry ?? new TunnelEntry(rt, id, who, second.ruleTarget, resolved, 'pending', socket, asked.listener)
  tunnel.hello = hello.view
  if (opened) return openTunnelFor(opened, tunnel, socket, hello.bytes, second.decision, true)
  return openTunnel(rt, tunnel, socket, second.decision.dial, hello.bytes, undefined, undefined, laterHellos(hello))
}

/** The ClientHello's server name for the log: none for an empty one or no ClientHello. */
function serverName(view: HelloView): string | undefined {
  return view.kind === 'hello' ? view.sni || undefined : undefined
}

/** A relayed tunnel's held first chunk: the rest of the ClientHello is read, then passed on or the tunnel closed. */
function holdForSni(first: Buffer, held: Held, check: SniCheck): void {
  checkSni(check, first).then(
    (hello) => (hello === undefined ? held.close('TLS server name refused') : held.pass(hello.bytes, laterHellos(hello))),
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
 * Dials the checked addresses (or the parent proxy, for the name), sends what the client already sent, and relays. `answer`, when
 * the client is still to be told the tunnel is open (or, on failure, why not); undefined when it was told already.
 */
export async function openTunnel(rt: Runtime, entry: TunnelEntry, socket: Socket, addresses: readonly Ip[], first: Buffer, answer: TunnelAnswer | undefined, screen?: Screen, inspect?: Inspect): Promise<void> {
  const { id, target } = entry
  entry.carries = 'relayed'
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
    return answer ? answer.refuse(socket, error.reply) : void socket.destroy()
  }
  if (socket.destroyed) return void upstream.destroy()
  if (inspect && !inspect(first)) {
    upstream.destroy()
    return void socket.destroy()
  }
  if (answer) socket.write(answer.established)
  if (first.length > 0) upstream.write(first)
  socket.off('error', destroySocket)
  const tunnel = relay(socket, upstream, limits, (stats) => {
    // formatted only now: upstream.remoteAddress would keep a peer-name object on the socket for the tunnel's life;
    // without the parent's handshake bytes
    const { bytesFromClient, bytesToClient, durationMs, error } = stats
    rt.record(tunnelClosed(id, dialed && formatIp(dialed), bytesFromClient - handshake.sent, bytesToClient - handshake.received, durationMs, error, parent?.hop, entry.listener))
  }, screen, inspect)
  entry.closeWith((reason) => tunnel.close(reason))
}

/** Hands a tunnel whose rules limit methods or paths to the interceptor, pinned to the checked IP. */
export function openTunnelFor(interceptor: Interceptor, entry: TunnelEntry, socket: Socket, first: Buffer, decision: Decision, tls: boolean): Promise<void> {
  const ip = decision.dial[0]
  if (ip === undefined) throw new Error('allowed decision without an address')
  entry.carries = 'opened'
  return interceptor.open({ entry, socket, first, ip, tls })
}
