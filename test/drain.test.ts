// A drain that loses nothing: three proxy-gate processes behind Debian's HAProxy (TCP mode, health
// checks on /readyz), restarted one after the other (SIGTERM, wait for exit 0, start again, wait
// until HAProxy sees it up) while keep-alive clients, connection-per-request clients and CONNECT
// tunnels keep sending through HAProxy. Not one request may fail.
import { connect } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { Client } from 'undici'
import type { ServerResponse } from 'node:http'
import { startCli, type RunningCli } from './helpers/cli.js'
import { logLine, startProxy } from './helpers/proxy.js'
import { tempDir, writeJson } from './helpers/files.js'
import { HAPROXY_SKIP, stablePort, startHaproxy, type Backend } from './helpers/haproxy.js'
import { connectHead } from './helpers/http.js'
import { NETNS_SKIP, rawExchange, rawSession, startHttpUpstream, statusOf } from './helpers/net.js'

interface Load {
  readonly ok: () => number
  readonly failures: string[]
  stop(): Promise<void>
}

/** Sequential requests on one keep-alive connection (undici reconnects when told Connection: close). */
async function keepAliveLoop(port: number, target: string, running: () => boolean, ok: () => void, fail: (why: string) => void): Promise<void> {
  const client = new Client(`http://127.0.0.1:${port}`)
  for (let n = 0; running(); n++) {
    const path = `/k${n}`
    try {
      const res = await client.request({ method: 'GET', path: `http://${target}${path}` })
      const body = await res.body.text()
      if (res.statusCode === 200 && body === `hello GET ${path}`) ok()
      else fail(`keep-alive: ${res.statusCode} ${body.slice(0, 80)}`)
    } catch (error) {
      fail(`keep-alive: ${(error as Error).message}`)
    }
  }
  await client.close()
}

/** One new connection per request, closed by the client. */
async function freshLoop(port: number, target: string, running: () => boolean, ok: () => void, fail: (why: string) => void): Promise<void> {
  for (let n = 0; running(); n++) {
    const res = await rawExchange(port, `GET http://${target}/f${n} HTTP/1.1\r\nHost: ${target}\r\nConnection: close\r\n\r\n`, { until: (x) => x.endsWith(`hello GET /f${n}`) })
    if (statusOf(res.text) === 200 && res.text.endsWith(`hello GET /f${n}`)) ok()
    else fail(`fresh: ${JSON.stringify(res.text.slice(0, 80))} closed=${res.closed}`)
  }
}

/** A CONNECT tunnel, one request inside it, then the client closes it. */
function tunnelOnce(port: number, target: string, n: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let text = ''
    let sent = false
    const done = (why: string | undefined): void => {
      socket.destroy()
      resolve(why)
    }
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1')
      if (!sent && text.includes('\r\n\r\n')) {
        if (!text.startsWith('HTTP/1.1 200')) return done(`tunnel: ${JSON.stringify(text.slice(0, 80))}`)
        sent = true
        text = ''
        socket.write(`GET /t${n} HTTP/1.1\r\nHost: ${target}\r\n\r\n`)
      } else if (sent && text.endsWith(`hello GET /t${n}`)) done(undefined)
    })
    socket.on('close', () => done(`tunnel: closed after ${JSON.stringify(text.slice(0, 80))}`))
    socket.on('error', () => undefined)
    socket.write(connectHead(target))
  })
}

async function tunnelLoop(port: number, target: string, running: () => boolean, ok: () => void, fail: (why: string) => void): Promise<void> {
  for (let n = 0; running(); n++) {
    const why = await tunnelOnce(port, target, n)
    if (why === undefined) ok()
    else fail(why)
  }
}

function startLoad(port: number, target: string): Load {
  let running = true
  let ok = 0
  const failures: string[] = []
  const args = [port, target, () => running, () => ok++, (why: string) => failures.push(why)] as const
  const loops = [
    ...Array.from({ length: 4 }, () => keepAliveLoop(...args)),
    ...Array.from({ length: 2 }, () => freshLoop(...args)),
    ...Array.from({ length: 2 }, () => tunnelLoop(...args)),
  ]
  return {
    ok: () => ok,
    failures,
    stop: async () => {
      running = false
      await Promise.all(loops)
    },
  }
}

t.test('a rolling restart of three instances behind HAProxy loses no request', { skip: NETNS_SKIP || HAPROXY_SKIP, timeout: 60_000 }, async (t) => {
  const upstream = await startHttpUpstream()
  const target = `127.0.0.1:${upstream.port}`
  const dir = tempDir('drain')
  const rules = writeJson(dir, 'rules.json', { allow: [target], limits: { drainDelayMs: 1_000, shutdownGraceMs: 5_000 } })
  const backends: Backend[] = []
  for (let i = 0; i < 3; i++) backends.push({ port: await stablePort(), checkPort: await stablePort() })
  const start = (b: Backend, i: number): Promise<RunningCli> =>
    startCli(['start', '--rules', rules, '--listen', `127.0.0.1:${b.port}`, '--admin-listen', `127.0.0.1:${b.checkPort}`, '--admin-token-file', join(dir, `token-${i}`), '--log-format', 'json'])
  const instances = await Promise.all(backends.map(start))
  const everyInstance = [...instances]
  const haproxy = await startHaproxy(await stablePort(), backends)
  t.teardown(async () => {
    for (const cli of everyInstance) cli.child.kill('SIGKILL')
    await haproxy.close()
    await upstream.close()
  })
  const served = (cli: RunningCli): Promise<unknown> => cli.waitFor((l) => l.message === 'decision')

  const load = startLoad(haproxy.port, target)
  await Promise.all(instances.map(served))
  for (let i = 0; i < 3; i++) {
    const old = instances[i] as RunningCli
    old.child.kill('SIGTERM')
    await haproxy.waitFor(i, 'DOWN')
    t.equal(await old.exited, 0, `instance ${i} exits 0 after draining`)
    t.ok(['draining: not ready, still accepting', 'stopped accepting', 'stopped'].every((m) => old.lines.some((l) => l.message === m)), 'each phase logged')
    const fresh = await start(backends[i] as Backend, i)
    everyInstance.push(fresh)
    instances[i] = fresh
    await Promise.race([haproxy.waitFor(i, 'UP'), fresh.exited.then((code) => Promise.reject(new Error(`instance ${i} exited ${code}: ${fresh.stderr()}`)))])
    await served(fresh)
  }
  await load.stop()

  t.same(load.failures, [], 'no request failed')
  t.ok(load.ok() > 300, `${load.ok()} requests succeeded`)
  const counts = everyInstance.map((cli) => cli.lines.filter((l) => l.message === 'decision').length)
  t.ok(counts.every((n) => n > 0), `every instance served requests: ${counts.join(', ')}`)
})

const get = (target: string, path: string, keepAlive = true): string => `GET http://${target}${path} HTTP/1.1\r\nHost: ${target}\r\n${keepAlive ? '' : 'Connection: close\r\n'}\r\n`

t.test('drain phases: 503 at once, still accepting with Connection: close, idle keep-alive closed after the delay', async (t) => {
  let held: ServerResponse | undefined
  let arrived = (): void => undefined
  const heldArrived = new Promise<void>((resolve) => (arrived = resolve))
  const origin = await startHttpUpstream('127.0.0.1', (req, res) => {
    if (req.url !== '/held') return void res.end(`hello ${req.url ?? ''}`)
    held = res
    arrived()
  })
  t.teardown(() => origin.close())
  const target = `127.0.0.1:${origin.port}`
  const proxy = await startProxy({ allow: [target], limits: { drainDelayMs: 400, shutdownGraceMs: 5_000 } })

  const idle = await rawSession(proxy.port)
  await idle.send(get(target, '/first'))
  t.match(await idle.waitFor((x) => x.endsWith('hello /first')), /Connection: keep-alive/i, 'keep-alive before the drain')
  const inFlight = await rawSession(proxy.port)
  await inFlight.send(get(target, '/held'))
  await heldArrived

  const began = Date.now()
  const stopped = proxy.proxy.shutdown()
  t.notOk(proxy.proxy.ready())
  const ready = await rawExchange(proxy.port, 'GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  t.equal(statusOf(ready.text), 503, '/readyz says 503 at once, on a connection accepted while draining')
  const during = await rawSession(proxy.port)
  await during.send(get(target, '/during'))
  await during.closed
  t.equal(statusOf(during.text()), 200, 'served while draining')
  t.match(during.text(), /Connection: close/i, 'and told to go elsewhere next time')

  held?.end('late')
  await inFlight.closed
  t.match(inFlight.text(), /Connection: close[\s\S]*late$/i, 'a response still unsent when the drain began carries Connection: close')

  await idle.closed
  t.ok(Date.now() - began >= 350, `the idle keep-alive connection closed after the drain delay (${Date.now() - began} ms)`)
  await logLine(proxy, (l) => l.message === 'stopped accepting', 'stopped accepting')
  await stopped
  t.match(proxy.logs().find((l) => l.message === 'draining: not ready, still accepting'), { drainDelayMs: 400 })
  const refused = await rawExchange(proxy.port, get(target, '/after', false))
  t.equal(refused.text, '', 'no longer accepting')
})

t.test('a second SIGTERM during the drain stops at once; the admin /readyz says 503 while draining', async (t) => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.close())
  const target = `127.0.0.1:${upstream.port}`
  const dir = tempDir('drain-twice')
  const rules = writeJson(dir, 'rules.json', { allow: [target], limits: { drainDelayMs: 60_000, shutdownGraceMs: 60_000 } })
  const cli = await startCli(['start', '--rules', rules, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--admin-token-file', join(dir, 'token'), '--log-format', 'json'])
  t.teardown(() => cli.child.kill('SIGKILL'))
  const admin = Number(/:(\d+)\/$/.exec(String((await cli.waitFor((l) => l.message === 'admin listening')).url))?.[1])
  const tunnel = await rawSession(cli.port)
  await tunnel.send(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`)
  await tunnel.waitFor((x) => x.includes('\r\n\r\n'))

  cli.child.kill('SIGTERM')
  await cli.waitFor((l) => l.message === 'draining: not ready, still accepting')
  const probe = await rawExchange(admin, 'GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')
  t.equal(statusOf(probe.text), 503, 'admin /readyz: 503 while draining')
  const began = Date.now()
  cli.child.kill('SIGTERM')
  t.equal(await cli.exited, 0)
  t.ok(Date.now() - began < 5_000, `stopped at once (${Date.now() - began} ms), not after a minute`)
  await tunnel.closed
  t.ok(cli.lines.some((l) => l.message === 'stopping now: a second signal skips the rest of the drain and grace period'))
  t.match(cli.lines.find((l) => l.message === 'closing what is still open'), { tunnels: 1 })
})
