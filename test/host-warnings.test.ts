// Host rules that load but are not what they look like get a warning in validate and in the
// start and reload logs: a name that mixes scripts or reads as another (a Cyrillic "а" in
// "аpple.com", punycode that decodes to one), and a wildcard directly on a public suffix (from the
// public suffix list that the tldts package ships: no network needed, and the tests have none).
import { renameSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { domainToASCII } from 'node:url'
import t from 'tap'
import { configWarnings, parseConfig } from '../lib/rules/config.js'
import { runCli, startCli } from './helpers/cli.js'
import { rulesFile } from './helpers/files.js'

const loaded = (name: string): boolean => Object.keys(createRequire(import.meta.url).cache).some((path) => path.includes(`/node_modules/${name}/`))

function warningsFor(rules: Record<string, unknown>): string[] {
  const parsed = parseConfig(rules)
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.errors))
  return configWarnings(parsed.value).map((w) => `${w.path} ${w.entry}: ${w.message}`)
}

const LOOK_ALIKE = 'it is not apple.com but a look-alike of it'

t.test('the public suffix list is loaded only for a wildcard that allows', async (t) => {
  t.same(warningsFor({ allow: ['a.test', '10.0.0.0/8:443'], deny: ['*.com'] }), [])
  t.notOk(loaded('tldts'), 'no wildcard in allow or bypass: tldts stays unloaded')
  t.same(warningsFor({ allow: ['*.example.com'] }), [])
  t.ok(loaded('tldts'))
})

t.test('names that mix scripts or read as another name', async (t) => {
  t.same(warningsFor({ allow: ['аpple.com', 'xn--pple-43d.com:443', { host: 'xn--80ak6aa92e.com' }, 'ѯabc.test', 'xn--ab-cd.test'], deny: ['раураl.com'], bypass: ['ραγ.test'] }), [
    `allow[0] аpple.com: mixes Cyrillic and Latin letters in "аpple" and looks like "apple.com": ${LOOK_ALIKE}`,
    `allow[1] xn--pple-43d.com:443: is "аpple.com" when decoded, which mixes Cyrillic and Latin letters in "аpple" and looks like "apple.com": ${LOOK_ALIKE}`,
    `allow[2] {"host":"xn--80ak6aa92e.com"}: is "аррӏе.com" when decoded, which looks like "apple.com": ${LOOK_ALIKE}`,
    'allow[3] ѯabc.test: mixes Cyrillic and Latin letters in "ѯabc": mixed scripts are how look-alikes of other names are made: check that it is the name you mean',
    'allow[4] xn--ab-cd.test: "xn--ab-cd" is not valid punycode: no name is written this way',
    'deny[0] раураl.com: mixes Cyrillic and Latin letters in "раураl" and looks like "paypal.com": it is not paypal.com but a look-alike of it',
    `bypass[0] ${domainToASCII('ραγ.test')}: is "ραγ.test" when decoded, which looks like "pay.test": it is not pay.test but a look-alike of it`,
  ])
  const fine = ['müller.de', '例子.中国', '日本語ひらがなカタカナabc.jp', '한국어漢字abc.kr', 'пример.рф', 'xn--ls8h.la', 'a-b_c.test', 'ελληνικά.gr']
  t.same(warningsFor({ allow: fine }), [], `no warning for ${fine.join(', ')}`)
})

t.test('a wildcard directly on a public suffix, where it lets traffic through', async (t) => {
  const allow = ['*.com', '*.co.uk:443', '*.github.io', '*.xn--p1ai', '*.example.com', '*.internal', '*.corp', '*.test', '*.s3.amazonaws.com']
  const registered = (suffix: string, shown = `"${suffix}"`) => `${shown} is a public suffix: "*.${suffix}" takes in every name registered under it, whoever holds it`
  const private_ = (suffix: string) => `"${suffix}" is a public suffix (on the private part of the list: the names under it belong to its many users): "*.${suffix}" takes in every name registered under it, whoever holds it`
  t.same(warningsFor({ allow, deny: ['*.net'], bypass: ['*.org'], upstream: 'http://127.0.0.1:3000', upstreamBypass: ['*.com'], policies: { dev: { allow: ['*.dev'] } } }), [
    `allow[0] *.com: ${registered('com')}`,
    `allow[1] *.co.uk:443: ${registered('co.uk')}`,
    `allow[2] *.github.io: ${private_('github.io')}`,
    `allow[3] *.xn--p1ai: ${registered('xn--p1ai', '"xn--p1ai" ("рф")')}`,
    `allow[8] *.s3.amazonaws.com: ${private_('s3.amazonaws.com')}`,
    `policies.dev.allow[0] *.dev: ${registered('dev')}`,
    `bypass[0] *.org: ${registered('org')}`,
  ], 'not for deny, nor for upstreamBypass, nor for names under a suffix, nor for suffixes not on the list')
})

t.test('validate prints the warnings and still passes', async (t) => {
  const res = await runCli(['validate', '--rules', rulesFile({ allow: ['аpple.com', '*.co.uk'] })])
  t.equal(res.code, 0)
  t.match(res.stdout, /: ok \(2 allow, 0 deny, 0 bypass\)\n/)
  t.match(res.stdout, `\nwarning: allow[0] аpple.com: mixes Cyrillic and Latin letters in "аpple" and looks like "apple.com": ${LOOK_ALIKE}\n`)
  t.match(res.stdout, '\nwarning: allow[1] *.co.uk: "co.uk" is a public suffix: "*.co.uk" takes in every name registered under it, whoever holds it\n')
})

t.test('start and each reload log them as warnings', async (t) => {
  const file = rulesFile({ allow: ['*.com'] })
  const cli = await startCli(['start', '--log-format', 'json', '--rules', file, '--listen', '127.0.0.1:0', '--admin-listen', 'off'])
  t.teardown(() => void cli.child.kill('SIGKILL'))
  const atStart = await cli.waitFor((l) => l.message === 'rules with warnings (see "proxy-gate validate")')
  t.match(atStart, { level: 'warn', warnings: ['allow[0] *.com: "com" is a public suffix: "*.com" takes in every name registered under it, whoever holds it'] })
  writeFileSync(`${file}.tmp`, JSON.stringify({ allow: ['xn--pple-43d.com'] }))
  renameSync(`${file}.tmp`, file)
  cli.child.kill('SIGHUP')
  await cli.waitFor((l) => l.message === 'reloaded' && l.trigger === 'SIGHUP')
  const afterReload = cli.lines.filter((l) => l.message === atStart.message).at(-1)
  t.match(afterReload, { warnings: [`allow[0] xn--pple-43d.com: is "аpple.com" when decoded, which mixes Cyrillic and Latin letters in "аpple" and looks like "apple.com": ${LOOK_ALIKE}`] })
  t.equal(await cli.stop(), 0)
})
