// The dashboard and /#token=TOKEN, in headless Chromium: the token from the link is kept when the
// browser keeps none; any other page could open such a link, so one that differs from the kept
// token is only offered, and replaces it only when the person says so.
import { existsSync } from 'node:fs'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import t from 'tap'
import { createActivity } from '../lib/observe/activity.js'
import { createAdmin } from '../lib/observe/admin.js'
import { createMetrics } from '../lib/observe/metrics.js'
import { CHROMIUM, CHROMIUM_ARGS } from './helpers/gate.js'

const KEY = 'proxy-gate-admin-token'

t.test('/#token=: kept when none is, else offered; the kept token changes only when the person says so', { skip: existsSync(CHROMIUM) ? false : `needs ${CHROMIUM}` }, async (t) => {
  const admin = createAdmin(
    { host: '127.0.0.1', port: 0 },
    {
      activity: createActivity(),
      metrics: createMetrics(() => new Set()),
      open: () => new Set(),
      ready: () => true,
      mode: () => 'enforce',
      rulesFile: 'rules.json',
      reload: () => ({ ok: true }),
      allow: () => ({ status: 409, body: { ok: false, message: 'not here' } }),
      token: 'the-real-token-0123456789',
      tokenFile: 'admin-token',
    },
  )
  const port = (await admin.listen()).port
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
  t.teardown(async () => {
    await browser.close()
    await admin.close()
  })
  const context: BrowserContext = await browser.newContext()
  const base = `http://127.0.0.1:${port}/`
  /** a new tab opened on the link, as another page (or the person) would open it */
  const open = async (token: string): Promise<Page> => {
    const page = await context.newPage()
    await page.goto(`${base}#token=${token}`)
    await page.waitForURL(base)
    return page
  }
  const kept = (page: Page): Promise<unknown> => page.evaluate(`localStorage.getItem('${KEY}')`)

  const first = await open('first-token-0123456789')
  t.equal(await kept(first), 'first-token-0123456789', 'none was kept: the link\'s token is')
  t.notOk(await first.locator('#token-offer').isVisible(), 'nothing to ask')

  const evil = await open('chosen-by-another-page-01')
  t.equal(await kept(evil), 'first-token-0123456789', 'another token in a link does not replace the kept one')
  const offer = evil.locator('#token-offer')
  t.ok(await offer.isVisible(), 'it is offered')
  t.match(await offer.textContent(), 'Use it only if you opened that link yourself')
  await evil.click('#token-offer-keep')
  t.notOk(await offer.isVisible())
  t.equal(await kept(evil), 'first-token-0123456789', 'kept')

  const second = await open('second-token-0123456789')
  await second.click('#token-offer-use')
  t.equal(await kept(second), 'second-token-0123456789', 'replaced when the person says so')
  t.match(await second.locator('#allow-status').textContent(), 'the token from the link is saved')

  const same = await open('second-token-0123456789')
  t.notOk(await same.locator('#token-offer').isVisible(), 'the kept token in a link: nothing to ask')
  t.equal(await kept(same), 'second-token-0123456789')
})
