// What every route needs from the running proxy: the current gate and limits (swapped on
// reload), the logger, request ids, and the registry of open connections that reload re-decides.
import type { Socket } from 'node:net'
import type { Limits } from '../rules/config.js'
import type { ClientIdentity } from '../policy/clients.js'
import type { Admitted, Gate } from '../net/gate.js'
import { formatIp, type Ip } from '../policy/ip.js'
import type { LinkedSet } from './linked-set.js'
import { logTypedEvent, type Logger } from '../core/log.js'
import type { Lookup } from '../net/resolve.js'
import { ruleLabel } from '../policy/rules.js'
import type { Decision, HelloView } from '../policy/decide.js'
import type { ProxyReply } from '../core/reply.js'
import { parentFor, type Upstream } from '../net/upstream.js'
import type { DnsRecord } from '../dns/answer.js'
import { formatTarget, targetForLog, type Target } from '../policy/target.js'

/**
 * A connection a reload re-decides, registered from the moment it is admitted (not when it
 * connects): a reload while it dials or waits for its first bytes reaches it too.
 */
export interface OpenConnection extends Admitted {
  readonly id: string
  readonly kind: 'tunnel' | 'forward' | 'upgrade'
  /** whose connection it is: a reload re-decides it under that client's policy */
  readonly who: ClientIdentity
  close(reason: string): void
}

/**
 * A tunnel in the registry from its admission until its client socket closes; its route says how
 * it carries bytes once that is known, and how to close it once it relays.
 */
export class TunnelEntry implements OpenConnection {
  readonly kind = 'tunnel'
  /** set once its first bytes were read as a ClientHello (or as plain bytes) */
  hello: HelloView | undefined
  private closer: ((reason: string) => void) | undefined

  constructor(
    rt: Runtime,
    readonly id: string,
    readonly who: ClientIdentity,
    readonly target: Target,
    readonly resolved: readonly Ip[] | undefined,
    public carries: 'pending' | 'relayed' | 'opened',
    private readonly socket: Socket,
    /** set for tunnels asked for on another listener than the proxy port: their closed lines say which */
    readonly listener?: Listener,
  ) {
    rt.open.add(this)
    socket.once('close', () => rt.open.delete(this))
  }

  close(reason: string): void {
    if (this.closer) this.closer(reason)
    else this.socket.destroy()
  }

  /** from now on closed through `closer` (a relay's, which reports the reason) */
  closeWith(closer: (reason: string) => void): void {
    this.closer = closer
  }
}

/** What observers may do with the open connections: count and list them. */
export type OpenView = Iterable<OpenConnection> & { readonly size: number }

/** One decision, as logged and as observers (metrics, learning) see it. */
export interface DecisionRecord {
  readonly id: string
  readonly client: string
  readonly method: string
  /** `host:port`, or the rejected request-target with any userinfo redacted */
  readonly target: string
  readonly resolved?: readonly string[] | undefined
  readonly chosen?: string | undefined
  readonly sni?: string | undefined
  readonly path?: string | undefined
  readonly intercepted?: boolean | undefined
  readonly decision: 'allow' | 'deny' | 'error'
  readonly rule?: string | undefined
  readonly reason?: string | undefined
  /** the secrets (names) whose placeholders it carried: put in as values, or refused */
  readonly secret?: string | undefined
  readonly detail?: string | undefined
  /** the rules.json entry that would allow it, for denials that have one */
  readonly suggestion?: string | undefined
  readonly status?: number | undefined
  readonly mode: string
  readonly policy?: string | undefined
  /** set for connections to a transparent (sandbox) listener, from clients that know no proxy, or to the SOCKS listener */
  readonly listener?: Listener | undefined
  readonly wouldDeny: boolean
}

/** A finished tunnel, forwarded request or upgraded connection. */
export interface ClosedRecord {
  readonly id: string
  readonly kind: OpenConnection['kind']
  readonly method?: string
  readonly intercepted?: boolean
  readonly chosen?: string | undefined
  /** the parent proxy (`host:port`) it went through, when "upstream" is set */
  readonly via?: string | undefined
  readonly status?: number
  readonly bytesFromClient?: number
  readonly bytesToClient?: number
  readonly durationMs: number
  readonly error?: string | undefined
  readonly listener?: Listener | undefined
}

/** How long a DNS lookup or an upstream connect took (for metrics; not logged). */
export interface TimingRecord {
  readonly what: 'dns' | 'connect'
  readonly ms: number
  readonly ok: boolean
}

/** The outcome of a rules reload, good or bad (the CLI logs it; observers count it). */
export interface ReloadRecord {
  readonly ok: boolean
  readonly trigger: string
  readonly errors?: readonly string[]
}

/** A `proxy-gate doctor` probe that proxy-gate answered itself (route-probe.ts). */
export interface ProbeRecord {
  readonly nonce: string
  readonly client: string
}

/** The listeners besides the proxy port a connection can come in on. */
export type Listener = 'transparent' | 'socks'

export type ProxyEvent =
  | ({ readonly type: 'decision' } & DecisionRecord)
  | ({ readonly type: 'closed' } & ClosedRecord)
  | ({ readonly type: 'timing' } & TimingRecord)
  | ({ readonly type: 'reload' } & ReloadRecord)
  /** a query to the sandbox's DNS server */
  | ({ readonly type: 'dns' } & DnsRecord)
  | ({ readonly type: 'probe' } & ProbeRecord)

export interface Runtime {
  /** the current gate; for a client, with the policy chosen for it */
  gate(who?: ClientIdentity): Gate
  limits(): Limits
  readonly log: Logger
  /** the open connections that reload and shutdown walk */
  readonly open: LinkedSet<OpenConnection>
  nextId(): string
  /** logs an event and hands it to observers */
  record(event: ProxyEvent): void
  /** the parent proxy allowed traffic leaves through (swapped on reload); undefined: direct */
  upstream?(): Upstream | undefined
}

/** Who is asking: a request, or `{ socket }` for a connection that sends none (transparent TLS). */
interface ClientOf {
  readonly socket: Socket
}

function clientAddress(req: ClientOf): string {
  const { remoteAddress, remotePort } = req.socket
  return `${remoteAddress ?? '?'}:${remotePort ?? '?'}`
}

interface DecisionLog {
  readonly id: string
  readonly req: ClientOf
  readonly method: string
  readonly target: Target | undefined
  readonly rawTarget: string
  readonly decision?: Decision
  readonly resolved?: readonly Ip[] | undefined
  readonly reply?: ProxyReply
  /** the TLS server name, for tunnels on TLS ports */
  readonly sni?: string | undefined
  /** the request path (no query), where rules limit paths */
  readonly path?: string
  /** true for requests read inside an opened (intercepted) tunnel */
  readonly intercepted?: boolean
  /** the name of the policy that decided it */
  readonly policy?: string
  readonly listener?: Listener | undefined
}

/** Marks the events built here (logDecision, tunnelClosed): their keys are in decisionJson's or closedJson's order. */
const IN_ORDER = Symbol('fields in order')
type DecisionEvent = Extract<ProxyEvent, { type: 'decision' }>
type ClosedEvent = Extract<ProxyEvent, { type: 'closed' }>

/** The address an allowed connection dials first; none when the parent proxy dials (it is sent the name and picks). */
function chosenFor(rt: Runtime, target: Target | undefined, decision: Decision | undefined): string | undefined {
  const first = decision?.verdict === 'allow' ? decision.dial[0] : undefined
  if (first === undefined || (target && parentFor(rt.upstream?.(), target))) return undefined
  return formatIp(first)
}

/** One JSON line per decision: who asked for what, what was resolved and chosen, and why. */
export function logDecision(rt: Runtime, entry: DecisionLog): void {
  const { decision, reply } = entry
  const event: DecisionEvent & { [IN_ORDER]: true } = {
    type: 'decision',
    id: entry.id,
    client: clientAddress(entry.req),
    method: entry.method,
    target: entry.target ? formatTarget(entry.target) : targetForLog(entry.rawTarget),
    resolved: entry.resolved?.map(formatIp),
    chosen: chosenFor(rt, entry.target, decision),
    sni: entry.sni,
    path: entry.path,
    intercepted: entry.intercepted,
    decision: decision?.verdict ?? 'error',
    rule: decision?.rule ? ruleLabel(decision.rule) : undefined,
    reason: decision?.reason ?? reply?.type,
    secret: decision?.secret,
    detail: reply?.details ?? decision?.detail,
    suggestion: decision?.verdict === 'deny' ? decision.suggestion : undefined,
    status: reply?.status,
    mode: rt.gate().ctx.mode,
    policy: entry.policy,
    listener: entry.listener,
    wouldDeny: decision?.wouldDeny ?? false,
    [IN_ORDER]: true, // JSON.stringify and decisionJson leave symbol keys out
  }
  rt.record(event)
}

/** True when JSON.stringify would escape nothing in `text`: no quote, backslash, control character or surrogate (lone ones are escaped). */
function plainText(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c < 0x20 || c === 0x22 || c === 0x5c || (c >= 0xd800 && c <= 0xdfff)) return false
  }
  return true
}

function jsonString(text: string): string {
  return plainText(text) ? `"${text}"` : JSON.stringify(text)
}

function jsonField(name: string, value: string | undefined): string {
  return value === undefined ? '' : `,"${name}":${jsonString(value)}`
}

/**
 * JSON.stringify(event) for a decision event logDecision built, written field by field: the generic
 * one serialises each of ~20 keys as a string and looks them all up (~13k instructions per line).
 */
export function decisionJson(e: DecisionEvent): string {
  if (!(IN_ORDER in e)) return JSON.stringify(e)
  const resolved = e.resolved === undefined ? '' : `,"resolved":[${e.resolved.map(jsonString).join(',')}]`
  const intercepted = e.intercepted === undefined ? '' : `,"intercepted":${String(e.intercepted)}`
  const status = e.status === undefined ? '' : `,"status":${JSON.stringify(e.status)}`
  return (
    `{"type":"decision","id":${jsonString(e.id)},"client":${jsonString(e.client)},"method":${jsonString(e.method)},"target":${jsonString(e.target)}` +
    `${resolved}${jsonField('chosen', e.chosen)}${jsonField('sni', e.sni)}${jsonField('path', e.path)}${intercepted},"decision":${jsonString(e.decision)}` +
    `${jsonField('rule', e.rule)}${jsonField('reason', e.reason)}${jsonField('secret', e.secret)}${jsonField('detail', e.detail)}${jsonField('suggestion', e.suggestion)}${status}` +
    `,"mode":${jsonString(e.mode)}${jsonField('policy', e.policy)}${jsonField('listener', e.listener)},"wouldDeny":${String(e.wouldDeny)}}`
  )
}

/** A relayed tunnel's closed event (route-connect.ts), in closedJson's key order. */
export function tunnelClosed(id: string, chosen: string | undefined, bytesFromClient: number, bytesToClient: number, durationMs: number, error: string | undefined, via: string | undefined, listener?: Listener): ClosedEvent {
  const event: ClosedEvent & { [IN_ORDER]: true } = { type: 'closed', id, kind: 'tunnel', chosen, bytesFromClient, bytesToClient, durationMs, error, via, listener, [IN_ORDER]: true }
  return event
}

function jsonNumber(name: string, value: number | undefined): string {
  if (value === undefined) return ''
  return `,"${name}":${Number.isFinite(value) ? String(value) : 'null'}`
}

/** JSON.stringify(event) for a closed event tunnelClosed built, field by field (see decisionJson). */
export function closedJson(e: ClosedEvent): string {
  if (!(IN_ORDER in e)) return JSON.stringify(e)
  return (
    `{"type":"closed","id":${jsonString(e.id)},"kind":${jsonString(e.kind)}${jsonField('chosen', e.chosen)}${jsonNumber('bytesFromClient', e.bytesFromClient)}` +
    `${jsonNumber('bytesToClient', e.bytesToClient)}${jsonNumber('durationMs', e.durationMs)}${jsonField('error', e.error)}${jsonField('via', e.via)}${jsonField('listener', e.listener)}}`
  )
}

/** Logs decisions, closes and DNS queries, and hands every event to the observer (timings and reloads only go there). */
export function createRecorder(log: Logger, observe: ((event: ProxyEvent) => void) | undefined): (event: ProxyEvent) => void {
  return (event) => {
    if (event.type === 'decision') logTypedEvent(log, event, decisionJson)
    else if (event.type === 'closed') logTypedEvent(log, event, closedJson)
    else if (event.type === 'dns' || event.type === 'probe') logTypedEvent(log, event)
    observe?.(event)
  }
}

/** A lookup that reports how long each resolution took. */
export function timedLookup(lookup: Lookup, record: (event: ProxyEvent) => void): Lookup {
  return async (name) => {
    const started = performance.now()
    let ok = false
    try {
      const addresses = await lookup(name)
      ok = true
      return addresses
    } finally {
      record({ type: 'timing', what: 'dns', ms: performance.now() - started, ok })
    }
  }
}
