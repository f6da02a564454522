// `proxy-gate start` as a user runs it: dist/cli.js in its own process, real files, real sockets:
// refusals at start, serving and logging, reloads, and exit on SIGTERM. (cli.test.ts: the other commands.)
import { renameSync, writeFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { runCli, startCli, type RunningCli } from './helpers/cli.js'
import { rulesFile, tempDir } from './helpers/files.js'
import { connectHead } from './helpers/http.js'
import { rawExchange, startHttpUpstream, statusOf } from './helpers/net.js'

/** Replaces a file the way editors do: write a temp file, rename it over the original. */
function replaceFile(file: string, rules: unknown): void {
  writeFileSync(`${file}.tmp`, JSON.stringify(rules))
  renameSync(`${file}.tmp`, file)
}

/** `proxy-gate start ARGS` with JSON logs and an admin listener on a free port. */
function startWithAdmin(args: string[]): Promise<RunningCli> {
  const tokenFile = join(tempDir('token'), 'admin-token')
  return startCli(['start', '--log-format', 'json', '--admin-listen', '127.0.0.1:0', '--admin-token-file', tokenFile, ...args])
}

function openTunnel(port: number, target: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port })
    socket.once('data', (d) => (d.toString().startsWith('HTTP/1.1 200') ? resolve(socket) : reject(new Error(d.toString()))))
    socket.write(connectHead(target))
  })
}

t.test('start: refuses bad rules, open listeners without consent, and report mode off loopback', async (t) => {
  const bad = await runCli(['start', '--rules', rulesFile({ allow: ['*'] }), '--listen', '127.0.0.1:0'])
  t.equal(bad.code, 1)
  t.match(bad.stderr, /allow\[0\] "\*"/)
  t.match(bad.stderr, /did not start/)
  const open = await runCli(['start', '--rules', rulesFile({ allow: [] }), '--listen', '0.0.0.0:0'])
  t.equal(open.code, 1)
  t.match(open.stderr, /--insecure-open/)
  const report = await runCli(['start', '--rules', rulesFile({ allow: [] }), '--listen', '0.0.0.0:0', '--mode', 'report', '--insecure-open'])
  t.equal(report.code, 1)
  t.match(report.stderr, /report mode/)
})

t.test('start: serves, logs JSON decisions, exits 0 on SIGTERM', async (t) => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.close())
  const cli = await startWithAdmin(['--rules', rulesFile({ allow: [`127.0.0.1:${upstream.port}`] }), '--listen', '127.0.0.1:0'])
  const res = await rawExchange(cli.port, `GET http://127.0.0.1:${upstream.port}/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(res.text), 200)
  const decision = await cli.waitFor((l) => l.message === 'decision')
  t.match(decision, { decision: 'allow', method: 'GET', target: `127.0.0.1:${upstream.port}`, rule: `allow[0] 127.0.0.1:${upstream.port}`, mode: 'enforce' })
  cli.child.kill('SIGTERM')
  t.equal(await cli.exited, 0)
  t.ok(cli.lines.some((l) => l.message === 'stopped'))
})

t.test('reload: file change and SIGHUP swap rules, revoke tunnels, and a bad file keeps the old rules', async (t) => {
  const a = await startHttpUpstream()
  const b = await startHttpUpstream()
  const rules = (ports: number[]) => ({ allow: ports.map((p) => `127.0.0.1:${p}`), limits: { shutdownGraceMs: 500 } })
  const file = rulesFile(rules([a.port, b.port]))
  const cli = await startWithAdmin(['--rules', file, '--listen', '127.0.0.1:0'])
  t.teardown(async () => {
    cli.child.kill('SIGKILL')
    await a.close()
    await b.close()
  })
  const tunnelA = await openTunnel(cli.port, `127.0.0.1:${a.port}`)
  const tunnelB = await openTunnel(cli.port, `127.0.0.1:${b.port}`)
  const closedA = new Promise((resolve) => tunnelA.once('close', resolve))

  replaceFile(file, rules([b.port]))
  const reloaded = await cli.waitFor((l) => l.message === 'reloaded')
  t.match(reloaded, { trigger: 'file changed', closed: 1, kept: 1 })
  await closedA
  const revoked = await cli.waitFor((l) => l.message === 'revoked')
  t.match(revoked, { target: `127.0.0.1:${a.port}`, reason: 'address-prohibited' })
  t.notOk(tunnelB.destroyed, 'the tunnel the new rules still allow stays open')
  tunnelB.write(`GET /still HTTP/1.1\r\nHost: b\r\n\r\n`)
  const reply = await new Promise<string>((resolve) => tunnelB.once('data', (d) => resolve(d.toString())))
  t.match(reply, /hello GET \/still/)

  writeFileSync(file, '{ "allow": [ "*" ] }')
  const failed = await cli.waitFor((l) => l.message === 'reload failed: keeping the previous rules')
  t.match(JSON.stringify(failed.errors), /allow\[0\]/)
  const still = await rawExchange(cli.port, `GET http://127.0.0.1:${b.port}/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(still.text), 200, 'old rules still in force after a bad reload')
  const gone = await rawExchange(cli.port, `GET http://127.0.0.1:${a.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(gone.text), 403)

  writeFileSync(file, JSON.stringify(rules([a.port, b.port])))
  cli.child.kill('SIGHUP')
  await cli.waitFor((l) => l.message === 'reloaded' && l.trigger === 'SIGHUP')
  const back = await rawExchange(cli.port, `GET http://127.0.0.1:${a.port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.equal(statusOf(back.text), 200)

  tunnelB.destroy()
  cli.child.kill('SIGTERM')
  t.equal(await cli.exited, 0)
})

t.test('start: rules that limit methods or paths need the local CA', async (t) => {
  const emptyDir = tempDir('noca')
  const rules = rulesFile({ allow: [{ host: 'api.github.com', ports: [443], methods: ['GET'], paths: ['/repos/our-org/**'] }] })
  const res = await runCli(['start', '--rules', rules, '--listen', '127.0.0.1:0', '--dir', emptyDir])
  t.equal(res.code, 1)
  t.match(res.stderr, /allow\[0\] limits methods or paths, which needs the local CA.*proxy-gate ca init/)
})
