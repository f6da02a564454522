// ci: floor line only: pure functions, no I/O: the same under any Node
// Allow adds exactly the rule the admin saw, and a client's bytes never become a wildcard in it.
// A row of the most denied is one per target and reason, and each new denial changes its
// suggestion: POST /allow names the rule shown, and is refused (409, with the row as it is now)
// when the row suggests something else. A request path holding "*" (sent as %2A) gets no
// suggestion at all: a path glob reads every "*" as a wildcard, so no rule matches it alone.
import { existsSync, readFileSync } from 'node:fs'
import { chromium } from 'playwright-core'
import t from 'tap'
import { allowPost, CHROMIUM, CHROMIUM_ARGS, message, startGate, type Answer, type DeniedRow, type Gate } from './helpers/gate.js'

/** The site allows GET /ok on allowme.test: every other request there is denied with request-not-allowed. */
const limitedRules = (port: number, dns: string) => ({
  mode: 'enforce',
  allow: [`127.0.0.1:${port}`, { host: 'allowme.test', ports: [port], methods: ['GET'], paths: ['/ok'] }],
  dns: { servers: [dns], timeoutMs: 2000 },
})

const entry = (gate: Gate, method: string, path: string) => JSON.stringify({ host: 'allowme.test', ports: [gate.site.port], methods: [method], paths: [path] })
const target = (gate: Gate) => `allowme.test:${gate.site.port}`
const allowList = (gate: Gate) => (JSON.parse(readFileSync(gate.rulesFile, 'utf8')) as { allow: unknown[] }).allow

function conflict(answer: Answer): { ok: boolean; message: string; row: DeniedRow } {
  return JSON.parse(answer.body) as { ok: boolean; message: string; row: DeniedRow }
}

t.test('POST /allow adds the rule the page showed only while the row still suggests it; else 409 with the row as it is now', async (t) => {
  const gate = await startGate(t, limitedRules, { ca: true })
  t.equal(await gate.fetchThrough('allowme.test', 'GET', '/ok'), 200, 'the rule allows GET /ok')
  t.equal(await gate.fetchThrough('allowme.test', 'GET', '/ok2'), 403)
  const shown = await gate.row(target(gate))
  t.equal(shown.suggestion, entry(gate, 'GET', '/ok2'), 'the page is shown GET /ok2')
  t.equal(await gate.fetchThrough('allowme.test', 'GET', '/ok3'), 403, 'a new denial for the same target and reason')
  const original = readFileSync(gate.rulesFile, 'utf8')

  const stale = await allowPost(gate, shown)
  t.equal(stale.status, 409, 'the rule shown is no longer what the row suggests')
  t.match(conflict(stale), { ok: false, message: `the rule suggested for ${target(gate)} is now ${entry(gate, 'GET', '/ok3')}, not the one shown: nothing was written`, row: { id: shown.id, target: target(gate), suggestion: entry(gate, 'GET', '/ok3'), count: 2 } })
  t.equal(readFileSync(gate.rulesFile, 'utf8'), original, 'nothing written')
  t.notOk(existsSync(`${gate.rulesFile}.proxy-gate-backup`))

  const fresh = conflict(stale).row
  const added = await allowPost(gate, fresh)
  t.equal(added.status, 200, 'the rule the fresh row shows is added')
  t.match(JSON.parse(added.body), { ok: true, added: true })
  t.match(message(added), `added ${entry(gate, 'GET', '/ok3')} to "allow"`)
  t.same(allowList(gate).at(-1), JSON.parse(entry(gate, 'GET', '/ok3')), 'exactly that entry, last in "allow"')
  t.equal(await gate.fetchThrough('allowme.test', 'GET', '/ok3'), 200, 'GET /ok3 goes through')
  t.equal(await gate.fetchThrough('allowme.test', 'GET', '/ok2'), 403, 'GET /ok2, never added, stays denied')
})

t.test('a path sent as /%2A%2A gets no suggestion: no rule with a wildcard can be added from it, and DELETE /anything stays denied', async (t) => {
  const gate = await startGate(t, limitedRules, { ca: true })
  t.equal(await gate.fetchThrough('allowme.test', 'GET', '/ok2'), 403)
  const shown = await gate.row(target(gate))
  t.equal(await gate.fetchThrough('allowme.test', 'DELETE', '/%2A%2A'), 403)
  const row = await gate.row(target(gate))
  t.equal(row.suggestion, undefined, 'the row has no rule to add (it decodes to "/**", which a glob reads as every path)')
  t.match(row, { id: shown.id, detail: /DELETE \/\*\* is not allowed on .*no rule can allow exactly this request/ }, 'the denial is still shown, with why')
  const original = readFileSync(gate.rulesFile, 'utf8')

  const stale = await allowPost(gate, shown)
  t.equal(stale.status, 409, 'the rule shown before (GET /ok2) is not added either: the row has changed')
  t.match(conflict(stale), { ok: false, message: `no rule can allow ${target(gate)} now`, row: { id: shown.id } })
  t.notOk('suggestion' in conflict(stale).row, 'the fresh row has no rule to add')
  const wildcard = await allowPost(gate, { id: shown.id, suggestion: entry(gate, 'DELETE', '/**') })
  t.equal(wildcard.status, 409, 'the wildcard rule the old code suggested cannot be asked for')
  t.equal(readFileSync(gate.rulesFile, 'utf8'), original, 'nothing written')
  t.equal(await gate.fetchThrough('allowme.test', 'DELETE', '/anything/at/all'), 403, 'DELETE /anything/at/all stays denied')
})

t.test('a path sent as /%252A%252A is suggested literally: the rule added allows that path and no other', async (t) => {
  const gate = await startGate(t, limitedRules, { ca: true })
  t.equal(await gate.fetchThrough('allowme.test', 'DELETE', '/%252A%252A'), 403)
  const row = await gate.row(target(gate))
  // it decodes to "/%2A%2A": a glob decodes that again, to "/**", unless its "%" is escaped
  t.equal(row.suggestion, entry(gate, 'DELETE', '/%252A%252A'), 'the "%" of the decoded path is escaped')
  const added = await allowPost(gate, row)
  t.equal(added.status, 200)
  t.equal(await gate.fetchThrough('allowme.test', 'DELETE', '/%252A%252A'), 200, 'the request it was made for goes through')
  t.equal(await gate.fetchThrough('allowme.test', 'DELETE', '/anything'), 403, 'DELETE /anything stays denied')
  t.equal(await gate.fetchThrough('allowme.test', 'DELETE', '/%2A%2A'), 403, 'and so does DELETE /%2A%2A')
})

t.test('Chromium: the row changes between display and click: nothing is written, the page shows the new rule, and allow then adds that one', { skip: existsSync(CHROMIUM) ? false : `needs ${CHROMIUM}` }, async (t) => {
  const gate = await startGate(t, limitedRules, { ca: true })
  const original = readFileSync(gate.rulesFile, 'utf8')
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
  t.teardown(() => browser.close())
  const page = await (await browser.newContext()).newPage()
  await page.goto(`http://127.0.0.1:${gate.admin}/#token=${gate.token}`)
  await page.locator('#status', { hasText: 'live' }).waitFor()
  const row = page.locator('#denied tbody tr', { hasText: target(gate) })
  const rule = row.locator('td.rule')
  const allowButton = row.locator('button', { hasText: 'allow' })
  const clickAllow = async (): Promise<number> => {
    const answer = page.waitForResponse((r) => new URL(r.url()).pathname === '/allow')
    await allowButton.click()
    return (await answer).status()
  }

  t.equal(await gate.fetchThrough('allowme.test', 'GET', '/ok2'), 403)
  await page.locator('#denied td.rule', { hasText: entry(gate, 'GET', '/ok2') }).waitFor()
  // the page refreshes the table every few seconds and after each decision: held back here, so
  // that a new denial can change the row while the page still shows the old one
  await page.route('**/api/state', (route) => route.abort())
  t.equal(await gate.fetchThrough('allowme.test', 'GET', '/ok3'), 403)
  t.equal((await gate.row(target(gate))).suggestion, entry(gate, 'GET', '/ok3'), 'the row now suggests GET /ok3')
  t.equal(await rule.textContent(), entry(gate, 'GET', '/ok2'), 'while the page still shows GET /ok2')

  t.equal(await clickAllow(), 409, 'allow on the rule shown: refused, the row has changed')
  t.equal(readFileSync(gate.rulesFile, 'utf8'), original, 'nothing was written')
  await page.locator('#allow-status.failed', { hasText: `is now ${entry(gate, 'GET', '/ok3')}, not the one shown` }).waitFor()
  t.equal(await rule.textContent(), entry(gate, 'GET', '/ok3'), 'the page shows the new rule, from the answer (its state requests are held back)')

  t.equal(await gate.fetchThrough('allowme.test', 'DELETE', '/%2A%2A'), 403, 'a denial with no rule to add changes the row again')
  t.equal(await clickAllow(), 409)
  await page.locator('#allow-status.failed', { hasText: `no rule can allow ${target(gate)} now` }).waitFor()
  t.equal(await rule.textContent(), '', 'the page shows no rule')
  t.equal(await allowButton.count(), 0, 'and no allow button')
  t.equal(readFileSync(gate.rulesFile, 'utf8'), original, 'nothing was written')

  await page.unroute('**/api/state')
  t.equal(await gate.fetchThrough('allowme.test', 'GET', '/ok3'), 403)
  await page.locator('#denied td.rule', { hasText: entry(gate, 'GET', '/ok3') }).waitFor()
  t.equal(await clickAllow(), 200, 'allow on the rule shown now')
  await page.locator('#allow-status.ok', { hasText: `added ${entry(gate, 'GET', '/ok3')}` }).waitFor()
  t.same(allowList(gate).at(-1), JSON.parse(entry(gate, 'GET', '/ok3')), 'exactly the rule shown was added')
  t.equal(await gate.fetchThrough('allowme.test', 'GET', '/ok3'), 200)
  t.equal(await gate.fetchThrough('allowme.test', 'DELETE', '/anything'), 403)
})
