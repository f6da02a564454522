// Raw HTTP and WebSocket exchanges through proxy-gate, over a plain or TLS socket: an upgrade head,
// a masked frame, the answer read until a condition holds, and tunnels opened with CONNECT.
import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { connectHead } from './http.js'
import { completeResponses } from './net.js'

const KEY = 'dGhlIHNhbXBsZSBub25jZQ=='

/** A WebSocket upgrade request: `requestTarget` absolute-form to the proxy, origin-form inside a tunnel. */
export function upgradeHead(requestTarget: string, host: string): string {
  return `GET ${requestTarget} HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${KEY}\r\n\r\n`
}

/** A client's text frame (clients mask theirs). */
function maskedTextFrame(text: string): Buffer {
  const mask = Buffer.from([1, 2, 3, 4])
  const payload = Buffer.from(text).map((b, i) => b ^ (mask[i % 4] as number))
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload])
}

/** Everything a connection received from now on, latin1, once `done` holds, it closes, or 5 s pass (a safety net). */
function received(socket: Socket | TLSSocket, done: (text: string) => boolean): Promise<string> {
  return new Promise((resolve) => {
    let text = ''
    const finish = (): void => {
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('close', finish)
      resolve(text)
    }
    const onData = (d: Buffer): void => {
      text += d.toString('latin1')
      if (done(text)) finish()
    }
    const timer = setTimeout(finish, 5_000)
    socket.on('data', onData)
    socket.once('close', finish)
  })
}

/** A request (its bytes) and the one complete response that comes back. */
export async function exchange(socket: Socket | TLSSocket, bytes: string): Promise<string> {
  const answer = received(socket, (text) => completeResponses(text) >= 1)
  socket.write(bytes)
  return answer
}

/** An upgrade request, then one message: what came back once the echo of `through` arrived (or the answer, when not 101). */
export async function wsExchange(socket: Socket | TLSSocket, head: string): Promise<string> {
  const upgraded = received(socket, (text) => text.includes('\r\n\r\n'))
  socket.write(head)
  const answer = await upgraded
  if (!answer.startsWith('HTTP/1.1 101 ')) return answer
  const echoed = received(socket, (text) => text.includes('echo: through'))
  socket.write(maskedTextFrame('through'))
  return `${answer}${await echoed}`
}

/** A connection to the proxy on loopback; `track` gets it (to close it later). */
export async function toProxy(port: number, track: (socket: Socket) => void): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port })
  socket.on('error', () => socket.destroy())
  track(socket)
  await once(socket, 'connect')
  return socket
}

/** CONNECT target, its 200 (else it throws), and with `tls` the TLS session to the leaf proxy-gate mints for the name. */
export async function tunnel(port: number, target: string, track: (socket: Socket) => void, tls?: { servername: string; ca: string }): Promise<Socket | TLSSocket> {
  const raw = await toProxy(port, track)
  const answered = received(raw, (text) => text.includes('\r\n\r\n'))
  raw.write(connectHead(target))
  const established = await answered
  if (!established.startsWith('HTTP/1.1 200 ')) throw new Error(`CONNECT ${target}: ${established}`)
  if (!tls) return raw
  const secure = tlsConnect({ socket: raw, ...tls })
  secure.on('error', () => secure.destroy())
  await once(secure, 'secureConnect')
  return secure
}
