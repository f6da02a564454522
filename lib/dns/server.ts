// The sandbox's DNS server: UDP and TCP (2-byte length framing) on sandbox.address:dns. It
// answers from the rules alone and never recurses, so no name a client asks for, allowed or
// denied, is ever sent on to another resolver. Nothing a client sends can throw out of a handler.
import { createSocket, type Socket as UdpSocket } from 'node:dgram'
import { createServer, type Server, type Socket } from 'node:net'
import type { Logger } from '../core/log.js'
import { formatIp, parseIp, type Ip } from '../policy/ip.js'
import { sandboxListener, type SandboxSettings } from '../rules/sandbox.js'
import { answer, type Asker, type DnsRecord, type DnsRules } from './answer.js'
import { MAX_TCP_MESSAGE, MAX_UDP_QUERY, parseQuery } from './message.js'
import { createRateLimiter } from './rate-limit.js'

export interface DnsHooks {
  /** the rules in force (swapped on reload) */
  readonly rules: () => DnsRules
  /** sandbox.dnsQueriesPerSecond in force; undefined: the rate the server started with */
  readonly queriesPerSecond: () => number | undefined
  /** a query answered: logged and observed */
  readonly record: (record: DnsRecord) => void
  /** a refusal over the rate limit after the first in a second: observed (counted), not logged */
  readonly observe: (record: DnsRecord) => void
  readonly log: Logger
}

export interface DnsServer {
  /** binds UDP, then TCP; rejects (with nothing left bound) when either cannot listen */
  listen(): Promise<void>
  close(): Promise<void>
}

/** A TCP connection that starts no query for this long after it opened or its last query is closed. */
const TCP_IDLE_MS = 10_000
/**
 * A query must arrive whole within this long of its first byte. Neither timer is pushed back by
 * bytes that trickle in: a byte every few seconds could otherwise hold a connection for ever.
 */
const TCP_QUERY_MS = 3_000
const TCP_MAX_CONNECTIONS = 256
/** TCP connections one client address may hold at once: one client cannot take every slot. */
const TCP_MAX_PER_CLIENT = 16
/** Answers a TCP client has not read: past this, it is disconnected rather than buffered for. */
const TCP_MAX_UNREAD = 64 * 1024

/** `ADDRESS:PORT` the sandbox DNS server listens on; undefined: none configured. */
export function dnsListener(sandbox: SandboxSettings | undefined): string | undefined {
  return sandbox?.dnsPort === undefined ? undefined : sandboxListener(sandbox, sandbox.dnsPort)
}

/** The client as the socket saw it: `remote` is its address as text, the rate limiter's key. */
type Client = Asker & { readonly remote: string }

function client(remote = '?', remotePort: number | undefined, transport: Asker['transport']): Client {
  return { source: parseIp(remote), remote, client: `${remote.includes(':') ? `[${remote}]` : remote}:${remotePort ?? '?'}`, transport }
}

function framed(response: Buffer): Buffer {
  const prefix = Buffer.alloc(2)
  prefix.writeUInt16BE(response.length, 0)
  return Buffer.concat([prefix, response])
}

function bindUdp(udp: UdpSocket, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    udp.once('error', reject)
    udp.bind({ port, address: host, exclusive: true }, () => {
      udp.removeListener('error', reject)
      resolve()
    })
  })
}

function listenTcp(tcp: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    tcp.once('error', reject)
    tcp.listen(port, host, () => {
      tcp.removeListener('error', reject)
      resolve()
    })
  })
}

/** The response to one message, or undefined when it is not answered. */
type Respond = (msg: Buffer, limit: number, who: Client) => Buffer | undefined

function safely(log: Logger, where: string, work: () => void, onError?: () => void): void {
  try {
    work()
  } catch (error) {
    log.error('internal error', { where, error: error instanceof Error ? error.stack : String(error) })
    onError?.()
  }
}

function createUdp(address: Ip, respond: Respond, log: Logger): UdpSocket {
  const udp = createSocket({ type: address.family === 4 ? 'udp4' : 'udp6' })
  udp.on('message', (msg, rinfo) =>
    safely(log, 'dns udp', () => {
      const response = respond(msg, MAX_UDP_QUERY, client(rinfo.address, rinfo.port, 'udp'))
      if (response) udp.send(response, rinfo.port, rinfo.address, () => undefined) // a client gone is no error
    }),
  )
  return udp
}

/** Answers every whole message in `pending`; returns what is left of the next one. */
function serveFrames(pending: Buffer, socket: Socket, who: Client, respond: Respond): Buffer {
  let rest = pending
  while (rest.length >= 2 && !socket.destroyed) {
    const length = rest.readUInt16BE(0)
    // a message longer than the limit is not buffered for: the stream is not DNS, or not wanted
    if (length > MAX_TCP_MESSAGE) {
      socket.destroy()
      break
    }
    if (rest.length < 2 + length) break
    const response = respond(rest.subarray(2, 2 + length), MAX_TCP_MESSAGE, who)
    rest = rest.subarray(2 + length)
    if (response) socket.write(framed(response))
    else socket.destroy() // a response, or too short for a header: not a DNS client
  }
  return rest
}

/**
 * How many TCP connections each client address holds: one past TCP_MAX_PER_CLIENT is refused,
 * with one warning until the client holds none again.
 */
function perClientCount(log: Logger): { take(remote: string): boolean; release(remote: string): void } {
  const held = new Map<string, number>()
  const warned = new Set<string>()
  return {
    take(remote) {
      const count = held.get(remote) ?? 0
      if (count < TCP_MAX_PER_CLIENT) {
        held.set(remote, count + 1)
        return true
      }
      if (!warned.has(remote)) log.warn('sandbox DNS: a client holds the most TCP connections allowed; its new ones are closed', { client: remote, limit: TCP_MAX_PER_CLIENT })
      warned.add(remote)
      return false
    },
    release(remote) {
      const count = (held.get(remote) ?? 1) - 1
      if (count > 0) return void held.set(remote, count)
      held.delete(remote)
      warned.delete(remote)
    },
  }
}

/** One connection: frames in, answers out, closed at the idle or query deadline (see TCP_QUERY_MS). */
function serveTcp(socket: Socket, respond: Respond, log: Logger): void {
  const who = client(socket.remoteAddress, socket.remotePort, 'tcp')
  let timer = setTimeout(() => socket.destroy(), TCP_IDLE_MS)
  const deadline = (ms: number): void => {
    clearTimeout(timer)
    timer = setTimeout(() => socket.destroy(), ms)
  }
  socket.on('close', () => clearTimeout(timer))
  let pending: Buffer = Buffer.alloc(0)
  socket.on('data', (chunk: Buffer) => {
    const work = (): void => {
      const before = pending.length
      pending = serveFrames(before === 0 ? chunk : Buffer.concat([pending, chunk]), socket, who, respond)
      const answered = before + chunk.length > pending.length
      // a query answered starts the idle wait, or the next query's deadline; the first byte of a query starts its deadline
      if (answered) deadline(pending.length > 0 ? TCP_QUERY_MS : TCP_IDLE_MS)
      else if (before === 0) deadline(TCP_QUERY_MS)
      if (socket.writableLength > TCP_MAX_UNREAD) socket.destroy()
    }
    safely(log, 'dns tcp', work, () => socket.destroy())
  })
}

function createTcp(respond: Respond, log: Logger): { readonly tcp: Server; readonly connections: Set<Socket> } {
  const connections = new Set<Socket>()
  const clients = perClientCount(log)
  const tcp = createServer({ noDelay: true }, (socket) => {
    socket.on('error', () => socket.destroy())
    const remote = socket.remoteAddress ?? '?'
    if (!clients.take(remote)) return void socket.destroy()
    connections.add(socket)
    socket.on('close', () => {
      connections.delete(socket)
      clients.release(remote)
    })
    serveTcp(socket, respond, log)
  })
  tcp.maxConnections = TCP_MAX_CONNECTIONS
  return { tcp, connections }
}

/** The DNS server for `sandbox`, or undefined when it has no DNS port. */
export function createSandboxDns(sandbox: SandboxSettings, hooks: DnsHooks): DnsServer | undefined {
  const port = sandbox.dnsPort
  if (port === undefined) return undefined
  const listener = sandboxListener(sandbox, port)
  const limiter = createRateLimiter(() => hooks.queriesPerSecond() ?? sandbox.dnsQueriesPerSecond)
  const respond: Respond = (msg, limit, who) => {
    const parsed = parseQuery(msg, limit)
    if (parsed.kind === 'drop') return undefined
    const take = limiter.take(who.remote, performance.now())
    const answered = answer(parsed, who, hooks.rules(), sandbox.address, take !== 'answer')
    if (take === 'refuse-quietly') hooks.observe(answered.record)
    else hooks.record(answered.record)
    return answered.response
  }
  const udp = createUdp(sandbox.address, respond, hooks.log)
  const { tcp, connections } = createTcp(respond, hooks.log)
  let listening = false
  const failed = (proto: string) => (error: unknown) => {
    throw new Error(`sandbox DNS server cannot listen on ${listener} (${proto}): ${error instanceof Error ? error.message : String(error)}`)
  }
  return {
    async listen() {
      const host = formatIp(sandbox.address)
      await bindUdp(udp, port, host).catch(failed('UDP'))
      await listenTcp(tcp, port, host).catch((error: unknown) => {
        udp.close()
        failed('TCP')(error)
      })
      listening = true
      udp.on('error', (error) => hooks.log.warn('sandbox DNS (UDP) socket error', { error: error.message }))
      hooks.log.info('sandbox DNS listening', { address: listener })
    },
    close: () =>
      new Promise((resolve) => {
        if (!listening) return resolve()
        listening = false
        for (const socket of connections) socket.destroy()
        tcp.close(() => udp.close(() => resolve()))
      }),
  }
}
