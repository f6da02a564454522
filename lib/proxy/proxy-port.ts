// The proxy port's connections, before node:http: a connection whose first chunk is a whole CONNECT
// head in the plain form (connect-head.ts) is routed at once, without node:http's parser, request
// object and connection bookkeeping (about a quarter of a tunnel's CPU). Every other connection goes
// to node:http's own connection listener with that chunk put back, and is answered as before. Until
// its first chunk, a connection is held to node:http's rules for a silent client: the header timeout
// (408), an error, or the client's end.
import type { Server } from 'node:http'
import type { Socket } from 'node:net'
import { LinkedSet } from './linked-set.js'
import { readConnectHead, type RequestHead } from './connect-head.js'

export interface PortHooks {
  /** what node:http's 'connect' event does */
  connect(head: RequestHead, socket: Socket, rest: Buffer): void
  /** what node:http's 'clientError' event does */
  clientError(error: NodeJS.ErrnoException, socket: Socket): void
  /** false: every connection goes to node:http (the transparent listeners' connections, and tests) */
  fast(socket: Socket): boolean
  /** limits.maxHeaderBytes, as node:http's server has it */
  maxHeaderBytes(): number
}

export interface ProxyPort {
  /**
   * Closes the connections that have sent nothing yet, after `graceMs`: one accepted just before the
   * listener closed may have its request on the way, and is answered (with Connection: close) if it comes.
   */
  closeIdle(graceMs: number): void
}

/** A connection waiting for its first chunk, and since when (the header timeout's sweep reads it). */
interface Wait {
  readonly socket: Socket
  readonly since: number
}
const WAIT = Symbol('waiting for a first chunk')
type Waiting = Socket & { [WAIT]?: Wait | undefined }

function noop(): void {}

/** readableFlowing is writable on every Node line, though typed read-only */
function stopFlow(stream: { readableFlowing: boolean | null }): void {
  stream.readableFlowing = null
}

/**
 * Takes over `server`'s 'connection' event: node:http's listener (the only one, as every Node line
 * registers it in the constructor) is kept and called for what goes to node:http.
 */
export function takeProxyPort(server: Server, hooks: PortHooks, checkEveryMs: number): ProxyPort {
  const listeners = server.listeners('connection')
  const toHttp = listeners[0] as ((this: Server, socket: Socket) => void) | undefined
  if (listeners.length !== 1 || toHttp === undefined) throw new Error(`node:http registers ${listeners.length} connection listeners, expected 1`)
  server.removeListener('connection', toHttp)
  const waiting = new LinkedSet<Wait>()

  function release(socket: Waiting): void {
    socket.removeListener('data', onFirst)
    socket.removeListener('end', onEnd)
    socket.removeListener('error', onError)
    const wait = socket[WAIT]
    if (wait) waiting.delete(wait)
    socket[WAIT] = undefined
  }
  /** as node:http's socketOnError: further errors ignored, then 'clientError' */
  function failed(socket: Socket, error: NodeJS.ErrnoException): void {
    socket.on('error', noop)
    hooks.clientError(error, socket)
  }
  function onFirst(this: Waiting, chunk: Buffer): void {
    release(this)
    // stops the flow where node:http stops it for a CONNECT (readableFlowing null): its listener, or the route, starts it again
    stopFlow(this)
    const head = readConnectHead(chunk, hooks.maxHeaderBytes(), this)
    if (head === undefined) {
      this.unshift(chunk)
      return toHttp?.call(server, this)
    }
    hooks.connect(head, this, chunk.subarray(head.end))
  }
  function onEnd(this: Waiting): void {
    release(this)
    this.end() // as node:http answers an end before any byte
  }
  function onError(this: Waiting, error: Error): void {
    release(this)
    failed(this, error)
  }
  function sweep(): void {
    const timeout = server.headersTimeout
    if (timeout <= 0 || waiting.size === 0) return
    const now = performance.now()
    for (const { socket, since } of waiting) {
      if (now - since <= timeout) continue
      release(socket)
      failed(socket, Object.assign(new Error('Request timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }))
    }
  }
  let sweeper: NodeJS.Timeout | undefined
  server.on('listening', () => (sweeper = setInterval(sweep, checkEveryMs).unref()))
  server.on('close', () => clearInterval(sweeper))

  server.on('connection', (socket: Waiting) => {
    if (!hooks.fast(socket)) return toHttp.call(server, socket)
    const wait: Wait = { socket, since: performance.now() }
    socket[WAIT] = wait
    waiting.add(wait)
    socket.on('data', onFirst)
    socket.on('end', onEnd)
    socket.on('error', onError)
  })
  return {
    closeIdle: (graceMs) => {
      if (waiting.size === 0) return
      setTimeout(() => {
        for (const { socket } of [...waiting]) {
          release(socket)
          socket.destroy()
        }
      }, graceMs).unref()
    },
  }
}
