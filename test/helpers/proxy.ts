// Starts proxy-gate in-process on an ephemeral loopback port, with its JSON log captured.
import { PassThrough } from 'node:stream'
import { parseConfig, type Config } from '../../lib/rules/config.js'
import { createLogger } from '../../lib/core/log.js'
import { createProxy, type Proxy, type ProxyOptions, type ReloadOutcome } from '../../lib/proxy/server.js'

export type LogLine = Record<string, unknown> & { message: string }

export interface TestProxy {
  readonly port: number
  /** http://127.0.0.1:PORT */
  readonly url: string
  readonly proxy: Proxy
  logs(): LogLine[]
  /** resolves with the first log line (already written or future) that matches */
  waitForLog(match: (line: LogLine) => boolean): Promise<LogLine>
  reload(rules: Record<string, unknown>): ReloadOutcome
  close(): Promise<void>
}

/** Waits for a log line, failing (instead of hanging the file) if it never comes within `ms`. */
export function logLine(proxy: TestProxy, match: (l: LogLine) => boolean, what: string, ms = 5_000): Promise<LogLine> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no log line: ${what}`)), ms)
    void proxy.waitForLog(match).then((line) => {
      clearTimeout(timer)
      resolve(line)
    })
  })
}

export function configFrom(rules: Record<string, unknown>): Config {
  const parsed = parseConfig({ listen: '127.0.0.1:0', ...rules })
  if (!parsed.ok) throw new Error(`test rules invalid: ${JSON.stringify(parsed.errors)}`)
  return parsed.value
}

export type StartOptions = Omit<ProxyOptions, 'config' | 'log'> & {
  /** what `start` does to the rules before running them (secrets: armSecrets), at start and reload */
  readonly arm?: (config: Config) => Config
}

export async function startProxy(rules: Record<string, unknown>, options: StartOptions = {}): Promise<TestProxy> {
  const stream = new PassThrough()
  const lines: LogLine[] = []
  const waiters: Array<{ match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = []
  let partial = ''
  stream.on('data', (chunk: Buffer) => {
    partial += chunk.toString('utf8')
    const parts = partial.split('\n')
    partial = parts.pop() ?? ''
    for (const part of parts) {
      if (part.trim() === '') continue
      const line = JSON.parse(part) as LogLine
      lines.push(line)
      for (const w of [...waiters]) {
        if (w.match(line)) {
          waiters.splice(waiters.indexOf(w), 1)
          w.resolve(line)
        }
      }
    }
  })
  const log = createLogger({ level: 'debug', format: 'json', stream, batchMs: 0 })
  const { arm = (c: Config) => c, ...proxyOptions } = options
  const proxy = createProxy({ ...proxyOptions, config: arm(configFrom(rules)), log })
  const address = await proxy.listen()
  return {
    port: address.port,
    url: `http://127.0.0.1:${address.port}`,
    proxy,
    logs: () => lines,
    waitForLog: (match) => {
      const found = lines.find(match)
      if (found) return Promise.resolve(found)
      return new Promise((resolve) => waiters.push({ match, resolve }))
    },
    reload: (next) => proxy.reload(arm(configFrom(next))),
    close: () => proxy.shutdown(),
  }
}
