// The sandbox's transparent listeners: a TCP server on the sandbox address for each port in
// sandbox.http and sandbox.tls. HTTP connections go to the proxy's own HTTP server (one parser,
// one set of limits and timeouts), TLS connections to route-transparent.ts.
import { createServer, type Server, type Socket } from 'node:net'
import type { SelfAddress } from '../policy/decide.js'
import { formatIp } from '../policy/ip.js'
import { sandboxListener, type SandboxSettings } from '../rules/sandbox.js'
import type { TransparentListener } from './route-transparent.js'
import { destroySocket } from './respond.js'

export interface TransparentHandlers {
  http(socket: Socket): void
  tls(socket: Socket, listener: TransparentListener): void
}

export interface TransparentListeners {
  /** binds every port; on a failure closes what it bound and rejects, naming the address */
  listen(): Promise<void>
  /** where they listen: proxy-gate's own addresses, never a destination */
  readonly self: readonly SelfAddress[]
  /** the listener a connection came in on, for connections to transparent HTTP ports */
  httpListener(socket: Socket): TransparentListener | undefined
  setMaxConnections(max: number): void
  /** stops accepting; resolves once every connection accepted has closed */
  close(): Promise<void>
  /** ends what is still open (TLS connections not yet relaying are in no other registry) */
  destroyAll(): void
}

interface Bound {
  readonly server: Server
  readonly listener: TransparentListener
  readonly key: 'http' | 'tls'
}

/** True when both settings ask for the same listeners, SOCKS5's too (they are bound at start: a change needs a restart). */
export function sameListeners(a: SandboxSettings | undefined, b: SandboxSettings | undefined): boolean {
  const shape = (s: SandboxSettings | undefined): string => (s ? JSON.stringify([formatIp(s.address), s.httpPorts, s.tlsPorts, s.socksPort ?? false]) : '')
  return shape(a) === shape(b)
}

export function createTransparentListeners(sandbox: SandboxSettings, handlers: TransparentHandlers): TransparentListeners {
  const sockets = new Set<Socket>()
  const onHttp = new WeakMap<Socket, TransparentListener>()
  const make = (key: Bound['key'], port: number): Bound => {
    const listener = { address: sandboxListener(sandbox, port), port }
    const server = createServer((socket) => {
      sockets.add(socket)
      socket.once('close', () => sockets.delete(socket))
      if (key === 'tls') {
        socket.on('error', destroySocket)
        return handlers.tls(socket, listener)
      }
      onHttp.set(socket, listener)
      handlers.http(socket)
    })
    return { server, listener, key }
  }
  const bound = [...sandbox.httpPorts.map((p) => make('http', p)), ...sandbox.tlsPorts.map((p) => make('tls', p))]
  const host = formatIp(sandbox.address)
  const closeAll = async (): Promise<void> => {
    await Promise.all(bound.map(({ server }) => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve()))))
  }
  return {
    self: bound.map(({ listener }) => ({ ip: sandbox.address, port: listener.port })),
    httpListener: (socket) => onHttp.get(socket),
    async listen() {
      try {
        await Promise.all(bound.map((b) => listenOn(b, host)))
      } catch (error) {
        await closeAll()
        throw error
      }
    },
    setMaxConnections(max) {
      for (const { server } of bound) server.maxConnections = max
    },
    close: closeAll,
    destroyAll() {
      for (const socket of sockets) socket.destroy()
    },
  }
}

function listenOn({ server, listener, key }: Bound, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const fail = (error: Error): void => reject(new Error(`transparent listener ${listener.address} (sandbox.${key}): ${error.message}`))
    server.once('error', fail)
    server.listen(listener.port, host, () => {
      server.off('error', fail)
      resolve()
    })
  })
}
