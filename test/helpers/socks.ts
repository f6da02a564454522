// A SOCKS5 client of the tests' own (RFC 1928, RFC 1929): builds each message, including wrong
// ones, and reads the proxy's answers byte for byte, so every reply code and corner can be asserted.
import { connect, isIPv4, isIPv6, type Socket } from 'node:net'

const ATYP = { ipv4: 1, name: 3, ipv6: 4 } as const

export function greeting(methods: readonly number[]): Buffer {
  return Buffer.from([5, methods.length, ...methods])
}

export function credentials(user: string, password: string): Buffer {
  const u = Buffer.from(user)
  const p = Buffer.from(password)
  return Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p])
}

/** A request for `host` (an IPv4 or IPv6 literal gets its address type, anything else is sent as a name) and `port`. */
export function request(host: string, port: number, command = 1): Buffer {
  const portBytes = Buffer.from([port >> 8, port & 0xff])
  if (isIPv4(host)) return Buffer.concat([Buffer.from([5, command, 0, ATYP.ipv4, ...host.split('.').map(Number)]), portBytes])
  if (isIPv6(host)) return Buffer.concat([Buffer.from([5, command, 0, ATYP.ipv6]), ipv6Bytes(host), portBytes])
  const name = Buffer.from(host, 'latin1')
  return Buffer.concat([Buffer.from([5, command, 0, ATYP.name, name.length]), name, portBytes])
}

function ipv6Bytes(address: string): Buffer {
  // a dotted IPv4 tail (::ffff:127.0.0.1) is the last two groups
  const text = address.replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, (_m, a: string, b: string, c: string, d: string) => `${((+a << 8) | +b).toString(16)}:${((+c << 8) | +d).toString(16)}`)
  const [left = '', right = ''] = text.split('::')
  const l = left ? left.split(':') : []
  const r = right ? right.split(':') : []
  const groups = text.includes('::') ? [...l, ...Array<string>(8 - l.length - r.length).fill('0'), ...r] : l
  return Buffer.concat(groups.map((g) => Buffer.from([parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff])))
}

/** A connection to a SOCKS listener that reads exactly as many bytes as asked. */
export interface SocksSession {
  readonly socket: Socket
  /** the next `n` bytes; undefined when the proxy closed before they came */
  read(n: number): Promise<Buffer | undefined>
  /** resolves once the proxy closed the connection */
  readonly closed: Promise<void>
  /** bytes received and not yet read */
  pending(): Buffer
}

export function socksSession(port: number, host = '127.0.0.1'): Promise<SocksSession> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port })
    let buffered = Buffer.alloc(0)
    let ended = false
    const waiters: Array<() => void> = []
    const wake = (): void => {
      for (const w of waiters.splice(0)) w()
    }
    socket.on('data', (d: Buffer) => {
      buffered = Buffer.concat([buffered, d])
      wake()
    })
    const closed = new Promise<void>((done) =>
      socket.once('close', () => {
        ended = true
        wake()
        done()
      }),
    )
    socket.on('error', () => undefined)
    const read = async (n: number): Promise<Buffer | undefined> => {
      while (buffered.length < n && !ended) await new Promise<void>((w) => waiters.push(w))
      if (buffered.length < n) return undefined
      const out = buffered.subarray(0, n)
      buffered = buffered.subarray(n)
      return out
    }
    socket.once('connect', () => resolve({ socket, read, closed, pending: () => buffered }))
    socket.once('error', reject)
  })
}

export interface Opened {
  readonly session: SocksSession
  /** the request's reply code; undefined when the proxy closed without one */
  readonly code: number | undefined
}

export interface OpenOptions {
  readonly user?: string
  readonly password?: string
  /** bytes sent right behind the request, before any reply is read */
  readonly after?: Buffer
}

/** Greeting (with username/password when a user is given), then a CONNECT request: the reply code. */
export async function socksConnect(port: number, host: string, destPort: number, options: OpenOptions = {}): Promise<Opened> {
  const session = await socksSession(port)
  const withAuth = options.user !== undefined
  session.socket.write(greeting([withAuth ? 2 : 0]))
  const method = await session.read(2)
  if (method?.[1] !== (withAuth ? 2 : 0)) return { session, code: undefined }
  if (withAuth) {
    session.socket.write(credentials(options.user ?? '', options.password ?? ''))
    const status = await session.read(2)
    if (status?.[1] !== 0) return { session, code: undefined }
  }
  session.socket.write(Buffer.concat([request(host, destPort), options.after ?? Buffer.alloc(0)]))
  const reply = await session.read(10)
  return { session, code: reply?.[1] }
}
