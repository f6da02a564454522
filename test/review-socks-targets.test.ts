// Review of SOCKS5 destinations against CONNECT: every spelling of loopback, "this host" and the
// metadata address, as a name (ATYP 0x03) and as an address (0x01, 0x04), is refused over SOCKS
// exactly when the same target over CONNECT is, and none reaches a canary; an allowed name reaches
// its canary both ways (the test can tell an open tunnel from a refusal).
import t from 'tap'
import { startDns } from './helpers/dns.js'
import { NETNS_SKIP, rawSession, startCanary } from './helpers/net.js'
import { startProxy } from './helpers/proxy.js'
import { greeting, request, socksSession } from './helpers/socks.js'

/** A SOCKS5 CONNECT with the destination sent as a name (ATYP 0x03), whatever its text. */
function nameRequest(name: string, port: number): Buffer {
  const bytes = Buffer.from(name, 'latin1')
  return Buffer.concat([Buffer.from([5, 1, 0, 3, bytes.length]), bytes, Buffer.from([port >> 8, port & 0xff])])
}

async function socksCode(socksPort: number, ask: Buffer): Promise<number | undefined> {
  const session = await socksSession(socksPort)
  session.socket.write(Buffer.concat([greeting([0]), ask]))
  await session.read(2)
  const code = (await session.read(10))?.[1]
  session.socket.destroy()
  return code
}

async function connectStatus(port: number, authority: string): Promise<string> {
  const session = await rawSession(port)
  await session.send(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`)
  const text = await session.waitFor((x) => x.includes('\r\n\r\n'))
  session.destroy()
  return text.slice(9, 12)
}

t.test('loopback, "this host" and metadata in every spelling: refused over SOCKS as over CONNECT, no canary reached', { skip: NETNS_SKIP }, async (t) => {
  const loop = await startCanary('127.0.0.1')
  const P = loop.port
  const meta = await startCanary('169.254.169.254', P)
  const ok = await startCanary('11.22.33.44', P)
  const dns = await startDns({ 'rebind.allowed.test': { A: ['127.0.0.1'] }, 'meta.allowed.test': { A: ['169.254.169.254'] }, 'ok.allowed.test': { A: ['11.22.33.44'] } })
  const allow = ['rebind.allowed.test', 'meta.allowed.test', 'ok.allowed.test'].map((h) => `${h}:${P}`)
  const proxy = await startProxy({ socks: { listen: '127.0.0.1:0' }, allow, dns: { servers: [dns.server], timeoutMs: 2000 } })
  t.teardown(async () => {
    await proxy.close()
    await Promise.all([loop.close(), meta.close(), ok.close(), dns.close()])
  })
  const socksPort = proxy.proxy.socksAddress()?.port ?? 0

  t.equal(await socksCode(socksPort, nameRequest('ok.allowed.test', P)), 0x00, 'control: an allowed name opens over SOCKS')
  t.equal(await connectStatus(proxy.port, `ok.allowed.test:${P}`), '200', 'control: and over CONNECT')
  t.equal(ok.connections(), 2, 'control: the allowed canary saw both')

  // [text sent as a SOCKS name, the same target as a CONNECT authority]
  const names: Array<[string, string]> = [
    ['127.0.0.1', '127.0.0.1'],
    ['127.0.0.1.', '127.0.0.1.'],
    ['0x7f.1', '0x7f.1'],
    ['2130706433', '2130706433'],
    ['127.1', '127.1'],
    ['0177.0.0.1', '0177.0.0.1'],
    ['LOCALHOST', 'LOCALHOST'],
    ['localhost.', 'localhost.'],
    ['0.0.0.0', '0.0.0.0'],
    ['0', '0'],
    ['[::1]', '[::1]'],
    ['::1', '[::1]'],
    ['::', '[::]'],
    ['::ffff:127.0.0.1', '[::ffff:127.0.0.1]'],
    ['::ffff:169.254.169.254', '[::ffff:169.254.169.254]'],
    ['169.254.169.254', '169.254.169.254'],
    ['0xa9fea9fe', '0xa9fea9fe'],
    ['REBIND.ALLOWED.TEST.', 'REBIND.ALLOWED.TEST.'],
    ['rebind.allowed.test', 'rebind.allowed.test'],
    ['meta.allowed.test', 'meta.allowed.test'],
    ['ok.allowed.test\0.evil', 'ok.allowed.test%00.evil'],
    ['ok.allowed.test:80', 'ok.allowed.test:80'],
    ['..', '..'],
    ['', ''],
  ]
  for (const [name, authority] of names) {
    t.not(await socksCode(socksPort, nameRequest(name, P)), 0x00, `SOCKS name ${JSON.stringify(name)} refused`)
    t.not(await connectStatus(proxy.port, `${authority}:${P}`), '200', `CONNECT ${authority}:${P} refused`)
  }
  const addresses: Array<[string, string]> = [
    ['127.0.0.1', '127.0.0.1'],
    ['0.0.0.0', '0.0.0.0'],
    ['169.254.169.254', '169.254.169.254'],
    ['::1', '[::1]'],
    ['::', '[::]'],
    ['::ffff:127.0.0.1', '[::ffff:127.0.0.1]'],
    ['::ffff:169.254.169.254', '[::ffff:169.254.169.254]'],
    ['::127.0.0.1', '[::127.0.0.1]'],
    ['64:ff9b::a9fe:a9fe', '[64:ff9b::a9fe:a9fe]'],
    ['2002:a9fe:a9fe::1', '[2002:a9fe:a9fe::1]'],
  ]
  for (const [address, authority] of addresses) {
    t.not(await socksCode(socksPort, request(address, P)), 0x00, `SOCKS address ${address} refused`)
    t.not(await connectStatus(proxy.port, `${authority}:${P}`), '200', `CONNECT ${authority}:${P} refused`)
  }
  t.equal(loop.connections(), 0, 'the loopback canary saw no connection')
  t.equal(meta.connections(), 0, 'the metadata canary saw no connection')
  t.equal(ok.connections(), 2, 'the allowed canary saw only the controls')
})
