// The dashboard's static files: one page, one stylesheet, one script, no external assets. The
// script builds every cell with textContent, so hostnames and paths (attacker-controlled) are
// shown as text, never parsed as HTML. Allow sends the admin token, which the page never fetches:
// the person pastes it (or opens the page as /#token=..., taken only when none is kept, else
// offered) and it stays in this origin's storage.

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>proxy-gate</title>
<link rel="stylesheet" href="/dashboard.css">
<script src="/dashboard.js" defer></script>
</head>
<body>
<header>
  <h1>proxy-gate</h1>
  <span id="status" class="pill">connecting</span>
  <span id="mode" class="pill"></span>
</header>
<section class="counters">
  <div><b id="count-allow">0</b><span>allowed</span></div>
  <div><b id="count-deny">0</b><span>denied</span></div>
  <div><b id="count-error">0</b><span>errors</span></div>
  <div><b id="count-open">0</b><span>open connections</span></div>
</section>
<section>
  <h2>Most denied</h2>
  <p class="hint">Add the rule to <code>allow</code> in <span id="rules-file"></span> to let it through, or press allow to have proxy-gate add it and reload.</p>
  <p id="token-row" hidden><label>Allow needs the admin token, from <code id="token-file"></code>: <input id="token" type="password" autocomplete="off" spellcheck="false"></label> <button id="token-save">save</button></p>
  <p id="token-offer" hidden>The link that opened this page carries an admin token other than the one this browser keeps. Use it only if you opened that link yourself (any web page can open one): <button id="token-offer-use">use the token from the link</button> <button id="token-offer-keep">keep the saved token</button></p>
  <p id="allow-status" role="status"></p>
  <table id="denied"><thead><tr><th>destination</th><th>times</th><th>why</th><th>rule to add</th><th></th></tr></thead><tbody></tbody></table>
</section>
<section>
  <h2>Live decisions</h2>
  <table id="decisions"><thead><tr><th>time</th><th>client</th><th>method</th><th>destination</th><th>decision</th><th>reason</th><th>detail</th></tr></thead><tbody></tbody></table>
</section>
<section>
  <h2>Open connections</h2>
  <table id="open"><thead><tr><th>id</th><th>kind</th><th>destination</th></tr></thead><tbody></tbody></table>
</section>
<section>
  <h2>Rules</h2>
  <p>File: <code id="rules-path"></code> &middot; last reload: <span id="reload"></span></p>
</section>
</body>
</html>
`

export const DASHBOARD_CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 16px 32px; color: #1d232b; background: #f6f7f9; }
header { display: flex; align-items: center; gap: 12px; }
h1 { font-size: 22px; margin: 16px 0; }
h2 { font-size: 16px; margin: 24px 0 8px; }
.pill { padding: 2px 8px; border-radius: 10px; background: #dde3ea; font-size: 12px; }
.pill.live { background: #cdebd4; }
.counters { display: flex; gap: 12px; }
.counters div { background: #fff; border: 1px solid #dde3ea; border-radius: 6px; padding: 8px 14px; min-width: 110px; }
.counters b { display: block; font-size: 22px; }
table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid #dde3ea; table-layout: fixed; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef1f4; overflow-wrap: anywhere; vertical-align: top; }
th { background: #eef1f4; font-weight: 600; }
tr.deny td.decision { color: #b3261e; font-weight: 600; }
tr.allow td.decision { color: #1e7b34; }
tr.error td.decision { color: #8a5a00; }
code, td.rule { font-family: ui-monospace, monospace; font-size: 12px; }
button { font-size: 12px; }
.hint { color: #5b6672; margin: 0 0 8px; }
#allow-status.ok { color: #1e7b34; }
#allow-status.failed { color: #b3261e; }
td.actions button { margin-right: 4px; }
`

export const DASHBOARD_JS = `'use strict'
const $ = (id) => document.getElementById(id)
const MAX_ROWS = 100

function cell(row, text, cls) {
  const td = document.createElement('td')
  td.textContent = text == null ? '' : String(text)
  if (cls) td.className = cls
  row.appendChild(td)
  return td
}

function addDecision(d) {
  const row = document.createElement('tr')
  row.className = d.decision
  cell(row, new Date().toLocaleTimeString())
  cell(row, d.client)
  cell(row, d.method)
  cell(row, d.target + (d.path ? d.path : ''), 'target')
  cell(row, d.decision + (d.wouldDeny ? ' (would deny)' : ''), 'decision')
  cell(row, d.reason, 'reason')
  cell(row, d.detail, 'detail')
  addRow(row)
}

// a query to the sandbox DNS server: "deny" is NXDOMAIN; refused, formerr and notimp show as errors
function addDns(d) {
  const row = document.createElement('tr')
  row.className = d.answer === 'allow' || d.answer === 'deny' ? d.answer : 'error'
  cell(row, new Date().toLocaleTimeString())
  cell(row, d.client)
  cell(row, 'DNS ' + (d.qtype || ''))
  cell(row, d.name, 'target')
  cell(row, d.answer + (d.wouldDeny ? ' (would deny)' : ''), 'decision')
  cell(row, d.reason, 'reason')
  cell(row, d.detail, 'detail')
  addRow(row)
}

function addRow(row) {
  const body = $('decisions').tBodies[0]
  body.insertBefore(row, body.firstChild)
  while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1)
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text)
    button.textContent = 'copied'
  } catch {
    button.textContent = 'select and copy'
  }
}

const TOKEN_KEY = 'proxy-gate-admin-token'

// /#token=TOKEN: kept in this origin's storage when none is kept yet. Any page can open this
// address with a token of its choosing, so one that differs from the kept token is only offered.
// Taken out of the address bar (and history) either way.
function takeTokenFromUrl() {
  if (!location.hash.startsWith('#token=')) return
  let token = ''
  try {
    token = decodeURIComponent(location.hash.slice(7)).trim()
  } catch {
    // a malformed escape: Allow asks for the token instead
  }
  history.replaceState(null, '', location.pathname)
  if (!token) return
  const kept = localStorage.getItem(TOKEN_KEY)
  if (!kept) localStorage.setItem(TOKEN_KEY, token)
  else if (kept !== token) offerToken(token)
}

function offerToken(token) {
  $('token-offer').hidden = false
  $('token-offer-use').addEventListener('click', () => {
    localStorage.setItem(TOKEN_KEY, token)
    $('token-offer').hidden = true
    allowStatus('the token from the link is saved', true)
  })
  $('token-offer-keep').addEventListener('click', () => ($('token-offer').hidden = true))
}

function allowStatus(text, ok) {
  $('allow-status').textContent = text
  $('allow-status').className = ok ? 'ok' : 'failed'
}

function askToken(why) {
  $('token-row').hidden = false
  $('token').focus()
  allowStatus(why, false)
}

function saveToken() {
  const token = $('token').value.trim()
  if (!token) return
  localStorage.setItem(TOKEN_KEY, token)
  $('token').value = ''
  $('token-row').hidden = true
  allowStatus('token saved: press allow again', true)
}

async function allow(d, button) {
  const token = localStorage.getItem(TOKEN_KEY)
  if (!token) return askToken('paste the admin token to allow ' + d.target)
  button.disabled = true
  try {
    // the rule shown goes along: the server adds it only while the row still suggests it
    const res = await fetch('/allow', { method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + token }, body: JSON.stringify({ id: d.id, suggestion: d.suggestion }) })
    const answer = await res.json().catch(() => ({ message: res.status + ' ' + res.statusText }))
    if (res.status === 401) {
      localStorage.removeItem(TOKEN_KEY)
      return askToken('the admin token was not accepted: paste the one in the token file')
    }
    allowStatus(answer.message + (answer.errors ? ': ' + answer.errors.join('; ') : ''), res.ok)
    // a new denial changed the row since it was shown: show it as it is now, for the person to look at again
    if (res.status === 409 && answer.row) return button.closest('tr').replaceWith(deniedRow(answer.row))
    if (res.ok) button.textContent = 'allowed'
  } catch (error) {
    allowStatus('allow failed: ' + error.message, false)
  } finally {
    button.disabled = false
  }
  refreshSoon()
}

function button(text, title, onClick) {
  const b = document.createElement('button')
  b.textContent = text
  if (title) b.title = title
  b.addEventListener('click', () => onClick(b))
  return b
}

function deniedRow(d) {
  const row = document.createElement('tr')
  cell(row, d.target, 'target')
  cell(row, d.count)
  cell(row, d.detail, 'detail')
  cell(row, d.suggestion || '', 'rule')
  const td = cell(row, '', 'actions')
  if (d.suggestion) {
    td.appendChild(button('copy', '', (b) => copy(d.suggestion, b)))
    td.appendChild(button('allow', 'add it to "allow" of the policy "' + d.policy + '" and reload', (b) => allow(d, b)))
  }
  return row
}

function render(state) {
  for (const k of ['allow', 'deny', 'error']) $('count-' + k).textContent = String(state.counters[k])
  $('count-open').textContent = String(state.openCount)
  $('mode').textContent = state.mode
  $('rules-file').textContent = state.rulesFile
  $('rules-path').textContent = state.rulesFile
  $('token-file').textContent = state.tokenFile
  $('reload').textContent = state.lastReload ? (state.lastReload.ok ? 'ok' : 'failed: ' + (state.lastReload.errors || []).join('; ')) + ' at ' + state.lastReload.at : 'none since start'
  $('denied').tBodies[0].replaceChildren(...state.denied.map(deniedRow))
  const open = $('open').tBodies[0]
  open.replaceChildren()
  for (const c of state.open) {
    const row = document.createElement('tr')
    cell(row, c.id)
    cell(row, c.kind)
    cell(row, c.target, 'target')
    open.appendChild(row)
  }
}

async function refresh() {
  const res = await fetch('/api/state', { cache: 'no-store' })
  if (res.ok) render(await res.json())
}

let refreshing = false
function refreshSoon() {
  if (refreshing) return
  refreshing = true
  setTimeout(() => {
    refreshing = false
    refresh()
  }, 250)
}

function connect() {
  const events = new EventSource('/events')
  events.addEventListener('open', () => {
    $('status').textContent = 'live'
    $('status').className = 'pill live'
  })
  events.addEventListener('decision', (e) => {
    addDecision(JSON.parse(e.data))
    refreshSoon()
  })
  events.addEventListener('dns', (e) => {
    addDns(JSON.parse(e.data))
    refreshSoon()
  })
  events.addEventListener('error', () => {
    $('status').className = 'pill'
    // a refusal (too many open dashboards) closes it for good: try again later; otherwise it reconnects by itself
    if (events.readyState !== EventSource.CLOSED) return void ($('status').textContent = 'reconnecting')
    $('status').textContent = 'not live: too many open dashboards? retrying'
    setTimeout(connect, 15000)
  })
}

takeTokenFromUrl()
$('token-save').addEventListener('click', saveToken)
$('token').addEventListener('keydown', (e) => { if (e.key === 'Enter') saveToken() })
refresh()
connect()
setInterval(refresh, 5000)
`
