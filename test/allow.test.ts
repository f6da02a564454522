// The dashboard's Allow, end to end on the real command line: a denied destination's rule lands in
// rules.json (key order kept, a backup beside it) and is in force at once; in Chromium, and as raw
// HTTP. Everything that could let another site, another Host or a client without the token change
// the rules is refused with a clear status, and the file stays as it was.
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { chromium } from 'playwright-core'
import t from 'tap'
import { allowPost, CHROMIUM, CHROMIUM_ARGS, defaultRules, message, send, startGate } from './helpers/gate.js'
import { rawExchange, startHttpUpstream, statusOf } from './helpers/net.js'

t.test('Allow in Chromium: the page asks for the token (again after a wrong one), the rule lands in rules.json with a backup, and the request goes through', { skip: existsSync(CHROMIUM) ? false : `needs ${CHROMIUM}` }, async (t) => {
  const gate = await startGate(t, defaultRules)
  const original = readFileSync(gate.rulesFile, 'utf8')
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
  t.teardown(() => browser.close())
  const page = await (await browser.newContext()).newPage()
  await page.goto(`http://127.0.0.1:${gate.admin}/`)
  await page.locator('#status', { hasText: 'live' }).waitFor()

  t.equal(await gate.fetchThrough('allowme.test'), 403, 'denied at first')
  const target = `allowme.test:${gate.site.port}`
  const row = page.locator('#denied tbody tr', { hasText: target })
  await row.waitFor()
  t.equal(await row.locator('td.rule').textContent(), `"${target}"`)

  await row.locator('button', { hasText: 'allow' }).click()
  await page.locator('#token-row').waitFor()
  t.match(await page.locator('#allow-status').textContent(), 'paste the admin token', 'without a token the page asks for it')
  t.match(await page.locator('#token-file').textContent(), 'admin-token', 'and says where it is')
  await page.fill('#token', 'not-the-token-0123456789abcdef')
  await page.click('#token-save')
  await row.locator('button', { hasText: 'allow' }).click()
  await page.locator('#allow-status.failed', { hasText: 'the admin token was not accepted' }).waitFor()
  t.ok(await page.locator('#token-row').isVisible(), 'a wrong token is dropped and asked for again')
  t.equal(readFileSync(gate.rulesFile, 'utf8'), original, 'nothing written yet')
  await page.fill('#token', gate.token)
  await page.click('#token-save')
  await row.locator('button', { hasText: 'allow' }).click()
  const done = page.locator('#allow-status.ok', { hasText: 'reloaded' })
  await done.waitFor()
  t.match(await done.textContent(), `added "${target}" to "allow" in ${gate.rulesFile} (backup: ${gate.rulesFile}.proxy-gate-backup); reloaded`)

  t.equal(await gate.fetchThrough('allowme.test'), 200, 'the same request now goes through')
  const written = JSON.parse(readFileSync(gate.rulesFile, 'utf8')) as Record<string, unknown>
  const before = JSON.parse(original) as Record<string, unknown>
  t.same(Object.keys(written), Object.keys(before), 'key order kept')
  t.same(written, { ...before, allow: [...(before.allow as string[]), target] }, 'only the entry was added')
  t.equal(readFileSync(`${gate.rulesFile}.proxy-gate-backup`, 'utf8'), original, 'the backup holds the file as it was, byte for byte')
  await page.locator('#denied tbody tr', { hasText: target }).waitFor({ state: 'detached' })

  // the other way in: /#token=..., which the page keeps and takes out of the address bar
  const second = await (await browser.newContext()).newPage()
  await second.goto(`http://127.0.0.1:${gate.admin}/#token=${gate.token}`)
  await second.locator('#status', { hasText: 'live' }).waitFor()
  t.equal(second.url(), `http://127.0.0.1:${gate.admin}/`, 'the token is gone from the URL')
  t.equal(await gate.fetchThrough('second.test'), 403)
  const secondRow = second.locator('#denied tbody tr', { hasText: `second.test:${gate.site.port}` })
  await secondRow.waitFor()
  await secondRow.locator('button', { hasText: 'allow' }).click()
  await second.locator('#allow-status.ok', { hasText: 'reloaded' }).waitFor()
  t.ok(await second.locator('#token-row').isHidden(), 'no prompt: the token came with the URL')
  t.equal(await gate.fetchThrough('second.test'), 200)
})

t.test('Chromium: a page of another origin can neither read the token nor change the rules', { skip: existsSync(CHROMIUM) ? false : `needs ${CHROMIUM}` }, async (t) => {
  const gate = await startGate(t, defaultRules)
  // a simple form POST, the classic CSRF: text/plain shaped so the body reads as JSON
  const attacker = await startHttpUpstream('127.0.0.1', (_req, res) => {
    res.setHeader('Content-Type', 'text/html')
    res.end(`<title>elsewhere</title><form method="POST" enctype="text/plain" action="http://127.0.0.1:${gate.admin}/allow"><input name='{"id":"x","a":"' value='"}'><button id="go">go</button></form>`)
  })
  t.teardown(() => attacker.close())
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
  t.teardown(() => browser.close())
  t.equal(await gate.fetchThrough('allowme.test'), 403)
  const { id, suggestion } = await gate.row(`allowme.test:${gate.site.port}`)
  const original = readFileSync(gate.rulesFile, 'utf8')
  const page = await (await browser.newContext()).newPage()
  await page.goto(`http://127.0.0.1:${attacker.port}/`)
  const admin = `http://127.0.0.1:${gate.admin}`

  const results = await page.evaluate(
    async ({ admin, id, suggestion }) => {
      const body = JSON.stringify({ id, suggestion })
      const outcome = (p: Promise<Response>) => p.then((r) => `answered ${r.type} ${r.status}`, (e: unknown) => `failed: ${(e as Error).name}`)
      return {
        state: await outcome(fetch(`${admin}/api/state`)),
        simple: await outcome(fetch(`${admin}/allow`, { method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'text/plain' }, body })),
        withToken: await outcome(fetch(`${admin}/allow`, { method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: 'Bearer guessed-token-0123456789' }, body })),
      }
    },
    { admin, id, suggestion },
  )
  t.equal(results.state, 'failed: TypeError', 'the state (and so any row id) is not readable cross-origin')
  t.equal(results.simple, 'answered opaque 0', 'a simple POST is sent but its answer hidden (it was refused: below)')
  t.equal(results.withToken, 'failed: TypeError', 'a JSON POST with a token needs a preflight, which is never approved')

  const refused = page.waitForResponse(`${admin}/allow`)
  await page.click('#go')
  t.equal((await refused).status(), 403, 'a cross-site form POST is refused')
  t.equal(readFileSync(gate.rulesFile, 'utf8'), original, 'the rules file is untouched')
  t.notOk(existsSync(`${gate.rulesFile}.proxy-gate-backup`), 'and no backup was made')
  t.equal(await gate.fetchThrough('allowme.test'), 403, 'still denied')
})

t.test('POST /allow refuses, with a clear status, what is not the dashboard with the token', async (t) => {
  const gate = await startGate(t, defaultRules)
  t.equal(await gate.fetchThrough('allowme.test'), 403)
  const row = await gate.row(`allowme.test:${gate.site.port}`)
  const original = readFileSync(gate.rulesFile, 'utf8')
  const json = { 'Content-Type': 'application/json' }
  const body = JSON.stringify({ id: row.id, suggestion: row.suggestion })

  const foreign = await allowPost(gate, row, { Origin: 'http://evil.test' })
  t.equal(foreign.status, 403, 'a foreign Origin')
  t.match(message(foreign), 'another origin (http://evil.test)')
  t.equal((await allowPost(gate, row, { Origin: 'null' })).status, 403, 'an opaque Origin')
  t.equal((await allowPost(gate, row, { 'Sec-Fetch-Site': 'same-site' })).status, 403, 'Sec-Fetch-Site other than same-origin')
  t.equal((await allowPost(gate, row, { Host: 'evil.test' })).status, 421, 'a Host that is not the listener (DNS rebinding)')
  t.equal((await send(gate.admin, 'POST', '/reload', { Authorization: `Bearer ${gate.token}`, Origin: 'http://evil.test' })).status, 403, 'POST /reload from another origin too')
  const noToken = await send(gate.admin, 'POST', '/allow', json, body)
  t.equal(noToken.status, 401, 'no token')
  t.match(message(noToken), 'Authorization: Bearer TOKEN')
  t.equal((await allowPost(gate, row, { Authorization: 'Bearer wrong-token-0123456789abcdefghijklmnop' })).status, 401, 'a wrong token')
  t.equal((await allowPost(gate, row, { Authorization: gate.token })).status, 401, 'the token without "Bearer"')
  const form = await send(gate.admin, 'POST', '/allow', { 'Content-Type': 'text/plain', Origin: 'http://evil.test' }, body)
  t.equal(form.status, 403, 'a simple cross-site form POST (text/plain)')
  const plain = await allowPost(gate, row, { 'Content-Type': 'text/plain' })
  t.equal(plain.status, 415, 'text/plain even with the token')
  t.match(message(plain), 'Content-Type: application/json')
  const preflight = await send(gate.admin, 'OPTIONS', '/allow', { Origin: 'http://evil.test', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization,content-type' })
  t.equal(preflight.status, 405, 'a CORS preflight is not approved')
  t.notOk(Object.keys(preflight.headers).some((h) => h.startsWith('access-control-')), 'no CORS headers at all')
  const headers = { Authorization: `Bearer ${gate.token}`, ...json }
  t.equal((await send(gate.admin, 'POST', '/allow', headers, '{"id":')).status, 400, 'not JSON')
  t.equal((await send(gate.admin, 'POST', '/allow', headers, '["x"]')).status, 400, 'not {"id": ...}')
  t.equal((await send(gate.admin, 'POST', '/allow', headers, JSON.stringify({ id: row.id }))).status, 400, 'the id without the rule the page showed')
  t.equal((await allowPost(gate, { id: 'connect default nowhere.test:443 no-rule', suggestion: '"nowhere.test:443"' })).status, 404, 'an id that is not among the most denied')
  t.equal((await send(gate.admin, 'POST', '/allow', headers, JSON.stringify({ ...row, pad: 'x'.repeat(5000) }))).status, 413, 'a body over 4 KiB')
  t.equal(readFileSync(gate.rulesFile, 'utf8'), original, 'none of them wrote anything')
  t.notOk(existsSync(`${gate.rulesFile}.proxy-gate-backup`))

  chmodSync(gate.rulesFile, 0o600) // as it would be with password hashes in "auth"
  const tabbed = `${JSON.stringify(JSON.parse(original), null, '\t')}\n` // someone's own indentation, kept by the rewrite
  writeFileSync(gate.rulesFile, tabbed)
  const added = await allowPost(gate, row)
  t.equal(added.status, 200)
  t.match(JSON.parse(added.body), { ok: true, added: true, backup: `${gate.rulesFile}.proxy-gate-backup` })
  t.equal(await gate.fetchThrough('allowme.test'), 200)
  t.equal(statSync(gate.rulesFile).mode & 0o777, 0o600, 'the rewritten file keeps its permissions')
  t.equal(statSync(`${gate.rulesFile}.proxy-gate-backup`).mode & 0o777, 0o600, 'and so does the backup')
  t.equal(readFileSync(`${gate.rulesFile}.proxy-gate-backup`, 'utf8'), tabbed, 'the backup holds the file byte for byte')
  t.match(readFileSync(gate.rulesFile, 'utf8'), /^\{\n\t"/, 'the rewrite keeps its tab indentation')
})

t.test('Allow puts the entry into the policy that denied it; an entry already there is not written again', async (t) => {
  const gate = await startGate(t, (port, dns) => ({
    allow: [`127.0.0.1:${port}`],
    policies: { ci: { allow: [`127.0.0.1:${port}`] } },
    clients: [{ source: '127.0.0.0/8', policy: 'ci' }],
    dns: { servers: [dns] },
  }))
  t.equal(await gate.fetchThrough('allowme.test'), 403)
  const target = `allowme.test:${gate.site.port}`
  const row = await gate.row(target)
  t.match(row.id, / ci /, 'the row names the policy')
  const answer = await allowPost(gate, row)
  t.equal(answer.status, 200)
  t.match(message(answer), `added "${target}" to "policies.ci.allow"`)
  const written = JSON.parse(readFileSync(gate.rulesFile, 'utf8')) as { allow: string[]; policies: { ci: { allow: string[] } } }
  t.same(written.allow, [`127.0.0.1:${gate.site.port}`], 'the top-level allow is untouched')
  t.same(written.policies.ci.allow, [`127.0.0.1:${gate.site.port}`, target])
  t.equal(await gate.fetchThrough('allowme.test'), 200)

  // an entry someone wrote by hand since the denial: said so, and the file left alone
  t.equal(await gate.fetchThrough('second.test'), 403)
  const second = await gate.row(`second.test:${gate.site.port}`)
  written.policies.ci.allow.push(`second.test:${gate.site.port}`)
  writeFileSync(gate.rulesFile, JSON.stringify(written))
  const text = readFileSync(gate.rulesFile, 'utf8')
  const again = await allowPost(gate, second)
  t.equal(again.status, 200)
  t.match(JSON.parse(again.body), { ok: true, added: false })
  t.match(message(again), 'already in "policies.ci.allow"')
  t.equal(readFileSync(gate.rulesFile, 'utf8'), text, 'no write')
})

t.test('Allow does not write a file that would not load, a read-only file, or the packaged rules', async (t) => {
  t.test('a file broken since (a typo): 422 with the problems, nothing written', async (t) => {
    const gate = await startGate(t, defaultRules)
    t.equal(await gate.fetchThrough('allowme.test'), 403)
    const row = await gate.row(`allowme.test:${gate.site.port}`)
    const broken = { ...(JSON.parse(readFileSync(gate.rulesFile, 'utf8')) as object), dney: ['x.test'] }
    writeFileSync(gate.rulesFile, JSON.stringify(broken, null, 2))
    await gate.cli.waitFor((l) => l.message === 'reload failed: keeping the previous rules')
    const answer = await allowPost(gate, row)
    t.equal(answer.status, 422)
    t.match(JSON.parse(answer.body), { ok: false, message: /would not load: nothing was written/, errors: [/dney/] })
    t.same(JSON.parse(readFileSync(gate.rulesFile, 'utf8')), broken)
    t.notOk(existsSync(`${gate.rulesFile}.proxy-gate-backup`))
  })

  t.test('a read-only rules file: 409', async (t) => {
    const gate = await startGate(t, defaultRules)
    chmodSync(gate.rulesFile, 0o444)
    t.equal(await gate.fetchThrough('allowme.test'), 403)
    const answer = await allowPost(gate, await gate.row(`allowme.test:${gate.site.port}`))
    t.equal(answer.status, 409)
    t.match(message(answer), `${gate.rulesFile} is read-only: add "allowme.test:${gate.site.port}" to it by hand`)
    t.notOk(existsSync(`${gate.rulesFile}.proxy-gate-backup`))
    t.equal(await gate.fetchThrough('allowme.test'), 403)
  })

  t.test('the rules that ship with proxy-gate: 409', async (t) => {
    const gate = await startGate(t, defaultRules, { packaged: true })
    t.equal(statusOf((await rawExchange(gate.cli.port, 'CONNECT denied.example.test:443 HTTP/1.1\r\nHost: x\r\n\r\n')).text), 403)
    const answer = await allowPost(gate, await gate.row('denied.example.test:443'))
    t.equal(answer.status, 409)
    t.match(message(answer), /rules that ship with it .*read-only: run "proxy-gate init"/)
  })
})
