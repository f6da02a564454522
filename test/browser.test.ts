// A real browser as the client: headless Chromium configured only with proxy-gate's PAC URL.
// Chromium never proxies loopback, so pages use names that proxy-gate resolves through the test
// DNS server (an IP rule lets the loopback origin through the address guard).
import { existsSync } from 'node:fs'
import { chromium } from 'playwright-core'
import t from 'tap'
import { startDns } from './helpers/dns.js'
import { startHttpUpstream, startHttpsUpstream } from './helpers/net.js'
import { startProxy } from './helpers/proxy.js'

const CHROMIUM = '/usr/bin/chromium'
const skip = existsSync(CHROMIUM) ? false : `needs Debian's chromium at ${CHROMIUM} (apt-get install chromium)`

t.test('Chromium with the PAC URL loads allowed pages through proxy-gate and gets 403 for denied ones', { skip }, async (t) => {
  const site = await startHttpUpstream('127.0.0.1', (_req, res) => {
    res.setHeader('Content-Type', 'text/html')
    res.end('<title>allowed page</title><h1>through proxy-gate</h1>')
  })
  const secure = await startHttpsUpstream('127.0.0.1', ['secure.pg.test'])
  const dns = await startDns({
    'allowed.pg.test': { A: ['127.0.0.1'] },
    'denied.pg.test': { A: ['127.0.0.1'] },
    'secure.pg.test': { A: ['127.0.0.1'] },
  })
  const proxy = await startProxy({
    allow: [`allowed.pg.test:${site.port}`, `127.0.0.1:${site.port}`, `secure.pg.test:${secure.port}`, `127.0.0.1:${secure.port}`],
    bypass: ['localhost'],
    dns: { servers: [dns.server], timeoutMs: 2000 },
  })
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      `--proxy-pac-url=${proxy.url}/proxy.pac`,
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
  t.teardown(async () => {
    await browser.close()
    await proxy.close()
    await Promise.all([site.close(), secure.close(), dns.close()])
  })
  const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage()

  const ok = await page.goto(`http://allowed.pg.test:${site.port}/`)
  t.equal(ok?.status(), 200)
  t.equal(await page.title(), 'allowed page')

  const denied = await page.goto(`http://denied.pg.test:${site.port}/`)
  t.equal(denied?.status(), 403)
  t.match(await page.textContent('body'), /no allow rule matches denied\.pg\.test:\d+/)
  t.equal(denied?.headers()['proxy-status'], `proxy-gate; error=http_request_denied; details="no allow rule matches denied.pg.test:${site.port}"`)

  const tls = await page.goto(`https://secure.pg.test:${secure.port}/hello`)
  t.equal(tls?.status(), 200, 'https goes through a CONNECT tunnel')
  t.match(await page.textContent('body'), /hello GET \/hello/)

  await t.rejects(page.goto(`https://denied.pg.test:${secure.port}/`), 'a denied CONNECT fails the navigation')

  const decisions = proxy.logs().filter((l) => l.message === 'decision')
  t.ok(decisions.some((l) => l.decision === 'allow' && l.target === `allowed.pg.test:${site.port}` && l.method === 'GET'), 'allowed GET logged')
  t.ok(decisions.some((l) => l.decision === 'deny' && l.target === `denied.pg.test:${site.port}`), 'denied GET logged')
  t.ok(decisions.some((l) => l.decision === 'allow' && l.method === 'CONNECT' && l.target === `secure.pg.test:${secure.port}`), 'allowed CONNECT logged')
  t.ok(decisions.some((l) => l.decision === 'deny' && l.method === 'CONNECT' && l.target === `denied.pg.test:${secure.port}`), 'denied CONNECT logged')
  t.equal(dns.queries('denied.pg.test'), 0, 'the denied name was never resolved')
  t.ok(site.requests.length > 0, 'the origin was reached')
  t.same(new Set(site.requests.map((r) => r.headers.host)), new Set([`allowed.pg.test:${site.port}`]), 'only the allowed name reached the origin (page and favicon)')
})
