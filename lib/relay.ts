// Moves bytes both ways between two sockets until both directions end.
//   'data' -> other.write (source paused until the other's 'drain') | 'end' -> other.end() | reset -> reset | error -> both destroyed
// Idle and over-age tunnels are closed by one shared sweep timer rather than timers of their own.
import type { Socket } from 'node:net'

export interface RelayStats {
  readonly bytesFromClient: number
  readonly bytesToClient: number
  readonly durationMs: number
  readonly error: string | undefined
}

export interface RelayOptions {
  readonly idleTimeoutMs: number
  readonly maxLifetimeMs: number
}

export interface Relay {
  /** tears the tunnel down; `reason` is reported as its error */
  close(reason: string): void
}

class Tunnel implements Relay {
  readonly started = Date.now()
  lastActive = this.started
  error: string | undefined
  closed = 0

  constructor(
    readonly client: Socket,
    readonly upstream: Socket,
    readonly options: RelayOptions,
    readonly done: (stats: RelayStats) => void,
  ) {}

  close(reason: string): void {
    this.error ??= reason
    this.client.destroy()
    this.upstream.destroy()
  }

  /** one socket has closed; the tunnel is over when both have */
  sideClosed(other: Socket, hadError: boolean): void {
    if (hadError) other.destroy()
    else other.destroySoon()
    if (++this.closed < 2) return
    unwatch(this)
    const { upstream } = this
    this.done({ bytesFromClient: upstream.bytesWritten, bytesToClient: upstream.bytesRead, durationMs: Date.now() - this.started, error: this.error })
  }
}

export function relay(client: Socket, upstream: Socket, options: RelayOptions, done: (stats: RelayStats) => void): Relay {
  const tunnel = new Tunnel(client, upstream, options, done)
  wire(tunnel, client, upstream, 'client')
  wire(tunnel, upstream, client, 'upstream')
  watch(tunnel)
  return tunnel
}

/** Relays one direction, from → to. */
function wire(tunnel: Tunnel, from: Socket, to: Socket, side: 'client' | 'upstream'): void {
  from.on('data', (chunk: Buffer) => {
    tunnel.lastActive = Date.now()
    if (!to.write(chunk)) from.pause()
  })
  to.on('drain', () => from.resume())
  from.on('end', () => to.end())
  if (from.readableEnded) to.end() // e.g. a FIN right behind the CONNECT head
  from.on('error', (e: NodeJS.ErrnoException) => {
    // a reset is passed on as a reset: a plain FIN would let the peer take a cut-off stream as complete
    if (e.code === 'ECONNRESET' && !to.destroyed) to.resetAndDestroy()
    tunnel.close(`${side} ${e.code ?? e.message}`)
  })
  from.on('close', (hadError: boolean) => tunnel.sideClosed(to, hadError))
  // the route may have paused it while deciding; a 'data' listener alone does not resume a paused stream
  from.resume()
}

// ---- the sweep: idle and lifetime limits for all open tunnels ----------------------------

const watched = new Set<Tunnel>()
let sweeper: NodeJS.Timeout | undefined
let sweepEveryMs = Infinity

/**
 * A tunnel is closed between its limit and one sweep period later, so the period follows the
 * smallest limit seen (a quarter of it, at most a second) until no tunnel is left.
 */
function watch(tunnel: Tunnel): void {
  watched.add(tunnel)
  const wanted = Math.min(1_000, Math.max(1, Math.min(tunnel.options.idleTimeoutMs, tunnel.options.maxLifetimeMs) / 4))
  if (wanted >= sweepEveryMs) return
  clearInterval(sweeper)
  sweepEveryMs = wanted
  sweeper = setInterval(sweep, wanted).unref()
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
  for (const tunnel of watched) {
    if (now - tunnel.started >= tunnel.options.maxLifetimeMs) tunnel.close('tunnel reached its maximum lifetime')
    else if (now - tunnel.lastActive >= tunnel.options.idleTimeoutMs) tunnel.close('tunnel idle timeout')
  }
}
