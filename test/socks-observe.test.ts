// What is seen of SOCKS traffic: the dashboard's most-denied rows with the entry to add, learn and
// suggest (live and from the log), and the terminal formatter, all from the decision lines that
// carry "listener":"socks".
import t from 'tap'
import { createActivity } from '../lib/observe/activity.js'
import { createLearner, decisionFromLogLine } from '../lib/observe/learn.js'
import { prettyFormatter } from '../lib/core/pretty.js'
import type { ProxyEvent } from '../lib/proxy/runtime.js'
import { startCanary } from './helpers/net.js'
import { logLine, startProxy } from './helpers/proxy.js'
import { socksConnect, socksSession } from './helpers/socks.js'

t.test('SOCKS denials reach the dashboard, learn and suggest, and the terminal formatter, marked socks', async (t) => {
  const canary = await startCanary('127.0.0.1')
  const activity = createActivity()
  const live = createLearner()
  const observe = (event: ProxyEvent): void => {
    activity.observe(event)
    if (event.type === 'decision') live.add(event)
  }
  const proxy = await startProxy({ socks: { listen: '127.0.0.1:0' }, allow: [] }, { observe })
  t.teardown(async () => {
    await proxy.close()
    await canary.close()
  })
  const port = proxy.proxy.socksAddress()?.port ?? 0
  const target = `db.example.test:${canary.port}`
  t.equal((await socksConnect(port, 'db.example.test', canary.port)).code, 0x02)
  t.equal((await socksConnect(port, 'db.example.test', canary.port)).code, 0x02)
  const line = await logLine(proxy, (l) => l.message === 'decision' && l.target === target, 'denial')

  const row = activity.topDenied(5).find((r) => r.target === target)
  t.match(row, { count: 2, reason: 'no-rule', suggestion: `"${target}"`, policy: 'default' }, 'a dashboard row with the entry to add')
  t.match(activity.recent().at(-1), { kind: 'decision', record: { target, listener: 'socks' } }, 'the live list shows it as SOCKS')
  t.match(live.suggestions(), [{ target, need: 'allow', count: 2, add: [target] }], 'learn, live')

  const fromLog = createLearner()
  const read = decisionFromLogLine(JSON.stringify(line))
  t.ok(read, 'suggest --from LOG reads the SOCKS line')
  if (read) fromLog.add(read.record, read.at)
  t.match(fromLog.result().allow, [{ host: 'db.example.test', ports: [canary.port] }], 'and learns the entry that allows it')

  const pretty = prettyFormatter(false)(line).join('\n')
  t.match(pretty, new RegExp(`DENY +CONNECT ${target.replace(/\./g, '\\.')}.*\\(socks\\)`), 'the terminal line says socks')

  const bind = await socksSession(port)
  bind.socket.write(Buffer.from([5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 22]))
  await bind.closed
  const refused = await logLine(proxy, (l) => l.message === 'decision' && l.method === 'BIND', 'bind')
  t.notMatch(prettyFormatter(false)(refused).join('\n'), /400 sent/, 'no HTTP status is said to be sent to a SOCKS client')
  t.equal(canary.connections(), 0)
})
