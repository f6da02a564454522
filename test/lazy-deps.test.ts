// lib/core/lazy.ts: undici, http-proxy and node-forge stay unloaded until a request needs them
// (tunnels need none), and one that cannot be loaded gets that request a 500, not a crash.
// Self-contained sockets only: the shared test helpers import node-forge themselves. And loading
// proxy-gate does not load the undici bundled with Node (lib/core/builtins.ts).
import { writeFileSync } from 'node:fs'
import { execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { createServer as createHttpServer } from 'node:http'
import { connect, createServer, type AddressInfo, type Server } from 'node:net'
import { promisify } from 'node:util'
import t from 'tap'
import { startCli } from './helpers/cli.js'
import { tempDir, writeJson } from './helpers/files.js'
import { startProxy } from './helpers/proxy.js'

const loaded = (name: string): boolean => Object.keys(createRequire(import.meta.url).cache).some((path) => path.includes(`/node_modules/${name}/`))

async function listening(t: { teardown(fn: () => unknown): void }, server: Server | ReturnType<typeof createHttpServer>): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => void server.close())
  return (server.address() as AddressInfo).port
}

/** Writes `bytes` to the proxy and resolves with what came back once `until` holds (or the socket closed). */
function exchange(port: number, bytes: string, until: (text: string) => boolean): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(bytes))
    let text = ''
    const done = (): void => {
      socket.destroy()
      resolve(text)
    }
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1')
      if (until(text)) done()
    })
    socket.on('close', done)
    socket.on('error', done)
  })
}

const UPGRADE = (port: number): string => `GET http://127.0.0.1:${port}/ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`
const GET = (port: number): string => `GET http://127.0.0.1:${port}/ HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`

t.test('a tunnel loads no dependency; plain HTTP loads undici, an upgrade http-proxy, and node-forge waits for a CA', async (t) => {
  const echoPort = await listening(t, createServer((s) => s.on('data', (d) => s.write(d))))
  const httpPort = await listening(t, createHttpServer((_req, res) => res.end('origin')))
  const proxy = await startProxy({ allow: [`127.0.0.1:${echoPort}`, `127.0.0.1:${httpPort}`] })
  t.teardown(() => proxy.close())
  const deps = ['undici', 'http-proxy', 'node-forge']
  t.same(deps.filter(loaded), [], 'none at start')
  const tunnel = await exchange(proxy.port, `CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\nHost: 127.0.0.1:${echoPort}\r\n\r\nhello`, (text) => text.endsWith('hello'))
  t.match(tunnel, /^HTTP\/1\.1 200 [^]*hello$/, 'the tunnel relays')
  t.same(deps.filter(loaded), [], 'none after a tunnel')
  const get = await exchange(proxy.port, GET(httpPort), (text) => text.endsWith('origin'))
  t.match(get, /^HTTP\/1\.1 200 [^]*origin$/, 'plain HTTP is relayed')
  t.same(deps.filter(loaded), ['undici'], 'undici after plain HTTP')
  await exchange(proxy.port, UPGRADE(httpPort), (text) => text.includes('\r\n\r\n'))
  t.same(deps.filter(loaded), ['undici', 'http-proxy'], 'http-proxy after an upgrade')
})

t.test('a dependency that cannot be loaded answers that request 500 and the proxy stays up', async (t) => {
  const dir = tempDir('lazy-deps')
  // stands for a broken install: every require of these three fails, as a missing package would
  const preload = join(dir, 'missing-deps.cjs')
  writeFileSync(preload, `const Module = require('node:module'); const load = Module._load; Module._load = function (request, ...rest) { if (['undici', 'http-proxy', 'node-forge'].includes(request)) throw new Error("Cannot find module '" + request + "'"); return load.call(this, request, ...rest) }`)
  const echoPort = await listening(t, createServer((s) => s.on('data', (d) => s.write(d))))
  const httpPort = await listening(t, createHttpServer((_req, res) => res.end('origin')))
  const rules = writeJson(dir, 'rules.json', { allow: [`127.0.0.1:${echoPort}`, `127.0.0.1:${httpPort}`] })
  const cli = await startCli(['start', '--rules', rules, '--listen', '127.0.0.1:0', '--log-format', 'json', '--admin-listen', 'off', '--dir', dir], { env: { NODE_OPTIONS: `--require ${preload}` } })
  t.teardown(() => cli.stop())
  const get = await exchange(cli.port, GET(httpPort), (text) => text.includes('\r\n\r\n'))
  t.match(get, /^HTTP\/1\.1 500 [^]*proxy-status: proxy-gate; error=proxy_internal_error/i, 'plain HTTP: 500')
  const upgrade = await exchange(cli.port, UPGRADE(httpPort), (text) => text.includes('\r\n\r\n'))
  t.match(upgrade, /^HTTP\/1\.1 500 [^]*proxy-status: proxy-gate; error=proxy_internal_error/i, 'upgrade: 500')
  for (const where of ['forward', 'upgrade']) {
    const logged = await cli.waitFor((l) => l.message === 'internal error' && l.where === where)
    t.match(logged.error, /Cannot find module/, `${where}: logged as an internal error`)
  }
  const tunnel = await exchange(cli.port, `CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\nHost: 127.0.0.1:${echoPort}\r\n\r\nhello`, (text) => text.endsWith('hello'))
  t.match(tunnel, /^HTTP\/1\.1 200 [^]*hello$/, 'tunnels still work')
  t.equal(cli.child.exitCode, null, 'still running')
})

t.test("proxy-gate's modules do not load the undici bundled with Node (an ESM import of node:http would, on Node 22 and 24)", async (t) => {
  // in a fresh process: this file's own `import ... from 'node:http'` has loaded it here already on those lines
  const start = new URL('../dist/cli/start.js', import.meta.url).href
  const script = `await import(${JSON.stringify(start)}); await import(${JSON.stringify(new URL('../dist/proxy/server.js', import.meta.url).href)}); console.log(JSON.stringify(process.moduleLoadList.filter((m) => m.includes('deps/undici'))))`
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script])
  t.same(JSON.parse(stdout), [], `none on Node ${process.version}`)
})
