// lib/proxy/runtime.ts: the decision line decisionJson writes field by field is, byte for byte,
// what JSON.stringify writes for the same event (escapes, lone surrogates, absent fields included);
// closedJson likewise for a tunnel's closed event.
import { Socket } from 'node:net'
import t from 'tap'
import { decideTarget, type Decision } from '../lib/policy/decide.js'
import { parseIp } from '../lib/policy/ip.js'
import { compilePolicy } from '../lib/policy/rules.js'
import { parseAuthority } from '../lib/policy/target.js'
import { reply } from '../lib/core/reply.js'
import { closedJson, decisionJson, logDecision, tunnelClosed, type ProxyEvent, type Runtime } from '../lib/proxy/runtime.js'

type DecisionEvent = Extract<ProxyEvent, { type: 'decision' }>

const compiled = compilePolicy({ allow: ['203.0.113.0/24:443', 'ok.example:443'], deny: ['bad.example:*'] })
if (!compiled.ok) throw new Error('test policy invalid')
const policy = compiled.value
const ctx = { mode: 'enforce' as const, self: [], tls: { ports: [], requireSni: false, allowNonTls: true, helloTimeoutMs: 1_000, upstreamCaFiles: [] } }

/** The event logDecision hands to rt.record, for one entry. */
function eventOf(entry: Parameters<typeof logDecision>[1]): DecisionEvent {
  let seen: DecisionEvent | undefined
  const rt = {
    gate: () => ({ ctx }),
    record: (event: ProxyEvent) => {
      if (event.type === 'decision') seen = event
    },
  } as unknown as Runtime
  logDecision(rt, entry)
  if (!seen) throw new Error('no decision recorded')
  return seen
}

function decided(target: string): Decision {
  const parsed = parseAuthority(target)
  if (!parsed.ok) throw new Error(target)
  const first = decideTarget(policy, ctx, parsed.value)
  if (first.verdict === 'resolve') throw new Error(`${target} needs DNS`)
  return first
}

/** a client socket with a peer, and one without (its address unknown) */
const socket = Object.defineProperties(new Socket(), { remoteAddress: { value: '192.0.2.7' }, remotePort: { value: 50_123 } })
const unconnected = new Socket()
const target = (text: string) => {
  const parsed = parseAuthority(text)
  return parsed.ok ? parsed.value : undefined
}

t.test('decisionJson writes what JSON.stringify writes for every kind of decision event', async (t) => {
  const ip = parseIp('203.0.113.9')
  const events: DecisionEvent[] = [
    eventOf({ id: 'a-1', req: { socket }, method: 'CONNECT', target: target('203.0.113.9:443'), rawTarget: '203.0.113.9:443', decision: decided('203.0.113.9:443'), policy: 'default' }),
    eventOf({ id: 'a-2', req: { socket }, method: 'CONNECT', target: target('bad.example:443'), rawTarget: 'bad.example:443', decision: decided('bad.example:443') }),
    eventOf({ id: 'a-3', req: { socket }, method: 'CONNECT', target: target('203.0.113.9:22'), rawTarget: '203.0.113.9:22', decision: decided('203.0.113.9:22'), resolved: ip ? [ip, ip] : [] }),
    eventOf({ id: 'a-4', req: { socket: unconnected }, method: 'GET', target: undefined, rawTarget: 'http://u:p@x/\u0001"\\\ud800', reply: reply(400, 'http_request_error', 'bad "target"\n\u2028 \ud83d\ude00 \udc00') }),
    eventOf({ id: 'a-5', req: { socket }, method: 'GET', target: target('ok.example:443'), rawTarget: '', decision: { ...decided('203.0.113.9:443'), secret: 'GH,NPM' }, sni: 'ok.example', path: '/a"b', intercepted: true, policy: 'team "x"', listener: 'transparent' }),
    eventOf({ id: 'a-6', req: { socket }, method: 'TLS', target: target('ok.example:443'), rawTarget: '', reply: { ...reply(502, 'destination_unavailable', 'gone'), status: Number.NaN } }),
  ]
  for (const event of events) t.equal(decisionJson(event), JSON.stringify(event), `${event.id}: the same text`)
  t.match(events[3] && decisionJson(events[3]), /\\u0001|\\"|\\ud800/, 'escapes were needed, and written by JSON.stringify')
  // a decision event built elsewhere (its fields in another order) is left to JSON.stringify
  const other: DecisionEvent = { type: 'decision', id: 'b-1', client: '?', method: '', target: '', decision: 'error', reason: 'x', status: 400, detail: 'y', mode: 'enforce', wouldDeny: false }
  t.equal(decisionJson(other), JSON.stringify(other), 'another order: the same text')
})

t.test('closedJson writes what JSON.stringify writes for a tunnel closed event', async (t) => {
  const events = [
    tunnelClosed('c-1', '192.0.2.1', 5, 1_048_576, 2, undefined, undefined),
    tunnelClosed('c-2', undefined, 0, 0, 0.5, 'upstream reset "ECONNRESET"\n', 'parent.example:3128', 'socks'),
    tunnelClosed('c-3', '2001:db8::1', -0, Number.NaN, Number.POSITIVE_INFINITY, '\ud800', undefined),
  ]
  for (const event of events) t.equal(closedJson(event), JSON.stringify(event), `${event.id}: the same text`)
  const other = { type: 'closed' as const, id: 'd-1', kind: 'forward' as const, method: 'GET', status: 200, durationMs: 3 }
  t.equal(closedJson(other), JSON.stringify(other), 'built elsewhere: the same text')
})
