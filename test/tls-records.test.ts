// lib/policy/tls-records.ts: the ClientHellos a client sends for a tunnel's whole life. Real TLS
// sessions (TLS 1.2 with each cipher family, TLS 1.3, and TLS 1.3 with a HelloRetryRequest) recorded
// on the wire, then fed back in chunks of random sizes: every ClientHello is read (two after a
// HelloRetryRequest), each names the server the client asked for, and ciphertext never reads as one.
import { once } from 'node:events'
import { createServer as createTcpServer, connect as tcpConnect, type AddressInfo, type Socket } from 'node:net'
import { connect as tlsConnect, createServer as createTlsServer, type TlsOptions } from 'node:tls'
import t from 'tap'
import { ClientHellos } from '../lib/policy/tls-records.js'
import type { HelloResult } from '../lib/policy/tls-hello.js'
import { selfSigned } from './helpers/net.js'

const NAME = 'origin.test'
const material = selfSigned([NAME])

/** One TLS session through a recording relay: the client's bytes as they went on the wire. */
async function recordSession(server: TlsOptions, client: { maxVersion?: 'TLSv1.2' | 'TLSv1.3'; ciphers?: string }): Promise<Buffer> {
  const tlsServer = createTlsServer({ key: material.key, cert: material.cert, ...server }, (s) => {
    s.on('data', (d: Buffer) => s.write(d))
    s.on('end', () => s.end())
  })
  tlsServer.listen(0, '127.0.0.1')
  await once(tlsServer, 'listening')
  const recorded: Buffer[] = []
  const relay = createTcpServer((inbound: Socket) => {
    const outbound = tcpConnect((tlsServer.address() as AddressInfo).port, '127.0.0.1')
    inbound.on('data', (d: Buffer) => {
      recorded.push(Buffer.from(d))
      outbound.write(d)
    })
    outbound.on('data', (d: Buffer) => inbound.write(d))
    inbound.on('end', () => outbound.end())
    outbound.on('end', () => inbound.end())
  })
  relay.listen(0, '127.0.0.1')
  await once(relay, 'listening')
  const socket = tlsConnect({ port: (relay.address() as AddressInfo).port, host: '127.0.0.1', servername: NAME, ca: material.cert, ...client })
  await once(socket, 'secureConnect')
  for (const size of [10, 5000, 40000]) {
    socket.write(Buffer.alloc(size, 7))
    let got = 0
    while (got < size) got += ((await once(socket, 'data')) as [Buffer])[0].length
  }
  socket.end()
  await once(socket, 'close')
  tlsServer.close()
  relay.close()
  return Buffer.concat(recorded)
}

function readAll(bytes: Buffer, random: () => number): { ok: boolean; hellos: HelloResult[] } {
  const hellos: HelloResult[] = []
  const reader = new ClientHellos((h) => {
    hellos.push(h)
    return h.kind === 'hello' && h.sni === NAME
  }, 32 * 1024)
  let ok = true
  for (let at = 0; at < bytes.length && ok; ) {
    const size = 1 + Math.floor(random() * (random() < 0.5 ? 8 : 3000))
    ok = reader.push(bytes.subarray(at, at + size))
    at += size
  }
  return { ok, hellos }
}

function seeded(seed: number): () => number {
  let s = seed >>> 0
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32)
}

const SESSIONS: Array<[string, TlsOptions, { maxVersion?: 'TLSv1.2' | 'TLSv1.3'; ciphers?: string }, number]> = [
  ['TLS 1.2, AES-GCM', { maxVersion: 'TLSv1.2' }, { ciphers: 'ECDHE-RSA-AES128-GCM-SHA256' }, 1],
  ['TLS 1.2, ChaCha20-Poly1305', { maxVersion: 'TLSv1.2' }, { ciphers: 'ECDHE-RSA-CHACHA20-POLY1305' }, 1],
  ['TLS 1.2, AES-CBC', { maxVersion: 'TLSv1.2' }, { ciphers: 'ECDHE-RSA-AES128-SHA' }, 1],
  ['TLS 1.3', {}, {}, 1],
  ['TLS 1.3 with a HelloRetryRequest', { ecdhCurve: 'P-384' }, {}, 2],
]

for (const [what, server, client, count] of SESSIONS) {
  t.test(`${what}: every ClientHello read, none in ciphertext, however the bytes are split`, async (t) => {
    const bytes = await recordSession(server, client)
    const seed = Date.now() % 100_000
    t.comment(`seed ${seed}`)
    const random = seeded(seed)
    for (let run = 0; run < 200; run++) {
      const { ok, hellos } = readAll(bytes, random)
      if (!ok || hellos.length !== count) {
        t.fail(`run ${run}: ok ${String(ok)}, ${hellos.length} ClientHellos: ${JSON.stringify(hellos)}`)
        return
      }
    }
    t.pass(`${count} ClientHello(s) naming ${NAME} in each of 200 splits`)
  })
}
