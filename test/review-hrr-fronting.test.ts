// Review finding: domain fronting through TLS 1.3's HelloRetryRequest. proxy-gate checks the
// server name of the tunnel's first ClientHello only, then relays the rest unseen. A client whose
// first ClientHello names the allowed host and offers no key share gets a HelloRetryRequest from the
// origin, and sends its second ClientHello, still in plaintext, naming another host. OpenSSL's
// servername callback (the one nginx, haproxy and `openssl s_server` pick a virtual host with) reads
// the second hello's name and switches to that host's certificate and context.
//   client --CONNECT origin.test:PORT--> proxy-gate -> 200
//   client --ClientHello(SNI origin.test, no key share)--> proxy-gate checks, allows, relays
//   origin --HelloRetryRequest--> client
//   client --ClientHello(SNI evil.test, key share)--> relayed unchecked -> origin switches to evil.test
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { startDns } from './helpers/dns.js'
import { connectHead } from './helpers/http.js'
import { captureHello, EXT, helloMessage, helloParts, record, serverNameData, u16, type HelloParts } from './helpers/client-hello.js'
import { closedPort, rawSession, selfSigned } from './helpers/net.js'
import { OPENSSL_SKIP } from './helpers/openssl.js'
import { logLine, startProxy } from './helpers/proxy.js'

const ESTABLISHED = 'HTTP/1.1 200 Connection established\r\n\r\n'

interface SServer {
  readonly port: number
  /** everything `openssl s_server -msg` printed */
  output(): string
  /** resolves once it has exited (after its one connection, -naccept 1) */
  readonly exited: Promise<void>
  close(): void
}

/**
 * `openssl s_server` with a certificate for origin.test and, through its servername callback, one for
 * evil.test (-servername/-cert2): it prints the server name of each ClientHello it reads, and
 * "Switching server context." when it takes evil.test's. X25519 only, so a hello that offers no key
 * share gets a HelloRetryRequest.
 */
async function startSServer(t: Test): Promise<SServer> {
  const dir = mkdtempSync(join(tmpdir(), 'review-hrr-'))
  const files = (name: string): string[] => {
    const tls = selfSigned([name], ['127.0.0.1'])
    writeFileSync(join(dir, `${name}.crt`), tls.cert)
    writeFileSync(join(dir, `${name}.key`), tls.key)
    return [join(dir, `${name}.crt`), join(dir, `${name}.key`)]
  }
  const [cert, key] = files('origin.test')
  const [cert2, key2] = files('evil.test')
  const port = await closedPort()
  const args = ['s_server', '-accept', `127.0.0.1:${port}`, '-cert', cert ?? '', '-key', key ?? '', '-servername', 'evil.test', '-cert2', cert2 ?? '', '-key2', key2 ?? '', '-groups', 'X25519', '-msg', '-naccept', '1']
  // stdin stays open: s_server shuts down at its end
  const child: ChildProcess = spawn('openssl', args, { stdio: ['pipe', 'pipe', 'pipe'] })
  let output = ''
  const onOutput = (d: Buffer): void => void (output += d.toString('latin1'))
  child.stdout?.on('data', onOutput)
  child.stderr?.on('data', onOutput)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  await new Promise<void>((resolve, reject) => {
    const check = (): void => {
      if (output.includes('ACCEPT')) resolve()
    }
    child.stdout?.on('data', check)
    child.once('exit', (code) => reject(new Error(`s_server exited ${String(code)}: ${output}`)))
  })
  const server = { port, output: () => output, exited, close: () => void child.kill() }
  t.teardown(() => server.close())
  return server
}

function withServerName(parts: HelloParts, name: string, keyShare?: Buffer): HelloParts {
  const extensions = (parts.extensions ?? []).map((e) => {
    if (e.type === EXT.serverName) return { type: e.type, data: serverNameData([[0, name]]) }
    if (e.type === EXT.keyShare && keyShare) return { type: e.type, data: keyShare }
    return e
  })
  return { ...parts, extensions }
}

t.test('a second ClientHello after a HelloRetryRequest names another host: the origin switches to it', { skip: OPENSSL_SKIP }, async (t) => {
  const origin = await startSServer(t)
  const dns = await startDns({ 'origin.test': { A: ['127.0.0.1'] } })
  // origin.test on a TLS port: the tunnel must carry a ClientHello for origin.test
  const proxy = await startProxy({ allow: [`origin.test:${origin.port}`, `127.0.0.1:${origin.port}`], dns: { servers: [dns.server] }, tls: { ports: [origin.port] } })
  t.teardown(async () => {
    await proxy.close()
    await dns.close()
  })

  // Node's TLS 1.3 ClientHello (key share for X25519); the first one offers no key share at all
  const parts = helloParts(await captureHello({ servername: 'evil.test', minVersion: 'TLSv1.3' }))
  const first = record(0x16, 0x0301, helloMessage(withServerName(parts, 'origin.test', u16(0))))
  const second = record(0x16, 0x0301, helloMessage(withServerName(parts, 'evil.test')))

  const session = await rawSession(proxy.port)
  t.teardown(() => session.destroy())
  await session.send(connectHead(`origin.test:${origin.port}`))
  await session.waitFor((got) => got === ESTABLISHED)
  await session.send(first)
  // the HelloRetryRequest: a ServerHello record (and a change_cipher_spec) back from the origin
  const retry = await session.waitFor((got) => got.length > ESTABLISHED.length + 5)
  t.equal(retry.charCodeAt(ESTABLISHED.length), 0x16, 'the origin answered the first ClientHello (a HelloRetryRequest)')
  t.match(await logLine(proxy, (l) => l.message === 'decision' && l.sni === 'origin.test', 'the ClientHello decision'), { decision: 'allow', sni: 'origin.test' })

  await session.send(second)
  await session.waitFor((got) => got.length > retry.length, 3_000)
  session.destroy()
  await origin.exited // s_server has printed all it read
  const names = [...origin.output().matchAll(/Hostname in TLS extension: "([^"]*)"/g)].map((m) => m[1])
  t.same(names, ['origin.test'], 'the origin read server names: only origin.test (it reads evil.test from the second hello)')
  t.equal(origin.output().includes('Switching server context.'), false, 'the origin did not switch to evil.test\'s certificate and context')
})
