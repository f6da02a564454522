// ci: floor line only: pure functions, no I/O: the same under any Node
// The rule suggested for a denied request (lib/policy/suggest.ts, through decideRequest) allows
// that request and nothing else: the client's path is never read as a glob. A path holding "*"
// gets no suggestion (a glob reads "*" as a wildcard, spelled %2A too); "%", "?", "#" and white
// space are escaped so that the glob, decoded, is the path. And `learn`, which turns denials into
// rules, never writes a path rule at all.
import t from 'tap'
import { decideRequest, type DecisionContext } from '../lib/policy/decide.js'
import { parsePathGlob, parseRule } from '../lib/policy/rules.js'
import { normalisePath } from '../lib/policy/target.js'
import { createLearner } from '../lib/observe/learn.js'
import { DEFAULT_TLS } from '../lib/rules/config.js'
import { policy, target } from './helpers/fixtures.js'

const ENFORCE: DecisionContext = { mode: 'enforce', self: [], tls: DEFAULT_TLS }
const LIMITED = [{ host: 'api.test', ports: [443], methods: ['GET'], paths: ['/ok'] }]
const API = target('api.test:443')

/** The decision for METHOD on the raw request path, under LIMITED plus `extra` allow entries. */
function decideOn(method: string, rawPath: string, extra: unknown[] = []) {
  return decideRequest(policy([...LIMITED, ...extra]), ENFORCE, API, method, normalisePath(rawPath))
}

t.test('a path that decodes to "*" or "**" gets no suggestion, and the detail says why', async (t) => {
  for (const raw of ['/%2A%2A', '/%2a', '/a/%2A/b', '/*', '/**', '/x*y']) {
    const denied = decideOn('DELETE', raw)
    t.match(denied, { verdict: 'deny', reason: 'request-not-allowed', suggestion: undefined }, raw)
    t.match(denied.detail, 'no rule can allow exactly this request (a path glob reads every "*" as a wildcard, even as %2A)', `${raw}: why`)
  }
})

t.test('a suggestion, added to the rules, allows the request it was made for and not its neighbours', async (t) => {
  const cases: Array<[raw: string, glob: string, neighbours: string[]]> = [
    ['/ok2', '/ok2', ['/ok3', '/ok2/x']],
    ['/%252A%252A', '/%252A%252A', ['/anything', '/%2A%2A', '/x/y']],
    ['/a%25b', '/a%25b', ['/a%2525b', '/ab']],
    ['/a%3Fb', '/a%3Fb', ['/a', '/aXb', '/ab', '/b']],
    ['/a%23b', '/a%23b', ['/a']],
    ['/a%20b', '/a%20b', ['/a+b', '/ab']],
    ['/caf%C3%A9', '/café', ['/cafe']],
    ['/a.b/(c)', '/a.b/(c)', ['/aXb/(c)', '/a.b/c']],
  ]
  for (const [raw, glob, neighbours] of cases) {
    const denied = decideOn('DELETE', raw)
    const expected = { host: 'api.test', ports: [443], methods: ['DELETE'], paths: [glob] }
    t.equal(denied.suggestion, JSON.stringify(expected), `${raw}: the suggestion`)
    t.ok(parseRule(expected, 'allow', 0).ok, `${raw}: it parses`)
    t.match(decideOn('DELETE', raw, [expected]), { verdict: 'allow', rule: { index: 1 } }, `${raw}: added, it allows the request`)
    for (const other of neighbours) t.match(decideOn('DELETE', other, [expected]), { verdict: 'deny' }, `${raw}: added, ${other} stays denied`)
  }
})

t.test('a "?" in a path glob (written %3F) is that character, not a regular-expression quantifier', async (t) => {
  const glob = parsePathGlob('/a%3Fb')
  t.ok(glob.ok && glob.value.regex.test('/a?b'), 'it matches the path /a%3Fb decodes to')
  for (const path of ['/b', '/ab']) t.notOk(glob.ok && glob.value.regex.test(path), `not ${path}`)
})

t.test('learn never turns a denied request into a rule with paths: /%2A%2A is not learned as /**', async (t) => {
  const learner = createLearner()
  const suggestion = decideOn('DELETE', '/%2A%2A').suggestion
  learner.add({ id: 'x', client: '127.0.0.1:1', method: 'DELETE', target: 'api.test:443', path: '/**', decision: 'allow', reason: 'request-not-allowed', suggestion, mode: 'report', wouldDeny: true })
  const learned = learner.result()
  t.same(learned.allow, [], 'nothing learned from a request-level denial')
  t.same(learner.suggestions(), [], 'nothing suggested from it either')
})
