// A workload for the sandbox's end-to-end tests: a Node script run inside a container on the
// sandbox network that tries every way out and prints one JSON line per probe. Allowed names must
// work through the proxy variables and transparently; everything else must fail.
//
// Its environment: HTTP_PROXY (from `sandbox run`), CLOSED (`host|port,...`: TCP that must not
// connect; IPv6 link-local hosts carry their %interface), SILENT_DNS (`address,...`: DNS servers
// that must not answer).

export interface Probe {
  readonly probe: string
  readonly ok: boolean
  readonly detail: string
}

export const WORKLOAD = String.raw`
const http = require('http'), https = require('https'), net = require('net'), tls = require('tls'), dns = require('dns'), dgram = require('dgram'), fs = require('fs'), os = require('os')
const proxy = new URL(process.env.HTTP_PROXY)
const proxyIp = proxy.hostname
const list = (name) => (process.env[name] || '').split(',').filter(Boolean)
const report = (probe, ok, detail) => console.log(JSON.stringify({ probe, ok, detail: String(detail) }))
const body = (res) => new Promise((done) => { let b = ''; res.on('data', (d) => (b += d)); res.on('end', () => done(res.statusCode + ' ' + b.trim())) })
const get = (mod, url, options = {}) => new Promise((done) => {
  const opts = { timeout: 3000, ...options }
  const req = typeof url === 'string' ? mod.get(url, opts, (res) => body(res).then(done)) : mod.get({ ...url, ...opts }, (res) => body(res).then(done))
  req.on('error', (e) => done('error ' + e.code)); req.on('timeout', () => { req.destroy(); done('timeout') })
})
const tcp = (host, port) => new Promise((done) => {
  const s = net.connect({ host, port, timeout: 2000 })
  s.on('connect', () => { s.destroy(); done('connected') }); s.on('error', (e) => done('error ' + e.code)); s.on('timeout', () => { s.destroy(); done('timeout') })
})
const query = (name) => { const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])); return Buffer.concat([Buffer.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), ...labels, Buffer.from([0, 0, 1, 0, 1])]) }
const udpDns = (server, name) => new Promise((done) => {
  const s = dgram.createSocket(net.isIPv6(server) ? 'udp6' : 'udp4')
  const end = (r) => { clearTimeout(timer); s.close(); done(r) }
  const timer = setTimeout(() => end('no answer'), 2000)
  s.on('message', () => end('answered')); s.on('error', (e) => end('error ' + e.code))
  s.send(query(name), 53, server)
})
const viaConnect = (name) => new Promise((done) => {
  const req = http.request({ host: proxyIp, port: proxy.port, method: 'CONNECT', path: name + ':443', timeout: 3000 })
  req.on('connect', (res, socket) => {
    if (res.statusCode !== 200) return done('CONNECT ' + res.statusCode)
    const t = tls.connect({ socket, servername: name, rejectUnauthorized: false }, () => {
      t.write('GET / HTTP/1.1\r\nHost: ' + name + '\r\nConnection: close\r\n\r\n')
    })
    let b = ''; t.on('data', (d) => (b += d)); t.on('end', () => done(b.split('\r\n')[0] + ' ' + b.split('\r\n\r\n')[1])); t.on('error', (e) => done('error ' + e.code))
  })
  req.on('error', (e) => done('error ' + e.code)); req.end()
})
const fronted = () => new Promise((done) => {
  const t = tls.connect({ host: proxyIp, port: 443, servername: 'evil.test', rejectUnauthorized: false, timeout: 3000 })
  t.on('secureConnect', () => { t.destroy(); done('handshake completed') }); t.on('error', (e) => done('error ' + e.code)); t.on('close', () => done('closed')); t.on('timeout', () => { t.destroy(); done('timeout') })
})
const lookup = (name) => new Promise((done) => dns.lookup(name, (e, a) => done(e ? e.code : a)))
;(async () => {
  const viaProxy = await get(http, { host: proxyIp, port: proxy.port, path: 'http://allowed.test/proxy', headers: { host: 'allowed.test' } })
  report('http via proxy', viaProxy.startsWith('200 '), viaProxy)
  const connect = await viaConnect('allowed.test')
  report('https via proxy', connect.startsWith('HTTP/1.1 200'), connect)
  const denied = await get(http, { host: proxyIp, port: proxy.port, path: 'http://denied.test/', headers: { host: 'denied.test' } })
  report('denied via proxy', denied.startsWith('403 '), denied)
  const plain = await get(http, 'http://allowed.test/transparent')
  report('http transparent', plain.startsWith('200 '), plain)
  const secure = await get(https, 'https://allowed.test/transparent', { rejectUnauthorized: false })
  report('https transparent', secure.startsWith('200 '), secure)
  const deniedName = await lookup('denied.test')
  report('denied name does not resolve', deniedName === 'ENOTFOUND', deniedName)
  const allowedName = await lookup('allowed.test')
  report('allowed name resolves to proxy-gate', allowedName === proxyIp, allowedName)
  const servers = fs.readFileSync('/etc/resolv.conf', 'utf8').split('\n').filter((l) => /^\s*nameserver\s/.test(l)).map((l) => l.trim().split(/\s+/)[1])
  report('resolv.conf names proxy-gate only', servers.join(',') === proxyIp, servers.join(','))
  for (const server of list('SILENT_DNS')) {
    const r = await udpDns(server, 'allowed.test')
    report('no DNS answer from ' + server, r !== 'answered', r)
  }
  for (const target of list('CLOSED')) {
    const [host, port] = target.split('|')
    const r = await tcp(host, Number(port))
    report('direct ' + host + ' port ' + port, r !== 'connected', r)
  }
  const v6 = Object.entries(os.networkInterfaces()).filter(([name]) => name !== 'lo').flatMap(([name, addrs]) => addrs.filter((a) => a.family === 'IPv6').map((a) => name + ' ' + a.address))
  report('no IPv6 address but loopback', v6.length === 0, v6.join(', ') || 'none')
  const front = await fronted()
  report('fronted server name', front !== 'handshake completed', front)
})()
`

/** The probe lines a workload printed (other output is ignored). */
export function probes(output: string): Probe[] {
  return output
    .split('\n')
    .filter((line) => line.startsWith('{"probe"'))
    .map((line) => JSON.parse(line) as Probe)
}
