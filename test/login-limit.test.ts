// The proxy-login limiter (lib/proxy/login-limit.ts through lib/proxy/auth.ts): failures count per
// source address and user before any hashing, scrypt runs a few at a time per address, and one
// user's wrong passwords never refuse another user's right one. In-process with a password check
// that counts its runs, then through the proxy from several loopback source addresses.
import { scryptSync } from 'node:crypto'
import { connect } from 'node:net'
import t from 'tap'
import { createAuthenticator, hashPassword, verifyPassword, type AuthResult, type Verify } from '../lib/proxy/auth.js'
import { formatScryptHash, type AuthSettings } from '../lib/rules/auth.js'
import { startHttpUpstream, statusOf } from './helpers/net.js'
import { startProxy } from './helpers/proxy.js'

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`
const statusOfResult = (r: AuthResult) => (r.ok ? 200 : r.reply.status)

/** A hash of the lowest cost rules.json accepts (N=1024): real scrypt, quick enough for a hundred checks. */
function cheapHash(password: string): string {
  const salt = Buffer.from('0123456789abcdef')
  return formatScryptHash({ N: 1024, r: 8, p: 1, salt, key: scryptSync(password, salt, 32, { N: 1024, r: 8, p: 1 }) })
}

/** A password check that counts its runs and how many run at once; while `hold`, each one waits for `release`. */
function countingVerify(hold = false) {
  const stats = { runs: 0, running: 0, most: 0 }
  const held: Array<() => void> = []
  const verify: Verify = async (stored, password) => {
    stats.runs++
    stats.most = Math.max(stats.most, ++stats.running)
    try {
      if (hold) await new Promise<void>((resolve) => held.push(resolve))
      return await verifyPassword(stored, password)
    } finally {
      stats.running--
    }
  }
  /** lets the held checks finish, and the later ones run without waiting */
  const release = () => {
    hold = false
    held.splice(0).forEach((go) => go())
  }
  return { verify, stats, release }
}

const settingsOf = (users: Record<string, string>): AuthSettings => ({ realm: 'test', users: new Map(Object.entries(users)) })

t.test('40 wrong logins at once for one user from one address: 10 are hashed, 30 refused before hashing', async (t) => {
  const { verify, stats } = countingVerify()
  const auth = createAuthenticator(() => settingsOf({ alice: cheapHash('right password') }), verify)
  const results = await Promise.all(Array.from({ length: 40 }, (_, i) => auth.check(basic('alice', `guess ${i}`), '10.0.0.1')))
  t.equal(stats.runs, 10, 'scrypt ran 10 times')
  t.same(results.map(statusOfResult), [...Array<number>(10).fill(407), ...Array<number>(30).fill(429)])
  t.equal(statusOfResult(await auth.check(basic('alice', 'right password'), '10.0.0.1')), 429, 'alice from that address waits out the minute')
  t.equal(statusOfResult(await auth.check(basic('alice', 'right password'), '10.0.0.2')), 200, 'alice from another address does not')
  t.equal(stats.runs, 11)
  t.equal(statusOfResult(await auth.check(basic('alice', 'right password'), '10.0.0.1')), 429, 'the cached right password too: a held-off guess learns nothing')
})

t.test('other users wrong passwords never refuse a right one from the same address', async (t) => {
  const { verify, stats } = countingVerify()
  const auth = createAuthenticator(() => settingsOf({ alice: cheapHash('alice password'), bob: cheapHash('bob password') }), verify)
  for (let i = 0; i < 30; i++) t.equal(statusOfResult(await auth.check(basic('bob', `guess ${i}`), '10.0.0.1')), i < 10 ? 407 : 429)
  t.equal(stats.runs, 10)
  t.same(await auth.check(basic('alice', 'alice password'), '10.0.0.1'), { ok: true, user: 'alice' }, 'alice logs in from the address bob is locked out of')
})

t.test('spraying names from one address: 100 failures, then new names are refused there, names that logged in there are not', async (t) => {
  const { verify, stats } = countingVerify()
  // the sprayed names exist (with cheap hashes): an unknown name costs a default-cost scrypt
  const sprayed = Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`user${i}`, cheapHash('not guessed')]))
  const auth = createAuthenticator(() => settingsOf({ ...sprayed, alice: cheapHash('alice password'), carol: cheapHash('carol password') }), verify)
  t.equal(statusOfResult(await auth.check(basic('alice', 'alice password'), '10.0.0.1')), 200)
  for (let i = 0; i < 100; i++) t.equal(statusOfResult(await auth.check(basic(`user${i}`, 'guess'), '10.0.0.1')), 407)
  t.equal(statusOfResult(await auth.check(basic('user100', 'guess'), '10.0.0.1')), 429, 'a new name from the spraying address')
  t.equal(statusOfResult(await auth.check(basic('carol', 'carol password'), '10.0.0.1')), 429, 'carol never logged in from there: held off with the rest')
  t.equal(stats.runs, 101)
  // a new header for alice (another password), so that the credential cache does not answer
  t.equal(statusOfResult(await auth.check(basic('alice', 'wrong'), '10.0.0.1')), 407, 'alice logged in from there: still hashed')
  t.equal(statusOfResult(await auth.check(`basic ${Buffer.from('alice:alice password').toString('base64')}`, '10.0.0.1')), 200, 'and let in')
  t.equal(statusOfResult(await auth.check(basic('carol', 'carol password'), '10.0.0.2')), 200, 'carol from another address')
})

t.test('at most 2 password checks run at once per address; the others wait, other addresses do not', async (t) => {
  const { verify, stats, release } = countingVerify(true)
  const auth = createAuthenticator(() => settingsOf({ alice: cheapHash('alice password') }), verify)
  const pending = Array.from({ length: 6 }, (_, i) => auth.check(basic(`user${i}`, 'guess'), '10.0.0.1'))
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(stats.running, 2, 'two run')
  const other = auth.check(basic('alice', 'alice password'), '10.0.0.2')
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(stats.running, 3, 'another address is not kept waiting')
  release()
  t.same((await Promise.all(pending)).map(statusOfResult), Array<number>(6).fill(407))
  t.equal(statusOfResult(await other), 200)
  t.equal(stats.most, 3, 'never more than 2 for one address (and 1 for the other) at once')
  t.equal(stats.runs, 7)
})

t.test('the same credentials sent 20 times at once are hashed once', async (t) => {
  const { verify, stats } = countingVerify()
  const auth = createAuthenticator(() => settingsOf({ alice: cheapHash('alice password') }), verify)
  const results = await Promise.all(Array.from({ length: 20 }, () => auth.check(basic('alice', 'alice password'), '10.0.0.1')))
  t.same(results, Array<AuthResult>(20).fill({ ok: true, user: 'alice' }))
  t.equal(stats.runs, 1)
})

/** A raw exchange from a chosen loopback source address. */
function from(source: string, port: number, bytes: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress: source })
    let text = ''
    socket.on('data', (d) => (text += d.toString('latin1')))
    socket.on('close', () => resolve(text))
    socket.on('error', () => resolve(text))
    socket.write(bytes)
  })
}

t.test('through the proxy: a login spray from one address leaves a right password working there', async (t) => {
  const upstream = await startHttpUpstream()
  // default-cost hashes (as passwd writes them): scrypt takes long enough that 40 logins sent at once all arrive before the first check ends
  const proxy = await startProxy({ allow: [`127.0.0.1:${upstream.port}`], auth: { users: { alice: await hashPassword('alice password'), bob: await hashPassword('bob password') } } })
  t.teardown(async () => {
    await proxy.close()
    await upstream.close()
  })
  const request = (auth: string) => `GET http://127.0.0.1:${upstream.port}/ HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${auth}\r\nConnection: close\r\n\r\n`
  const statuses = await Promise.all(Array.from({ length: 40 }, (_, i) => from('127.0.0.6', proxy.port, request(basic('bob', `guess ${i}`)))))
  const counted = (status: number) => statuses.filter((s) => statusOf(s) === status).length
  t.same([counted(407), counted(429)], [10, 30], '10 checked, 30 refused before hashing')
  t.equal(statusOf(await from('127.0.0.6', proxy.port, request(basic('alice', 'alice password')))), 200, 'alice logs in from the same address')
  t.equal(statusOf(await from('127.0.0.6', proxy.port, request(basic('bob', 'bob password')))), 429, 'bob from that address waits')
  t.equal(statusOf(await from('127.0.0.7', proxy.port, request(basic('bob', 'bob password')))), 200, 'bob from another address does not')
  t.notMatch(JSON.stringify(proxy.logs()), /guess|alice password|bob password/, 'no password in the log')
})
