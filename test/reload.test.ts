// Reloading rules.json as it really changes: a Kubernetes ConfigMap volume swapping its `..data`
// symlink, an editor renaming a new file over the old one, rewrites that change nothing, a
// symlink into a folder whose events never reach the watcher (the stat poll), and which folder
// events are looked at.
import { mkdirSync, renameSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { startCli, type CliLine, type RunningCli } from './helpers/cli.js'
import { configMapVolume, tempDir } from './helpers/files.js'
import { mayConcern } from '../lib/rules/file.js'
import { rawExchange, startHttpUpstream, statusOf, type Upstream } from './helpers/net.js'

const rules = (port: number): string => JSON.stringify({ allow: [`127.0.0.1:${port}`], limits: { shutdownGraceMs: 500 } })

function start(t: Test, file: string): Promise<RunningCli> {
  const token = join(tempDir('token'), 'admin-token')
  return startCli(['start', '--rules', file, '--listen', '127.0.0.1:0', '--admin-listen', 'off', '--admin-token-file', token, '--log-format', 'json', '--log-level', 'debug']).then((cli) => {
    t.teardown(() => cli.stop())
    return cli
  })
}

async function upstreams(t: Test): Promise<[Upstream, Upstream]> {
  const a = await startHttpUpstream()
  const b = await startHttpUpstream()
  t.teardown(async () => {
    await a.close()
    await b.close()
  })
  return [a, b]
}

async function statusVia(cli: RunningCli, port: number): Promise<number | undefined> {
  const res = await rawExchange(cli.port, `GET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  return statusOf(res.text)
}

const isReload = (l: CliLine): boolean => l.message === 'reloaded' && l.trigger === 'file changed'
const reloads = (cli: RunningCli): number => cli.lines.filter(isReload).length
const isSame = (l: CliLine): boolean => l.message === 'rules file touched, its content is unchanged: not reloading'

t.test('a ConfigMap update (the kubelet swaps ..data) reloads within a couple of seconds', async (t) => {
  const [a, b] = await upstreams(t)
  const volume = configMapVolume({ 'rules.json': rules(a.port) })
  const cli = await start(t, join(volume.dir, 'rules.json'))
  t.equal(await statusVia(cli, a.port), 200)
  t.equal(await statusVia(cli, b.port), 403)

  const swapped = Date.now()
  volume.update({ 'rules.json': rules(b.port) })
  await cli.waitFor(isReload)
  const took = Date.now() - swapped
  t.ok(took < 2_000, `new rules in force ${took} ms after the swap`)
  t.equal(await statusVia(cli, b.port), 200, 'the new rules are in force')
  t.equal(await statusVia(cli, a.port), 403)

  volume.update({ 'rules.json': rules(a.port) })
  await cli.waitFor((l) => isReload(l) && reloads(cli) === 2)
  t.equal(await statusVia(cli, a.port), 200, 'and again on the next update')
})

t.test('an editor renaming a file over rules.json reloads; rewrites of the same text do not', async (t) => {
  const [a, b] = await upstreams(t)
  const dir = tempDir('reload')
  const file = join(dir, 'rules.json')
  writeFileSync(file, rules(a.port))
  const cli = await start(t, file)

  writeFileSync(`${file}.tmp`, rules(a.port))
  renameSync(`${file}.tmp`, file)
  await cli.waitFor(isSame)
  writeFileSync(file, rules(a.port))
  utimesSync(file, new Date(), new Date(Date.now() + 5_000))
  await cli.waitFor((l) => isSame(l) && cli.lines.filter(isSame).length >= 2)
  t.equal(reloads(cli), 0, 'same content: no reload')

  writeFileSync(`${file}.tmp`, rules(b.port))
  renameSync(`${file}.tmp`, file)
  await cli.waitFor(isReload)
  t.equal(await statusVia(cli, b.port), 200, 'the renamed-over file is in force')
  t.equal(reloads(cli), 1, 'one change, one reload')
})

t.test('a symlink into a folder the watcher does not see is caught by the stat poll', async (t) => {
  const [a, b] = await upstreams(t)
  const elsewhere = join(tempDir('reload-target'), 'deep')
  mkdirSync(elsewhere)
  writeFileSync(join(elsewhere, 'rules.json'), rules(a.port))
  const dir = tempDir('reload-link')
  symlinkSync(join(elsewhere, 'rules.json'), join(dir, 'rules.json'))
  const cli = await start(t, join(dir, 'rules.json'))

  writeFileSync(join(elsewhere, 'rules.json'), rules(b.port))
  await cli.waitFor(isReload)
  t.equal(await statusVia(cli, b.port), 200)
})

t.test('folder events wake the watcher only when they may be about the rules file', async (t) => {
  t.ok(mayConcern('rules.json', 'rules.json'), 'the file itself (written, or renamed over)')
  t.ok(mayConcern('..data', 'rules.json'), "a ConfigMap volume's ..data swap")
  t.ok(mayConcern('..data_tmp', 'rules.json'))
  t.ok(mayConcern(null, 'rules.json'), 'an event without a name')
  t.notOk(mayConcern('proxy-gate.log', 'rules.json'), 'a log written beside it (left to the poll)')
  t.notOk(mayConcern('rules.json.tmp', 'rules.json'), "an editor's temporary file: its rename onto rules.json is the event")
})
