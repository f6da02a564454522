// A SOCKS5 listener: reads each client's handshake (socks/parse.ts) within limits.headerTimeoutMs
// and MAX_HANDSHAKE_BYTES, authenticates it as proxy Basic auth is (auth.ts: the same users, cache
// and lockout), and hands the request to route-socks.ts. Bytes that are no SOCKS5 greeting close the
// connection at once, logged once per client address.
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { LRUCache } from 'lru-cache'
import type { Listen } from '../rules/config.js'
import { parseIp } from '../policy/ip.js'
import type { ClientIdentity } from '../policy/clients.js'
import type { SelfAddress } from '../policy/decide.js'
import type { Authenticator } from './auth.js'
import { destroySocket } from './respond.js'
import { selfAddresses } from '../net/self.js'
import { reply, type ProxyReply } from '../core/reply.js'
import { logDecision, type Runtime } from './runtime.js'
import { endWithCode, type SocksRequest } from './route-socks.js'
import { credentialsReply, MAX_HANDSHAKE_BYTES, METHOD, methodReply, parseCredentials, parseGreeting, parseRequest, REPLY, type Bad, type RequestStep } from '../socks/parse.js'

/** What a SOCKS listener needs from the proxy it belongs to. */
export interface SocksServe {
  readonly rt: Runtime
  /** proxy authentication, when the rules have "auth" */
  auth(): Authenticator | undefined
  /** true when the proxy holds as many connections as limits.maxConnections allows */
  full(): boolean
  /** each accepted connection, for drain and shutdown (the proxy's own socket registry) */
  track(socket: Socket): void
  /** runs the route for a request read in full; an error in it closes the connection, never the process */
  route(who: ClientIdentity, socket: Socket, request: SocksRequest, head: Buffer): void
}

export interface SocksListener {
  /** binds; rejects naming the address when it cannot */
  listen(): Promise<void>
  /** where it listens (port 0 resolved) */
  address(): AddressInfo
  /** the addresses that reach it: a destination never allowed */
  self(): SelfAddress[]
  /** stops accepting; resolves once every connection accepted has closed */
  close(): Promise<void>
}

/** Client addresses told about once when they send no SOCKS5: bounded whatever connects. */
const NOT_SOCKS_LOGGED = 1_000

/** A SOCKS5 listener on `listen` (the "socks" section, or the sandbox's address) serving `serve`'s proxy. */
export function createSocksListener(listen: Listen, serve: SocksServe): SocksListener {
  const logged = new LRUCache<string, true>({ max: NOT_SOCKS_LOGGED })
  const notSocks = (socket: Socket, why: Bad): void => {
    socket.destroy()
    const source = socket.remoteAddress ?? '?'
    if (logged.has(source)) return
    logged.set(source, true)
    serve.rt.log.warn('not a SOCKS5 client: connection closed (logged once per client address)', { listener: 'socks', client: source, reason: why.reason })
  }
  const server: Server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    socket.on('error', destroySocket)
    if (serve.full()) return void socket.destroy()
    serve.track(socket)
    handshake(serve, socket, notSocks)
  })
  return {
    listen: () =>
      new Promise((resolve, reject) => {
        const fail = (error: Error): void => reject(new Error(`SOCKS listener ${listen.host}:${listen.port}: ${error.message}`))
        server.once('error', fail)
        server.listen(listen.port, listen.host, () => {
          server.off('error', fail)
          resolve()
        })
      }),
    address: () => server.address() as AddressInfo,
    self: () => selfAddresses(server.address() as AddressInfo),
    close: () => new Promise((resolve) => (server.listening ? server.close(() => resolve()) : resolve())),
  }
}

type Phase = 'greeting' | 'credentials' | 'request' | 'waiting'

/** Reads greeting, credentials and request as they arrive, within the handshake timeout and size limit. */
function handshake(serve: SocksServe, socket: Socket, notSocks: (socket: Socket, why: Bad) => void): void {
  const { rt } = serve
  let buffered: Buffer = Buffer.alloc(0)
  let phase: Phase = 'greeting'
  let user: string | undefined
  /** the accepted login as a Basic header, checked again when the request comes (never logged) */
  let credentials: string | undefined
  const source = socket.remoteAddress ?? ''
  let done = false
  const stop = (): void => {
    done = true
    clearTimeout(timer)
    socket.off('data', onData)
    socket.off('end', onEnd)
  }
  const timer = setTimeout(() => {
    stop()
    logRefusal(rt, socket, reply(408, 'http_request_error', `SOCKS handshake not complete within ${rt.limits().headerTimeoutMs} ms (limits.headerTimeoutMs)`))
    socket.destroy()
  }, rt.limits().headerTimeoutMs)
  const fail = (why: Bad): void => {
    stop()
    if (phase === 'greeting') return notSocks(socket, why)
    logRefusal(rt, socket, reply(400, 'http_request_error', `bad SOCKS5 ${phase === 'waiting' ? 'handshake' : phase}: ${why.reason}`))
    socket.destroy()
  }
  const step = (): void => {
    if (phase === 'greeting') {
      const greeting = parseGreeting(buffered)
      if (greeting.kind !== 'greeting') return greeting.kind === 'bad' ? fail(greeting) : undefined
      buffered = buffered.subarray(greeting.length)
      const method = serve.auth() ? METHOD.password : METHOD.none
      if (!greeting.methods.includes(method)) {
        stop()
        const wanted = method === METHOD.password ? 'username/password (the rules have "auth")' : 'no authentication'
        logRefusal(rt, socket, reply(407, 'http_request_denied', `the SOCKS5 client offers no acceptable method: proxy-gate takes ${wanted}`))
        return endWith(socket, methodReply(METHOD.unacceptable))
      }
      socket.write(methodReply(method))
      phase = method === METHOD.password ? 'credentials' : 'request'
      return step()
    }
    if (phase === 'credentials') {
      const given = parseCredentials(buffered)
      if (given.kind !== 'credentials') return given.kind === 'bad' ? fail(given) : undefined
      buffered = buffered.subarray(given.length)
      phase = 'waiting'
      return void login(given.user, given.password)
    }
    if (phase === 'request') {
      const request = parseRequest(buffered)
      if (request.kind === 'need-more') return
      if (request.kind === 'bad') return fail(request)
      stop()
      // a reload since the greeting may have added "auth": checked as a CONNECT head is, when complete
      if (user === undefined && serve.auth()) {
        logRefusal(rt, socket, reply(407, 'http_request_denied', 'the rules ask for a login since this SOCKS5 client was greeted without one: connect again'))
        return endWithCode(socket, REPLY.notAllowed)
      }
      socket.pause()
      // a reload since the login may have removed the user or changed its password: asked again, as a CONNECT head is (a cache hit when unchanged)
      if (credentials === undefined) return route(request)
      return void stillLoggedIn(credentials).then((ok) => {
        if (socket.destroyed) return
        if (ok) return route(request)
        logRefusal(rt, socket, reply(407, 'http_request_denied', 'the login of this SOCKS5 client is no longer accepted by the rules: connect again'))
        endWithCode(socket, REPLY.notAllowed)
      })
    }
  }
  const route = (request: Extract<RequestStep, { kind: 'request' | 'address-type' }>): void => {
    if (request.kind === 'address-type') {
      logRefusal(rt, socket, reply(400, 'http_request_error', `SOCKS5 address type 0x${request.addressType.toString(16).padStart(2, '0')} is not supported (IPv4, name and IPv6 are)`))
      return endWithCode(socket, REPLY.addressNotSupported)
    }
    serve.route({ source: parseIp(source), user }, socket, request, buffered.subarray(request.length))
  }
  /** the login checked again under the rules in force now; rules without "auth" any more take the client as anyone */
  const stillLoggedIn = async (header: string): Promise<boolean> => {
    const auth = serve.auth()
    if (!auth) {
      user = undefined
      return true
    }
    const result = await auth.check(header, source)
    return result.ok && result.user === user
  }
  /** RFC 1929 credentials, checked as a Proxy-Authorization header would be: the same users, cache and lockout. */
  const login = async (name: string, password: string): Promise<void> => {
    const auth = serve.auth()
    // a name with a colon is no user (rules/auth.ts) and would split differently in a Basic header
    const header = `Basic ${Buffer.from(`${name}:${password}`).toString('base64')}`
    const result = auth && !name.includes(':') ? await auth.check(header, source) : undefined
    if (socket.destroyed) return
    if (!result?.ok) {
      stop()
      logRefusal(rt, socket, result?.reply ?? reply(407, 'http_request_denied', 'proxy credentials not accepted'))
      return endWith(socket, credentialsReply(false))
    }
    user = result.user
    credentials = header
    socket.write(credentialsReply(true))
    phase = 'request'
    socket.resume()
    step()
  }
  // the handshake's messages together are far shorter than the limit: a client that sends more is no SOCKS5 client
  const onData = (chunk: Buffer): void => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk])
    if (phase !== 'waiting') step()
    if (done || buffered.length <= MAX_HANDSHAKE_BYTES) return
    // what comes while the login is checked may be the request and the tunnel's first bytes (a ClientHello with a
    // post-quantum key share is 1.7 KB): held back, and read once the login is through
    if (phase === 'waiting') return void socket.pause()
    fail({ kind: 'bad', reason: `more than ${MAX_HANDSHAKE_BYTES} bytes before the handshake is complete` })
  }
  // a client that stops sending mid-handshake can never complete it
  const onEnd = (): void => {
    stop()
    socket.destroy()
  }
  socket.on('data', onData)
  socket.once('end', onEnd)
  socket.once('close', () => clearTimeout(timer))
}

/** The last answer: written, then the connection closed (not left half-open for the client to hold). */
function endWith(socket: Socket, bytes: Buffer): void {
  socket.end(bytes)
  socket.destroySoon()
}

/** A decision line for a handshake refused before any destination was asked for. */
function logRefusal(rt: Runtime, socket: Socket, r: ProxyReply): void {
  logDecision(rt, { id: rt.nextId(), req: { socket }, method: 'CONNECT', target: undefined, rawTarget: '', reply: r, listener: 'socks' })
}
