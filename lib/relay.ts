// Moves bytes both ways between two sockets until both directions end: half-close is passed on,
// a reset or error tears down both, and idle or over-age tunnels are closed.
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

export function relay(client: Socket, upstream: Socket, options: RelayOptions, done: (stats: RelayStats) => void): Relay {
  const started = Date.now()
  let error: string | undefined
  let closed = 0
  const close = (reason: string): void => {
    error ??= reason
    client.destroy()
    upstream.destroy()
  }
  const lifetime = setTimeout(() => close('tunnel reached its maximum lifetime'), options.maxLifetimeMs)
  lifetime.unref()
  const onClose = (other: Socket) => (hadError: boolean) => {
    if (hadError) other.destroy()
    else other.destroySoon()
    if (++closed < 2) return
    clearTimeout(lifetime)
    done({ bytesFromClient: upstream.bytesWritten, bytesToClient: upstream.bytesRead, durationMs: Date.now() - started, error })
  }
  for (const [socket, other, side] of [[client, upstream, 'client'], [upstream, client, 'upstream']] as const) {
    socket.on('error', (e: NodeJS.ErrnoException) => {
      // a reset is passed on as a reset: a plain FIN would let the peer take a cut-off stream as complete
      if (e.code === 'ECONNRESET' && !other.destroyed) other.resetAndDestroy()
      close(`${side} ${e.code ?? e.message}`)
    })
    socket.on('close', onClose(other))
  }
  client.setTimeout(options.idleTimeoutMs, () => close('tunnel idle timeout'))
  client.pipe(upstream)
  upstream.pipe(client)
  return { close }
}
