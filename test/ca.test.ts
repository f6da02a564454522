// The local CA and leaf minting: files on disk, certificates checked by Node and OpenSSL, real TLS
// handshakes against the minted leaves, the leaf cache, the `ca` commands and /ca.crt.
import { execFileSync } from 'node:child_process'
import { generateKeyPairSync, X509Certificate } from 'node:crypto'
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer as createNetServer, type AddressInfo, type Server } from 'node:net'
import { join } from 'node:path'
import { connect as tlsConnect, createServer as createTlsServer, TLSSocket, type SecureContext } from 'node:tls'
import t from 'tap'
import { caInfo, caPaths, createCa, defaultCaDir, loadCa, readCaCertificate, writeCa, type Ca } from '../lib/certs/ca.js'
import { createLeafMinter, leafKey, mintLeaf, parseLeafHost, type LeafHost } from '../lib/certs/leaf.js'
import { runCli, startCli, type RunningCli } from './helpers/cli.js'
import { tempDir } from './helpers/files.js'
import { OPENSSL_SKIP } from './helpers/openssl.js'
import { startProxy } from './helpers/proxy.js'

// each case makes RSA keys in a child process: under coverage, on a busy CI machine, the file took 59 s
t.setTimeout(120_000)

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1'
const DAY = 86_400_000

function host(text: string): LeafHost {
  const parsed = parseLeafHost(text)
  if (!parsed.ok) throw new Error(parsed.error)
  return parsed.value
}

interface Handshake {
  authorized: boolean
  error: string | undefined
  subjectAltName: string | undefined
}

function handshake(port: number, options: { servername?: string; ca: string }): Promise<Handshake> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca: options.ca, rejectUnauthorized: false, ...(options.servername ? { servername: options.servername } : {}) })
    socket.once('secureConnect', () => {
      const error = socket.authorizationError as Error | null // null when authorized, whatever the types say
      resolve({ authorized: socket.authorized, error: error === null ? undefined : String(error), subjectAltName: socket.getPeerCertificate().subjectaltname })
      socket.destroy()
    })
    socket.once('error', reject)
  })
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)))
}

let shared: Ca | undefined
const sharedCa = async (): Promise<Ca> => (shared ??= await createCa())

t.test('createCa: a self-signed RSA CA with the right constraints and validity', async (t) => {
  const before = Date.now()
  const ca = await createCa({ now: before })
  const x509 = new X509Certificate(ca.certPem)
  t.ok(x509.ca, 'basicConstraints cA')
  t.ok(x509.verify(x509.publicKey), 'self-signed')
  t.equal(x509.publicKey.asymmetricKeyType, 'rsa')
  t.equal(x509.publicKey.asymmetricKeyDetails?.modulusLength, 2048)
  t.ok(x509.checkPrivateKey(ca.key))
  const info = caInfo(ca.certPem)
  t.match(info.subject, /^O=proxy-gate, CN=proxy-gate local CA \(.+\) \d{4}-\d\d-\d\d$/)
  t.match(info.fingerprint256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/)
  t.ok(Math.abs(info.notBefore.getTime() - (before - 3_600_000)) < 2_000, 'notBefore = now - 1 h')
  t.ok(Math.abs(info.notAfter.getTime() - (before + 3650 * DAY)) < 2_000, 'notAfter = now + 10 years')
  t.not(info.serialNumber.slice(0, 2), '00', 'serial has no leading zero byte (minimal DER)')
  t.equal(defaultCaDir(), new URL('../certs/', import.meta.url).pathname)
})

t.test('CA files: written with the key never readable by others, reloaded, never overwritten by accident', async (t) => {
  const ca = await sharedCa()
  const dir = join(tempDir('ca'), 'nested', 'certs')
  const written = writeCa(dir, ca)
  t.ok(written.ok)
  const paths = caPaths(dir)
  t.equal(statSync(paths.key).mode & 0o777, 0o600, 'ca.key mode 0600')
  t.same(readdirSync(dir).sort(), ['ca.crt', 'ca.key'], 'no temporary files left')
  t.notMatch(readFileSync(paths.cert, 'utf8'), /\r/, 'LF line endings')
  const loaded = loadCa(dir)
  if (!loaded.ok) throw new Error(loaded.error)
  t.equal(caInfo(loaded.value.certPem).fingerprint256, caInfo(ca.certPem).fingerprint256)
  t.ok(new X509Certificate(loaded.value.certPem).checkPrivateKey(loaded.value.key))
  t.same(readCaCertificate(dir), { ok: true, value: loaded.value.certPem })

  const again = writeCa(dir, await createCa())
  t.notOk(again.ok)
  t.match(again.ok ? '' : again.error, /already exist.*--force/)
  t.equal(caInfo(readFileSync(paths.cert, 'utf8')).fingerprint256, caInfo(ca.certPem).fingerprint256, 'untouched')
  const other = await createCa()
  t.ok(writeCa(dir, other, { force: true }).ok)
  const blocked = join(tempDir('ca'), 'file')
  writeFileSync(blocked, '')
  t.match(writeCa(join(blocked, 'certs'), other), { ok: false, error: /cannot write the CA in .*file\/certs: / }, 'fs errors are reported, not thrown')
  t.equal(caInfo(readFileSync(paths.cert, 'utf8')).fingerprint256, caInfo(other.certPem).fingerprint256, 'replaced with --force')
  t.equal(statSync(paths.key).mode & 0o777, 0o600)
})

t.test('loadCa says clearly what is wrong', async (t) => {
  const ca = await sharedCa()
  const other = await createCa()
  const empty = tempDir('ca')
  const none = loadCa(empty)
  t.same(none.ok ? undefined : [none.missing, /proxy-gate ca init/.test(none.error)], [true, true], 'no CA: missing, says to run ca init')
  const spaced = join(empty, "my certs's")
  t.equal(loadCa(spaced).ok ? '' : (loadCa(spaced) as { error: string }).error, `no CA in ${spaced}: run "proxy-gate ca init --dir '${empty}/my certs'\\''s'" to create one`, 'the folder is named, quoted for a shell')
  t.same(readCaCertificate(empty), { ok: true, value: undefined })

  const leafPem = mintLeaf(ca, await leafKey(), host('x.test'))
  const ecKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' })
  const cases: Array<[string, (dir: string) => void, RegExp]> = [
    ['key missing', (d) => rmSync(join(d, 'ca.key')), /ca\.key is missing \(only .*ca\.crt is there\)/],
    ['certificate missing', (d) => rmSync(join(d, 'ca.crt')), /ca\.crt is missing/],
    ['key of another CA', (d) => writeFileSync(join(d, 'ca.key'), other.key.export({ type: 'pkcs8', format: 'pem' })), /does not belong to ca\.crt/],
    ['an EC key', (d) => writeFileSync(join(d, 'ca.key'), ecKey), /is an ec key; proxy-gate signs with RSA keys only/],
    ['not a certificate', (d) => writeFileSync(join(d, 'ca.crt'), 'hello\n'), /is not a PEM certificate/],
    ['not a key', (d) => writeFileSync(join(d, 'ca.key'), 'hello\n'), /not an unencrypted PEM private key/],
    ['a leaf, not a CA', (d) => writeFileSync(join(d, 'ca.crt'), leafPem), /not a CA certificate/],
  ]
  for (const [name, spoil, expected] of cases) {
    const dir = tempDir('ca')
    writeCa(dir, ca)
    spoil(dir)
    const loaded = loadCa(dir)
    t.notOk(loaded.ok, name)
    t.match(loaded.ok ? '' : loaded.error, expected, name)
    t.equal(loaded.ok ? undefined : loaded.missing, false, `${name}: not reported as missing`)
  }
  const leafOnly = tempDir('ca')
  writeFileSync(join(leafOnly, 'ca.crt'), leafPem)
  t.match(readCaCertificate(leafOnly), { ok: false, error: /not a CA certificate/ })

  const dir = tempDir('ca')
  writeCa(dir, ca)
  const expired = loadCa(dir, Date.now() + 3651 * DAY)
  t.match(expired.ok ? '' : expired.error, /expired on .*ca init --force/)
})

t.test('the fingerprint matches openssl x509 -fingerprint -sha256, and openssl accepts a leaf', { skip: OPENSSL_SKIP }, async (t) => {
  const ca = await sharedCa()
  const dir = tempDir('ca')
  writeCa(dir, ca)
  const out = execFileSync('openssl', ['x509', '-noout', '-fingerprint', '-sha256', '-in', caPaths(dir).cert], { encoding: 'utf8' })
  t.equal(out.trim().split('=')[1], caInfo(ca.certPem).fingerprint256)
  const long = `${'a'.repeat(60)}.${'b'.repeat(60)}.test`
  for (const [name, checkFlag] of [['a.test', '-verify_hostname'], ['127.0.0.1', '-verify_ip'], ['::1', '-verify_ip'], [long, '-verify_hostname']] as const) {
    const leafFile = join(dir, 'leaf.pem')
    writeFileSync(leafFile, mintLeaf(ca, await leafKey(), host(name)))
    const args = ['verify', '-x509_strict', '-purpose', 'sslserver', checkFlag, name, '-CAfile', caPaths(dir).cert, leafFile]
    t.match(execFileSync('openssl', args, { encoding: 'utf8' }), /leaf\.pem: OK/, `openssl verify ${checkFlag} ${name}`)
  }
})

t.test('leaves: signed by the CA, SAN for names and IPs, serverAuth, 30 days, minimal serials', async (t) => {
  const ca = await sharedCa()
  const caX509 = new X509Certificate(ca.certPem)
  const key = await leafKey()
  const leaf = new X509Certificate(mintLeaf(ca, key, host('A.Test.')))
  t.ok(leaf.verify(caX509.publicKey), 'verifies against the CA key')
  t.ok(leaf.checkIssued(caX509), 'issued by the CA')
  t.notOk(leaf.ca)
  t.equal(leaf.checkHost('a.test'), 'a.test')
  t.equal(leaf.checkHost('b.test'), undefined)
  t.equal(leaf.checkHost('x.a.test'), undefined, 'no wildcard')
  t.equal(leaf.subjectAltName, 'DNS:a.test')
  t.same(leaf.keyUsage, [SERVER_AUTH])
  t.ok(leaf.publicKey.equals(new X509Certificate(mintLeaf(ca, key, host('c.test'))).publicKey), 'one shared leaf key')
  const days = (new Date(leaf.validTo).getTime() - new Date(leaf.validFrom).getTime()) / DAY
  t.ok(Math.abs(days - (30 + 1 / 24)) < 0.001, `valid 30 days from an hour ago (${days})`)

  const v4 = new X509Certificate(mintLeaf(ca, key, host('127.0.0.1')))
  t.equal(v4.checkIP('127.0.0.1'), '127.0.0.1')
  t.equal(v4.subjectAltName, 'IP Address:127.0.0.1')
  const v6 = new X509Certificate(mintLeaf(ca, key, host('[::1]')))
  t.equal(v6.checkIP('::1'), '::1')
  t.ok(v6.verify(caX509.publicKey))

  const long = `${'a'.repeat(60)}.${'b'.repeat(60)}.test`
  const longLeaf = new X509Certificate(mintLeaf(ca, key, host(long)))
  t.notOk(longLeaf.subject, 'a name longer than 64 characters lives in the SAN only')
  t.equal(longLeaf.checkHost(long), long)

  for (let i = 0; i < 200; i++) {
    const serial = new X509Certificate(mintLeaf(ca, key, host(`s${i}.test`))).serialNumber
    if (serial.length !== 32 || serial.startsWith('00') || Number.parseInt(serial.slice(0, 2), 16) > 0x7f) t.fail(`serial ${serial}`)
  }
  for (const bad of ['', '*.a.test', 'a b', '127.1', 'a..b', '[::1', 'x'.repeat(64)]) t.notOk(parseLeafHost(bad).ok, `refused: "${bad}"`)
})

t.test('a real TLS handshake with SNI: the client trusting only the CA accepts the leaf', async (t) => {
  const ca = await sharedCa()
  const minter = createLeafMinter(ca)
  const server = createTlsServer({
    SNICallback: (name, done) => {
      minter.contextFor(name).then((ctx) => done(null, ctx), (error: unknown) => done(error as Error))
    },
  })
  server.on('secureConnection', (s) => s.end())
  const port = await listen(server)
  t.teardown(() => server.close())

  const ok = await handshake(port, { servername: 'a.test', ca: ca.certPem })
  t.same(ok, { authorized: true, error: undefined, subjectAltName: 'DNS:a.test' })
  const stranger = await createCa()
  const distrusted = await handshake(port, { servername: 'a.test', ca: stranger.certPem })
  t.equal(distrusted.authorized, false, 'a client trusting another CA refuses it')
  t.equal(distrusted.error, 'SELF_SIGNED_CERT_IN_CHAIN', 'the chain the leaf comes with ends in a CA the client does not know')
  t.equal(minter.mintCount(), 1, 'the second handshake used the cached context')
})

t.test('a real TLS handshake without SNI to an IP: the leaf for the IP passes the client check', async (t) => {
  const ca = await sharedCa()
  const minter = createLeafMinter(ca)
  // as interception will do it: the CONNECT target's leaf is the default, the SNI may override it
  const context = await minter.contextFor('127.0.0.1')
  const server = createNetServer((raw) => {
    const tls = new TLSSocket(raw, { isServer: true, secureContext: context })
    tls.on('secure', () => tls.end())
    tls.on('error', () => tls.destroy())
  })
  const port = await listen(server)
  t.teardown(() => server.close())
  t.same(await handshake(port, { ca: ca.certPem }), { authorized: true, error: undefined, subjectAltName: 'IP Address:127.0.0.1' })
})

t.test('the cache: concurrent requests for one host mint once; the cache is bounded', async (t) => {
  const ca = await sharedCa()
  const minter = createLeafMinter(ca)
  const contexts = await Promise.all(Array.from({ length: 20 }, (_, i) => minter.contextFor(i % 2 ? 'a.test' : 'A.TEST.')))
  t.equal(minter.mintCount(), 1, '20 concurrent requests, one mint')
  t.ok(contexts.every((c) => c === contexts[0]), 'one shared context')

  const small = createLeafMinter(ca, { max: 2 })
  const a: SecureContext = await small.contextFor('a.test')
  await small.contextFor('b.test')
  t.equal(await small.contextFor('a.test'), a, 'cached')
  await small.contextFor('c.test')
  t.equal(small.mintCount(), 3)
  t.equal(small.size(), 2, 'never more than max')
  await small.contextFor('b.test')
  t.equal(small.mintCount(), 4, 'b, the least recently used, was evicted by c')

  await t.rejects(minter.contextFor('*.evil.test'), /cannot mint a certificate for "\*\.evil\.test"/)
  t.throws(() => createLeafMinter(ca, { max: 0 }), /positive integer/)
  t.throws(() => createLeafMinter(ca, { days: 1, ttlMs: DAY }), /shorter than the leaf validity/)
})

// the cost of minting is measured by `npm run bench` (workload 7), never asserted here
t.test('leaves are minted once per name: a second request gets the same context', async (t) => {
  const ca = await sharedCa()
  const minter = createLeafMinter(ca)
  const names = Array.from({ length: 20 }, (_, i) => `m${String(i)}.test`)
  const first = await Promise.all(names.map((n) => minter.contextFor(n)))
  const again = await Promise.all(names.map((n) => minter.contextFor(n)))
  t.equal(new Set(first).size, names.length, 'one context per name')
  again.forEach((c, i) => t.equal(c, first[i], `${names[i] ?? ''}: the cached context`))
})

t.test('proxy-gate ca init / show', async (t) => {
  const dir = tempDir('ca')
  const init = await runCli(['ca', 'init', '--dir', dir])
  t.equal(init.code, 0, init.stderr)
  const paths = caPaths(dir)
  t.equal(statSync(paths.key).mode & 0o777, 0o600)
  const info = caInfo(readFileSync(paths.cert, 'utf8'))
  t.match(init.stdout, `sha256:      ${info.fingerprint256}`)
  t.match(init.stdout, /keep it private/)

  const show = await runCli(['ca', 'show', '--dir', dir])
  t.equal(show.code, 0, show.stderr)
  t.match(show.stdout, `subject:     ${info.subject}`)
  t.match(show.stdout, `sha256:      ${info.fingerprint256}`)
  t.match(show.stdout, `expires:     ${info.notAfter.toISOString()}`)
  t.equal(show.stderr, '')

  const refused = await runCli(['ca', 'init', '--dir', dir])
  t.equal(refused.code, 1)
  t.match(refused.stderr, /already exist.*--force/)
  t.equal(caInfo(readFileSync(paths.cert, 'utf8')).fingerprint256, info.fingerprint256, 'untouched')
  const forced = await runCli(['ca', 'init', '--force', '--dir', dir])
  t.equal(forced.code, 0, forced.stderr)
  t.not(caInfo(readFileSync(paths.cert, 'utf8')).fingerprint256, info.fingerprint256, 'a new CA')

  execFileSync('chmod', ['644', paths.key])
  const loose = await runCli(['ca', 'show', '--dir', dir])
  t.equal(loose.code, 0)
  t.match(loose.stderr, /mode 644: others can read the CA key/)

  const none = await runCli(['ca', 'show', '--dir', tempDir('ca')])
  t.equal(none.code, 1)
  t.match(none.stderr, /no CA in (\S+): run "proxy-gate ca init --dir \1" to create one/)
  t.equal((await runCli(['ca'])).code, 2)
  t.equal((await runCli(['ca', 'rotate'])).code, 2)
  t.equal((await runCli(['ca', 'show', '--force'])).code, 2)
  const help = await runCli(['ca', '--help'])
  t.match(help.stdout, /usage: proxy-gate ca init/)
  t.match((await runCli(['--help'])).stdout, /\n {2}ca {9}/)
})

async function get(url: string, method = 'GET'): Promise<{ status: number; type: string | null; body: string }> {
  const res = await fetch(url, { method })
  return { status: res.status, type: res.headers.get('content-type'), body: await res.text() }
}

t.test('/ca.crt is served by the proxy, 404 without a CA', async (t) => {
  const ca = await sharedCa()
  const withCa = await startProxy({ allow: [] }, { caCertPem: ca.certPem })
  t.teardown(() => withCa.close())
  t.same(await get(`${withCa.url}/ca.crt`), { status: 200, type: 'application/x-x509-ca-cert', body: ca.certPem })
  t.same(await get(`${withCa.url}/ca.crt`, 'HEAD'), { status: 200, type: 'application/x-x509-ca-cert', body: '' })

  const without = await startProxy({ allow: [] })
  t.teardown(() => without.close())
  const missing = await get(`${without.url}/ca.crt`)
  t.equal(missing.status, 404)
  t.match(missing.body, /run "proxy-gate ca init"/)
})

t.test('proxy-gate start serves the ca.crt of --dir, and warns about a broken one', async (t) => {
  const rules = join(tempDir('ca'), 'rules.json')
  writeFileSync(rules, JSON.stringify({ allow: [] }))
  const startWith = async (dir: string): Promise<RunningCli> => {
    const running = await startCli(['start', '--rules', rules, '--listen', '127.0.0.1:0', '--log-format', 'json', '--dir', dir])
    t.teardown(() => void running.child.kill('SIGTERM'))
    return running
  }
  const dir = tempDir('ca')
  t.equal((await runCli(['ca', 'init', '--dir', dir])).code, 0)
  const good = await startWith(dir)
  t.same(await get(`${good.url}/ca.crt`), { status: 200, type: 'application/x-x509-ca-cert', body: readFileSync(caPaths(dir).cert, 'utf8') })

  const broken = tempDir('ca')
  writeFileSync(join(broken, 'ca.crt'), 'not a certificate\n')
  const bad = await startWith(broken)
  t.equal((await get(`${bad.url}/ca.crt`)).status, 404)
  t.match(bad.lines, [{ level: 'warn', message: 'not serving /ca.crt', error: /is not a PEM certificate/ }])
})
