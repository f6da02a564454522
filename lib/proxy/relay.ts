// Moves bytes both ways between two sockets until both directions end.
//   'data' -> other.write (source paused until the other's 'drain') | 'end' -> other.end() | reset -> reset | error -> both destroyed
// An upstream dialled with `upstreamReads` is read through it instead of 'data' (larger reads, one shared buffer).
// Idle and over-age tunnels are closed by one shared sweep timer rather than timers of their own.
import type { OnReadOpts, Socket } from 'node:net'
import type { Limits } from '../rules/config.js'
import { LinkedSet } from './linked-set.js'

export interface RelayStats {
  readonly bytesFromClient: number
  readonly bytesToClient: number
  readonly durationMs: number
  readonly error: string | undefined
}

/** the proxy's limits object is passed as is: one object per tunnel less */
export type RelayLimits = Pick<Limits, 'tunnelIdleTimeoutMs' | 'tunnelMaxLifetimeMs'>

export interface Relay {
  /** tears the tunnel down; `reason` is reported as its error */
  close(reason: string): void
}

/** A tunnel whose client bytes are held (see Screen): pass them on, or close it. */
export interface Held extends Relay {
  /** sends `bytes` (what was held) upstream and relays the client's bytes again, each chunk seen by `inspect` first */
  pass(bytes: Buffer, inspect?: Inspect): void
}

/** Sees every chunk the client sends before it is relayed; false closes the tunnel. */
export type Inspect = (chunk: Buffer) => boolean

/**
 * Sees the client's first chunk, and only that one. Returning a function holds it: nothing more from
 * the client is relayed (the upstream's bytes still are) until `held.pass` or `held.close`; the
 * function is called with the client socket unhooked and paused, and may read it itself from then on.
 */
export type Screen = (first: Buffer) => ((held: Held) => void) | undefined

/** Set on both sockets: the listeners below are shared by all tunnels and find theirs through it. */
const TUNNEL = Symbol('tunnel')

interface Wired extends Socket {
  readonly [TUNNEL]: Tunnel
}

class Tunnel implements Held {
  readonly started = Date.now()
  lastActive = this.started
  error: string | undefined
  closed = 0
  screen: Screen | undefined
  inspect: Inspect | undefined

  constructor(
    readonly client: Socket,
    readonly upstream: Socket,
    readonly limits: RelayLimits,
    readonly done: (stats: RelayStats) => void,
  ) {}

  peer(socket: Socket): Socket {
    return socket === this.client ? this.upstream : this.client
  }

  close(reason: string): void {
    this.error ??= reason
    this.client.destroy()
    this.upstream.destroy()
  }

  pass(bytes: Buffer, inspect?: Inspect): void {
    if (this.client.destroyed || this.upstream.destroyed) return
    this.inspect = inspect
    if (inspect && !inspect(bytes)) return this.close('a later TLS ClientHello in the tunnel names another server')
    this.lastActive = Date.now()
    const more = this.upstream.writableEnded || bytes.length === 0 || this.upstream.write(bytes)
    this.client.on('data', onData)
    if (more) this.client.resume() // else the upstream's 'drain' resumes it
  }

  failed(socket: Socket, e: NodeJS.ErrnoException): void {
    const other = this.peer(socket)
    // a reset is passed on as a reset: a plain FIN would let the peer take a cut-off stream as complete
    if (e.code === 'ECONNRESET' && !other.destroyed) other.resetAndDestroy()
    this.close(`${socket === this.client ? 'client' : 'upstream'} ${e.code ?? e.message}`)
  }

  /** one socket has closed; the tunnel is over when both have */
  sideClosed(socket: Socket, hadError: boolean): void {
    const other = this.peer(socket)
    if (hadError) other.destroy()
    else other.destroySoon()
    if (++this.closed < 2) return
    unwatch(this)
    const { upstream } = this
    this.done({ bytesFromClient: upstream.bytesWritten, bytesToClient: upstream.bytesRead, durationMs: Date.now() - this.started, error: this.error })
  }
}

export function relay(client: Socket, upstream: Socket, limits: RelayLimits, done: (stats: RelayStats) => void, screen?: Screen, inspect?: Inspect): Relay {
  const tunnel = new Tunnel(client, upstream, limits, done)
  tunnel.screen = screen
  tunnel.inspect = inspect
  wire(tag(client, tunnel))
  wire(tag(upstream, tunnel))
  watch(tunnel)
  return tunnel
}

function tag(socket: Socket, tunnel: Tunnel): Wired {
  // set in place: Object.assign would build an object per socket to copy it from
  const tagged = socket as Socket & { [TUNNEL]?: Tunnel }
  tagged[TUNNEL] = tunnel
  return tagged as Wired
}

// Module-level listeners (`this` is the socket that emitted): per-tunnel closures would cost
// ~600 bytes per idle tunnel.
function wire(from: Wired): void {
  from.on('data', onData)
  from.on('drain', onDrain)
  from.on('end', onEnd)
  from.on('error', onError)
  from.on('close', onClose)
  if (from.readableEnded) onEnd.call(from) // e.g. a FIN right behind the CONNECT head
  // the route may have paused it while deciding; a 'data' listener alone does not resume a paused stream
  from.resume()
}

function onData(this: Wired, chunk: Buffer): void {
  const tunnel = this[TUNNEL]
  tunnel.lastActive = Date.now()
  if (tunnel.screen !== undefined && this === tunnel.client) {
    const hold = tunnel.screen(chunk)
    tunnel.screen = undefined
    if (hold) {
      this.off('data', onData)
      this.pause()
      return hold(tunnel)
    }
  }
  if (tunnel.inspect !== undefined && this === tunnel.client && !tunnel.inspect(chunk)) return tunnel.close('a later TLS ClientHello in the tunnel names another server')
  if (!tunnel.peer(this).write(chunk)) this.pause()
}

const READ_BYTES = 256 * 1024

/**
 * For `dial`: the upstream's reads land in one buffer shared by every tunnel, and each is copied out (exactly the
 * bytes read) before the next read reuses it. Reads are larger than 'data' chunks (64 KiB) at no cost per tunnel; a
 * slow client holds at most one read beyond its socket's high-water mark.
 */
export const upstreamReads: OnReadOpts = { buffer: Buffer.allocUnsafe(READ_BYTES), callback: onRead }

/**
 * Large reads are copied into slabs that come back once written: at bulk rates a fresh buffer per read costs page
 * faults and garbage collections. Small reads get buffers of their own size (a slab held by a slow client for a
 * few bytes would waste it).
 */
const SLAB_FROM = 64 * 1024
const SPARE_SLABS = 16
const spareSlabs: Buffer[] = []

function onRead(this: Wired, bytes: number, buffer: Uint8Array): boolean {
  const tunnel = this[TUNNEL]
  tunnel.lastActive = Date.now()
  const read = buffer.subarray(0, bytes)
  // false stops the reads until the client's 'drain' resumes this socket
  if (bytes < SLAB_FROM) return tunnel.client.write(Buffer.from(read))
  const slab = spareSlabs.pop() ?? Buffer.allocUnsafeSlow(READ_BYTES)
  slab.set(read)
  // the callback runs once the socket is done with the bytes (written, or the write failed)
  return tunnel.client.write(slab.subarray(0, bytes), () => spareSlabs.length < SPARE_SLABS && spareSlabs.push(slab))
}

/** the other side may send again once this one has written out what it had (a slow reader is not idle) */
function onDrain(this: Wired): void {
  const tunnel = this[TUNNEL]
  tunnel.lastActive = Date.now()
  tunnel.peer(this).resume()
}

function onEnd(this: Wired): void {
  this[TUNNEL].peer(this).end()
}

function onError(this: Wired, e: NodeJS.ErrnoException): void {
  this[TUNNEL].failed(this, e)
}

function onClose(this: Wired, hadError: boolean): void {
  this[TUNNEL].sideClosed(this, hadError)
}

// ---- the sweep: idle and lifetime limits for all open tunnels ----------------------------

const watched = new LinkedSet<Tunnel>()
let sweeper: NodeJS.Timeout | undefined
let sweepEveryMs = Infinity

/**
 * A tunnel is closed between its limit and one sweep period later, so the period follows the
 * smallest limit of the open tunnels: a quarter of it, at most a second.
 */
function periodFor(limits: RelayLimits): number {
  return Math.min(1_000, Math.max(1, Math.min(limits.tunnelIdleTimeoutMs, limits.tunnelMaxLifetimeMs) / 4))
}

function sweepEvery(periodMs: number): void {
  if (periodMs === sweepEveryMs) return
  clearInterval(sweeper)
  sweepEveryMs = periodMs
  sweeper = setInterval(sweep, periodMs).unref()
}

function watch(tunnel: Tunnel): void {
  watched.add(tunnel)
  sweepEvery(Math.min(sweepEveryMs, periodFor(tunnel.limits)))
}

function unwatch(tunnel: Tunnel): void {
  watched.delete(tunnel)
  if (watched.size > 0) return
  clearInterval(sweeper)
  sweeper = undefined
  sweepEveryMs = Infinity
}

function sweep(): void {
  const now = Date.now()
  let wanted = Infinity
  for (const tunnel of watched) {
    if (now - tunnel.started >= tunnel.limits.tunnelMaxLifetimeMs) tunnel.close('tunnel reached its maximum lifetime')
    else if (now - tunnel.lastActive >= tunnel.limits.tunnelIdleTimeoutMs) tunnel.close('tunnel idle timeout')
    else wanted = Math.min(wanted, periodFor(tunnel.limits))
  }
  // the tunnels with the short limits have gone: slow down again
  if (wanted !== Infinity && wanted > sweepEveryMs) sweepEvery(wanted)
}
