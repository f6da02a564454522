// A reload passes the checks `start` makes, or fails and the running rules stay: exposure (report
// mode and a listener without "auth" stay on loopback unless --insecure-open), the local CA the
// rules need, and listeners, which are bound once. The dashboard's allow checks the same way.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { hashPassword } from '../lib/proxy/auth.js'
import { startCli, type RunningCli } from './helpers/cli.js'
import { rulesFile, tempDir } from './helpers/files.js'
import { rawExchange, startHttpUpstream, statusOf } from './helpers/net.js'

const FAILED = 'reload failed: keeping the previous rules'

async function start(t: Test, rules: Record<string, unknown>, args: string[]): Promise<{ cli: RunningCli; file: string }> {
  const file = rulesFile(rules)
  const tokenFile = join(tempDir('token'), 'admin-token')
  const cli = await startCli(['start', '--log-format', 'json', '--admin-listen', '127.0.0.1:0', '--admin-token-file', tokenFile, '--rules', file, ...args])
  t.teardown(() => void cli.child.kill('SIGKILL'))
  return { cli, file }
}

/** Rewrites the rules file, sends SIGHUP, and resolves with the reload's outcome line. */
async function reloadWith(cli: RunningCli, file: string, rules: Record<string, unknown>): Promise<Record<string, unknown>> {
  const before = cli.lines.length
  writeFileSync(file, JSON.stringify(rules))
  cli.child.kill('SIGHUP')
  return cli.waitFor((l) => cli.lines.indexOf(l) >= before && (l.message === 'reloaded' || l.message === FAILED))
}

const get = (port: number, upstream: number, auth = ''): Promise<number | undefined> =>
  rawExchange(port, `GET http://127.0.0.1:${upstream}/x HTTP/1.1\r\nHost: x\r\n${auth}Connection: close\r\n\r\n`).then((r) => statusOf(r.text))

t.test('report mode arriving by reload on a non-loopback listener is refused; enforce mode stays', async (t) => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.close())
  const { cli, file } = await start(t, { allow: [] }, ['--listen', '0.0.0.0:0', '--insecure-open'])
  const line = await reloadWith(cli, file, { allow: [], mode: 'report' })
  t.equal(line.message, FAILED)
  t.match(JSON.stringify(line.errors), /report mode/)
  t.equal(await get(cli.port, upstream.port), 403, 'still enforcing')
})

t.test('removing "auth" by reload on a non-loopback listener without --insecure-open is refused; auth stays', async (t) => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.close())
  const auth = { users: { alice: await hashPassword('correct horse') } }
  const allow = [`127.0.0.1:${upstream.port}`]
  const { cli, file } = await start(t, { allow, auth }, ['--listen', '0.0.0.0:0'])
  const line = await reloadWith(cli, file, { allow })
  t.equal(line.message, FAILED)
  t.match(JSON.stringify(line.errors), /--insecure-open/)
  t.equal(await get(cli.port, upstream.port), 407, 'credentials still required')
  const basic = `Proxy-Authorization: Basic ${Buffer.from('alice:correct horse').toString('base64')}\r\n`
  t.equal(await get(cli.port, upstream.port, basic), 200)
})

t.test('a changed "listen" fails the reload (it needs a restart) and the running rules stay', async (t) => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.close())
  const { cli, file } = await start(t, { listen: '127.0.0.1:0', allow: [] }, [])
  const line = await reloadWith(cli, file, { listen: '127.0.0.1:1', allow: [`127.0.0.1:${upstream.port}`] })
  t.equal(line.message, FAILED)
  t.match(line.errors, [/"listen" changed to 127\.0\.0\.1:1 .*restart/])
  t.equal(await get(cli.port, upstream.port), 403, 'the old rules are in force')
})

t.test('rules that limit methods or paths arriving by reload without a local CA are refused', async (t) => {
  const { cli, file } = await start(t, { allow: [] }, ['--listen', '127.0.0.1:0', '--dir', tempDir('noca')])
  const line = await reloadWith(cli, file, { allow: [{ host: 'api.example.test', ports: [443], methods: ['GET'] }] })
  t.equal(line.message, FAILED)
  t.match(JSON.stringify(line.errors), /needs the local CA/)
})
