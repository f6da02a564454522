// A request refused before its target is parsed (407 for proxy authentication, 400 for a target that
// does not parse) is logged by host:port like every other decision: never its query string (tokens)
// or userinfo, at any log level.
import t from 'tap'
import { hashPassword } from '../lib/proxy/auth.js'
import { parseAuthority, parseOriginRequest, targetForLog } from '../lib/policy/target.js'
import { closedPort, rawExchange, statusOf } from './helpers/net.js'
import { logLine, startProxy, type LogLine, type TestProxy } from './helpers/proxy.js'

const SECRET = 'SECRET-7c1e'
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`

async function exchange(port: number, head: string[], host = '127.0.0.1'): Promise<number | undefined> {
  const r = await rawExchange(port, `${head.join('\r\n')}\r\n\r\n`, { host, until: (text) => text.includes('\r\n\r\n') })
  return statusOf(r.text)
}

function decisions(proxy: TestProxy, count: number): Promise<LogLine[]> {
  return logLine(proxy, () => proxy.logs().filter((l) => l.message === 'decision').length >= count, `${count} decision lines`).then(() => proxy.logs().filter((l) => l.message === 'decision'))
}

t.test('a 407 logs host:port, never the query string or the credentials it refused', async (t) => {
  const proxy = await startProxy({ allow: ['api.example.test'], auth: { users: { alice: await hashPassword('right password') } } })
  t.teardown(() => proxy.close())
  const url = `http://api.example.test/v1/items?token=${SECRET}&x=1`
  t.equal(await exchange(proxy.port, [`GET ${url} HTTP/1.1`, 'Host: api.example.test']), 407, 'no credentials')
  t.equal(await exchange(proxy.port, [`GET ${url} HTTP/1.1`, 'Host: api.example.test', `Proxy-Authorization: ${basic('alice', SECRET)}`]), 407, 'a wrong password')
  t.equal(await exchange(proxy.port, [`GET http://api.example.test:8080/ws?access_token=${SECRET} HTTP/1.1`, 'Host: api.example.test:8080', 'Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==']), 407, 'an Upgrade')
  t.equal(await exchange(proxy.port, [`CONNECT api.example.test:443 HTTP/1.1`, 'Host: api.example.test:443', `Proxy-Authorization: ${basic(SECRET, SECRET)}`]), 407, 'a CONNECT with a wrong user')
  const lines = await decisions(proxy, 4)
  t.same(
    lines.map((l) => [l.method, l.target, l.status]),
    [
      ['GET', 'api.example.test:80', 407],
      ['GET', 'api.example.test:80', 407],
      ['GET', 'api.example.test:8080', 407],
      ['CONNECT', 'api.example.test:443', 407],
    ],
  )
  const leaked = proxy.logs().filter((l) => JSON.stringify(l).includes(SECRET))
  t.same(leaked, [], 'the secret is in no log line, at any level')
})

t.test('a target that does not parse is logged by what it names, without its path, query or userinfo', async (t) => {
  const port = await closedPort()
  const proxy = await startProxy({ allow: ['api.example.test'], sandbox: { socks: false, address: '127.80.0.9', dns: false, http: [port], tls: [] } })
  t.teardown(() => proxy.close())
  t.equal(await exchange(proxy.port, [`GET http://bad-.example.test/x?token=${SECRET} HTTP/1.1`, 'Host: bad-.example.test']), 400, 'a bad host name')
  t.equal(await exchange(proxy.port, [`GET http://api.example.test:99999/x?token=${SECRET} HTTP/1.1`, 'Host: api.example.test']), 400, 'a bad port')
  t.equal(await exchange(proxy.port, [`CONNECT api.example.test:443/?token=${SECRET} HTTP/1.1`, 'Host: api.example.test:443']), 400, 'a CONNECT target with a query')
  t.equal(await exchange(port, [`GET http://api.example.test:${port}/x?token=${SECRET} HTTP/1.1`, 'Host: api.example.test'], '127.80.0.9'), 400, 'absolute-form on a transparent listener')
  t.equal(await exchange(port, [`GET /x?token=${SECRET} HTTP/1.1`, 'Host: bad-.example.test'], '127.80.0.9'), 400, 'a bad Host on a transparent listener')
  const lines = await decisions(proxy, 5)
  t.same(
    lines.map((l) => [l.method, l.target, l.status]),
    [
      ['GET', 'bad-.example.test', 400],
      ['GET', 'api.example.test:99999', 400],
      ['CONNECT', 'api.example.test:443', 400],
      ['GET', 'api.example.test', 400],
      ['GET', 'bad-.example.test', 400],
    ],
  )
  const leaked = proxy.logs().filter((l) => JSON.stringify(l).includes(SECRET))
  t.same(leaked, [], 'the secret is in no log line, at any level')
})

t.test('targetForLog: host:port when the target parses, else the authority it names; never a path, query or userinfo', async (t) => {
  const rows: Array<[string, string]> = [
    [`http://a.test/x?token=${SECRET}`, 'a.test:80'],
    [`http://a.test:8080?token=${SECRET}`, 'a.test:8080'],
    ['a.test:443', 'a.test:443'],
    ['[::1]:443', '[::1]:443'],
    [`a.test:443/?token=${SECRET}`, 'a.test:443'],
    [`https://user:${SECRET}@a.test/x?token=${SECRET}`, '[redacted]@a.test'],
    [`user:${SECRET}@a.test:443`, '[redacted]@a.test:443'],
    [`http://u:p@${SECRET}@a.test/`, '[redacted]@a.test'],
    [`ftp://a.test/${SECRET}`, 'a.test'],
    [`http://a.test#${SECRET}`, 'a.test'],
    [`http://a.test\\${SECRET}`, 'a.test'],
    [`/x?token=${SECRET}`, ''],
    ['', ''],
  ]
  for (const [raw, logged] of rows) t.equal(targetForLog(raw), logged, raw)
  t.equal(targetForLog('x'.repeat(1_000)).length, 300, 'at most 300 characters')
})

t.test('errors about a request-target leave out its query string', async (t) => {
  const connect = parseAuthority(`a.test:443/x?token=${SECRET}`)
  t.equal(connect.ok ? '' : connect.error, '"a.test:443/x?…" is not host:port (no scheme, userinfo, path or query)')
  const origin = parseOriginRequest(`http://a.test/x?token=${SECRET}`, 'a.test', 80)
  t.match(origin.ok ? '' : origin.error, /^request-target "http:\/\/a\.test\/x\?…" is not origin-form/)
})
