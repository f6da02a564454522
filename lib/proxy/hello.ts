// The one ClientHello reader, for every flow that looks at one: CONNECT on TLS ports, CONNECT on
// other ports (route-connect.ts) and the transparent TLS listener (route-transparent.ts). What the
// bytes mean is tls-hello.ts's answer; what is done about it, decide.ts's checkHello and
// checkTransparentHello: a hello it cannot read is refused on every port, never relayed.
import type { Socket } from 'node:net'
import { sameServer, type HelloView } from '../policy/decide.js'
import { HelloReader } from '../policy/tls-hello.js'
import { ClientHellos } from '../policy/tls-records.js'
import type { Inspect } from './relay.js'

/** far above any real ClientHello (post-quantum key shares included) */
const MAX_HELLO_BYTES = 32 * 1024

export interface Hello {
  /** every byte read, the ClientHello and whatever came after it: what goes upstream if it passes */
  readonly bytes: Buffer
  readonly view: HelloView
}

/**
 * Reads what the client sends (after `head`, what it already sent) until a whole ClientHello, or
 * proof that these are not TLS bytes, is in: across any number of TCP chunks and TLS records, within
 * `timeoutMs` and MAX_HELLO_BYTES. The socket is read here from the call on, and left paused behind
 * the bytes read; undefined when the client ended or closed first.
 */
export function readHello(socket: Socket, head: Buffer, timeoutMs: number): Promise<Hello | undefined> {
  return new Promise((resolve) => {
    const reader = new HelloReader(MAX_HELLO_BYTES)
    let settled = false
    const finish = (view: HelloView | undefined): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('end', onEnd)
      socket.off('close', onEnd)
      socket.pause()
      resolve(view ? { bytes: reader.bytes, view } : undefined)
    }
    const onData = (chunk: Buffer): void => {
      const result = reader.push(chunk)
      if (result.kind !== 'need-more') finish(result)
    }
    // a client that ends before its ClientHello is complete can never complete it
    const onEnd = (): void => finish(undefined)
    const timer = setTimeout(() => finish({ kind: 'timeout' }), timeoutMs)
    socket.on('data', onData)
    socket.once('end', onEnd)
    socket.once('close', onEnd)
    // whoever had the socket may have paused it (a relay holding it, a wait for the first chunk); the
    // stream flows from the next tick, so a hello complete in `head` pauses it again before any read
    socket.resume()
    if (head.length > 0) onData(head)
  })
}

/**
 * For a tunnel relayed after its ClientHello passed: every ClientHello the client sends, from the
 * first byte (`hello.bytes`, fed first) on, must name the server the first one named.
 */
export function laterHellos(hello: Hello): Inspect | undefined {
  const first = hello.view
  if (first.kind !== 'hello') return undefined
  const hellos = new ClientHellos((later) => later.kind !== 'need-more' && sameServer(first, later), MAX_HELLO_BYTES)
  return (chunk) => hellos.push(chunk)
}
