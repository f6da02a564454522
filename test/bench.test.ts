// ci: floor line only: it checks files proxy-gate writes with the tools that read them, not Node's runtime
// `npm run bench -- --quick` works end to end: the tool is not a test (it never fails on a
// number), but a bench that no longer runs is found here rather than on the day it is needed.
// Only workloads without wrk or peers (squid, tinyproxy) run; the figures are not looked at.
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { tempDir } from './helpers/files.js'

const RUN = new URL('bench/run.mjs', import.meta.url).pathname
const run = promisify(execFile)

interface Cell {
  readonly errors?: number
}

interface Report {
  readonly sections: ReadonlyArray<{ readonly title: string }>
  readonly raw: {
    readonly tunnels: Record<string, Array<Cell & { readonly tunnels: number }>>
    readonly latency: Record<string, Array<Cell & { readonly count: number }>>
  }
}

t.test('the bench runs its tunnel, latency, policy and leaf workloads, the floors included', async (t) => {
  const json = join(tempDir('bench'), 'out.json')
  const args = [RUN, '--quick', '--only', 'tunnels,latency,policy,leaf', '--peers', '', '--seconds', '1', '--rate', '200', '--rules', '2000', '--json', json]
  const { stdout } = await run(process.execPath, args, { timeout: 50_000 })
  const report = JSON.parse(readFileSync(json, 'utf8')) as Report
  t.same(
    report.sections.map((s) => s.title.replace(/ .*/, '')),
    ['3.', '4.', '6.', '7.'],
    'one table per workload',
  )
  for (const name of ['direct', 'proxy-gate', 'floor']) {
    t.ok(report.raw.tunnels[name]?.[0]?.tunnels, `${name}: tunnels went through`)
    t.ok(report.raw.latency[name]?.[0]?.count, `${name}: requests at a fixed rate went through`)
  }
  t.match(stdout, /\| pg\/direct \| pg\/floor \|/, 'proxy-gate is shown against the floor')
})
