// CONNECT tunnels.
//   other ports: client --CONNECT host:port--> check head -> parse -> admit -> dial checked IP -> 200 -> relay
//                (the client's first chunk opens a ClientHello? held until its SNI is checked as on TLS ports)
//   TLS ports:   client --CONNECT host:port--> check head -> parse -> admit -> 200 -> ClientHello (SNI) -> admit again -> dial -> relay
//   rules with methods/paths: ... -> 200 [-> ClientHello] -> interceptor (intercept.ts); on other ports
//                the first byte tells TLS from plain HTTP
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { checkRequestHead } from './checks.js'
import { dial, DialFailure } from '../net/dial.js'
import { admit, admitHello, type Admission } from '../net/gate.js'
import { formatIp, type Ip } from '../policy/ip.js'
import type { ClientIdentity } from '../policy/clients.js'
import type { Interceptor } from './intercept.js'
import { defersToSni, isTlsPort, needsInterception, type Decision, type HelloView } from '../policy/decide.js'
import { relay, upstreamReads, type Held, type Screen } from './relay.js'
import { denial, destroySocket, replyOnSocket } from './respond.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { logDecision, type OpenConnection, type Runtime } from './runtime.js'
import { parseAuthority, type Target } from '../policy/target.js'
import { parentFor } from '../net/upstream.js'
import { parseClientHello, startsLikeTls } from '../policy/tls-hello.js'

const ESTABLISHED = 'HTTP/1.1 200 Connection established\r\n\r\n'
/** far above any real ClientHello (post-quantum key shares included) */
const MAX_HELLO_BYTES = 32 * 1024

export async function connectRoute(rt: Runtime, interceptor: Interceptor | undefined, who: ClientIdentity, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
  const id = rt.nextId()
  const rawTarget = req.url ?? ''
  const parsed = parseAuthority(rawTarget)
  const gate = rt.gate(who)
  const log = (fields: { decision?: Decision; resolved?: readonly Ip[] | undefined; reply?: ProxyReply; sni?: string }, target = parsed.ok ? parsed.value : undefined) =>
    logDecision(rt, { id, req, method: 'CONNECT', target, rawTarget, policy: gate.policyName, ...fields })
  const refuse = (r: ProxyReply): void => {
    log({ reply: r })
    replyOnSocket(socket, r)
  }
  const problem = checkRequestHead(req, rt.limits())
  if (problem) return refuse(problem)
  if (!parsed.ok) return refuse(reply(400, 'http_request_error', `bad CONNECT target: ${parsed.error}`))
  const target = parsed.value
  const admission = await admit(gate, target)
  if (admission.kind === 'failed') return refuse(admission.reply)
  const { decision, resolved } = admission
  const deferred = defersToSni(gate.ctx, target, decision)
  if (decision.verdict === 'deny' && !deferred) {
    log({ decision, resolved })
    return replyOnSocket(socket, denial('CONNECT', rawTarget, decision))
  }
  const opened = interceptor && needsInterception(gate.policy, target) ? interceptor : undefined
  if (!isTlsPort(gate.ctx, target.port)) {
    log({ decision, resolved })
    // TLS on a port not listed as TLS gets the same SNI check, on the client's first bytes
    const checkSni = async (bytes: Buffer): Promise<Hello | undefined> => {
      const hello = await readHello(socket, bytes, gate.ctx.tls.helloTimeoutMs)
      if (hello === undefined) return undefined
      // not a ClientHello after all (a TLS server would refuse it too): passed on as non-TLS bytes, as before; an oversized one is not
      if (hello.view.kind === 'malformed' && hello.bytes.length < MAX_HELLO_BYTES) return hello
      const sni = hello.view.kind === 'hello' ? hello.view.sni : undefined
      const second = await admitHello(gate, target, decision, hello.view)
      if (second.kind === 'failed') {
        log({ reply: second.reply, ...(sni ? { sni } : {}) })
        return undefined
      }
      // logged again only when the ClientHello changed the decision (a denial, or report mode's wouldDeny)
      if (second.decision !== decision) log({ decision: second.decision, resolved, ...(sni ? { sni } : {}) })
      return second.decision.verdict === 'deny' ? undefined : hello
    }
    if (!opened) {
      if (head.length > 0 && startsLikeTls(head)) {
        // a ClientHello sent along with the CONNECT: checked before dialling
        const hello = await checkSni(head)
        if (hello === undefined) return void socket.destroy()
        return openTunnel(rt, id, socket, target, decision.dial, resolved ?? decision.dial, hello.bytes, true, who)
      }
      // the upstream is dialled first and relayed at once (server-first protocols: SSH, SMTP); only the client's first chunk is looked at
      const screen: Screen | undefined = head.length > 0 ? undefined : (first, held) => {
        if (!startsLikeTls(first)) return false
        holdForSni(socket, first, held, checkSni)
        return true
      }
      return openTunnel(rt, id, socket, target, decision.dial, resolved ?? decision.dial, head, true, who, screen)
    }
    socket.write(ESTABLISHED)
    // an opened tunnel carries HTTP, whose client speaks first: its first byte tells TLS from plain HTTP
    const first = await firstChunk(socket, head, rt.limits().tunnelIdleTimeoutMs)
    if (first === undefined) return void socket.destroy()
    if (!startsLikeTls(first)) return openTunnelFor(opened, id, socket, first, target, decision, resolved, false, who)
    const hello = await checkSni(first)
    if (hello === undefined) return void socket.destroy()
    return openTunnelFor(opened, id, socket, hello.bytes, target, decision, resolved, true, who)
  }

  // TLS port: answer first, then decide on the ClientHello the client sends next
  socket.write(ESTABLISHED)
  const hello = await readHello(socket, head, gate.ctx.tls.helloTimeoutMs)
  if (hello === undefined) return log({ decision, resolved, reply: reply(400, 'http_request_error', 'client closed the tunnel before a ClientHello') })
  const sni = hello.view.kind === 'hello' ? hello.view.sni : undefined
  const second: Admission & { ruleTarget: Target } = await admitHello(gate, target, decision, hello.view)
  if (second.kind === 'failed') {
    log({ reply: second.reply, ...(sni ? { sni } : {}) })
    return void socket.destroy()
  }
  log({ decision: second.decision, resolved: second.resolved ?? resolved, ...(sni ? { sni } : {}) })
  if (second.decision.verdict === 'deny') return void socket.destroy()
  if (interceptor && needsInterception(gate.policy, second.ruleTarget)) {
    return openTunnelFor(interceptor, id, socket, hello.bytes, second.ruleTarget, second.decision, second.resolved ?? resolved, true, who)
  }
  return openTunnel(rt, id, socket, second.ruleTarget, second.decision.dial, second.resolved ?? resolved ?? second.decision.dial, hello.bytes, false, who)
}

interface Hello {
  readonly bytes: Buffer
  readonly view: HelloView
}

/** A relayed tunnel's held first chunk: the rest of the ClientHello is read, then passed on or the tunnel closed. */
function holdForSni(socket: Socket, first: Buffer, held: Held, check: (bytes: Buffer) => Promise<Hello | undefined>): void {
  socket.resume() // before readHello: it may finish at once and pause the socket again
  check(first).then(
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

/** Buffers what the client sends until a whole ClientHello (or proof there is none) is in. */
export function readHello(socket: Socket, head: Buffer, timeoutMs: number): Promise<Hello | undefined> {
  return new Promise((resolve) => {
    let bytes = head
    let settled = false
    const finish = (view: HelloView | undefined): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('close', onClose)
      socket.pause()
      resolve(view ? { bytes, view } : undefined)
    }
    const inspect = (): void => {
      const result = parseClientHello(bytes, MAX_HELLO_BYTES)
      if (result.kind === 'hello') finish({ kind: 'hello', sni: result.sni })
      else if (result.kind !== 'need-more') finish(result)
    }
    const onData = (chunk: Buffer): void => {
      bytes = bytes.length === 0 ? chunk : Buffer.concat([bytes, chunk]) // a ClientHello mostly comes in one piece
      inspect()
    }
    const onClose = (): void => finish(undefined)
    const timer = setTimeout(() => finish({ kind: 'timeout' }), timeoutMs)
    socket.on('data', onData)
    socket.once('close', onClose)
    if (bytes.length > 0) inspect()
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
    rt.record({ type: 'closed', id, kind: 'tunnel', chosen: dialed && formatIp(dialed), bytesFromClient: bytesFromClient - handshake.sent, bytesToClient: bytesToClient - handshake.received, durationMs, error, via: parent?.hop })
  }, screen)
  rt.open.add(open)
}

/** Hands a tunnel whose rules limit methods or paths to the interceptor, pinned to the checked IP. */
export function openTunnelFor(interceptor: Interceptor, id: string, socket: Socket, first: Buffer, target: Target, decision: Decision, resolved: readonly Ip[] | undefined, tls: boolean, who: ClientIdentity): Promise<void> {
  const ip = decision.dial[0]
  if (ip === undefined) throw new Error('allowed decision without an address')
  return interceptor.open({ id, socket, first, target, ip, resolved: resolved ?? decision.dial, tls, who })
}
