// In-process micro-benchmarks for `npm run bench` (not a test), run in a child process of
// run.mjs so that their heap does not colour the network workloads. Prints one JSON line.
//
//   node test/bench/micro.mjs policy [--rules 100000] [--small 1000]
//   node test/bench/micro.mjs leaf   [--hosts 300]
//
// policy: load time of a rules file with N mixed rules (exact names, wildcards, IPv4 and IPv6
//         CIDRs, some deny rules), and decisions per second for the same query mix against
//         the small and the large rule set: decision time must not grow with the rule count.
// leaf:   leaf certificate minting through createLeafMinter, uncached (a new host each time)
//         and cached (the same host again).
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'

const dist = new URL('../../dist/', import.meta.url)
/** @type {typeof import('../../lib/rules/config.js')} */
const config = await import(new URL('rules/config.js', dist).href)
/** @type {typeof import('../../lib/policy/decide.js')} */
const policyLib = await import(new URL('policy/decide.js', dist).href)
/** @type {typeof import('../../lib/policy/ip.js')} */
const ipLib = await import(new URL('policy/ip.js', dist).href)

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { rules: { type: 'string', default: '100000' }, small: { type: 'string', default: '1000' }, hosts: { type: 'string', default: '300' } },
})

/** @param {number[]} xs */
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
/** @param {number[]} xs @param {number} p */
const percentile = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]
}

// ---- policy -------------------------------------------------------------------------------

/**
 * A rules file with `n` allow entries: 50% exact names, 25% wildcards, 20% IPv4 CIDRs (public
 * space, /24 and /32), 5% IPv6 /48s, on web ports or a port list; plus 1% deny rules.
 * @param {number} n
 */
export function generateRules(n) {
  const allow = []
  const deny = []
  for (let i = 0; i < n; i++) {
    const kind = i % 20
    const ports = i % 7 === 0 ? ':443,8443' : i % 5 === 0 ? ':80,443' : ':443'
    if (kind < 10) allow.push(`api-${i}.svc-${i % 997}.example-corp.com${ports}`)
    else if (kind < 15) allow.push(`*.team-${i}.example.org${ports}`)
    else if (kind < 19) {
      const a = 11 + (i >> 16), b = (i >> 8) & 255, c = i & 255
      allow.push(i % 2 ? `${a}.${b}.${c}.0/24${ports}` : `${a}.${b}.${c}.7${ports}`)
    } else allow.push(`[2a01:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::/48]${ports}`)
  }
  for (let i = 0; i < Math.max(1, n / 100); i++) deny.push(i % 2 ? `blocked-${i}.example-corp.com` : `*.blocked-${i}.example.org`)
  return { allow, deny }
}

/**
 * The same query mix for every rule count: names and addresses that hit rules with small
 * indexes (present in every set), misses, and wildcard hits a few labels deep.
 * @returns {Array<{ target: import('../../lib/policy/target.js').Target, resolved: import('../../lib/policy/ip.js').Ip[] }>}
 */
function queries() {
  const publicIp = /** @type {import('../../lib/policy/ip.js').Ip} */ (ipLib.parseIp('93.184.216.34'))
  const out = []
  for (let j = 0; j < 200; j++) {
    const i = (j * 37) % 500
    const exact = i - (i % 20) // kind 0..9: an exact name
    out.push({ target: { host: { kind: 'name', name: `api-${exact}.svc-${exact % 997}.example-corp.com` }, port: 443 }, resolved: [publicIp] })
    const wild = i - (i % 20) + 10 // kind 10..14: a wildcard
    out.push({ target: { host: { kind: 'name', name: `a.b.c.team-${wild}.example.org` }, port: 443 }, resolved: [publicIp] })
    out.push({ target: { host: { kind: 'name', name: `nothing-${j}.unknown.example.net` }, port: 443 }, resolved: [] })
    const cidr = i - (i % 20) + 15 // kind 15..18: IPv4
    const a = 11 + (cidr >> 16), b = (cidr >> 8) & 255, c = cidr & 255
    const ip = /** @type {import('../../lib/policy/ip.js').Ip} */ (ipLib.parseIp(cidr % 2 ? `${a}.${b}.${c}.${1 + (j % 200)}` : `${a}.${b}.${c}.7`))
    out.push({ target: { host: { kind: 'ip', ip }, port: 443 }, resolved: [] })
  }
  return out
}

/** @param {number} n */
function loadRules(n) {
  const text = JSON.stringify({ listen: '127.0.0.1:3128', ...generateRules(n) })
  const runs = []
  /** @type {any} */
  let parsed
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now()
    parsed = config.parseConfig(JSON.parse(text))
    runs.push(performance.now() - t0)
  }
  if (!parsed.ok) throw new Error(`generated rules invalid: ${JSON.stringify(parsed.errors.slice(0, 3))}`)
  return { policy: parsed.value.policy, loadMs: median(runs), loadRunsMs: runs, bytes: text.length }
}

/** @param {import('../../lib/policy/rules.js').Policy} policy @param {ReturnType<typeof queries>} qs @param {number} ms */
function decisionsPerSecond(policy, qs, ms) {
  const ctx = { mode: /** @type {const} */ ('enforce'), self: [], tls: config.DEFAULT_TLS }
  let verdicts = { allow: 0, deny: 0 }
  const decide = (/** @type {(typeof qs)[number]} */ q) => {
    const first = policyLib.decideTarget(policy, ctx, q.target)
    const final = first.verdict === 'resolve' ? policyLib.decideAddresses(policy, ctx, q.target, first, q.resolved) : first
    return final.verdict
  }
  for (let w = 0; w < 20; w++) for (const q of qs) decide(q) // warm up the JIT
  const rates = []
  for (let round = 0; round < 5; round++) {
    let count = 0
    const t0 = performance.now()
    while (performance.now() - t0 < ms / 5) {
      for (const q of qs) verdicts[decide(q)]++
      count += qs.length
    }
    rates.push(count / ((performance.now() - t0) / 1000))
  }
  return { perSecond: median(rates), ratesPerSecond: rates, nsPerDecision: 1e9 / median(rates), verdicts }
}

async function policyBench() {
  const large = Number(values.rules)
  const small = Number(values.small)
  const qs = queries()
  const a = loadRules(small)
  const b = loadRules(large)
  // interleave: small, large, small, large
  const runs = { small: [], large: [] }
  for (let r = 0; r < 2; r++) {
    runs.small.push(decisionsPerSecond(a.policy, qs, 1_000))
    runs.large.push(decisionsPerSecond(b.policy, qs, 1_000))
  }
  const rate = (/** @type {any[]} */ xs) => median(xs.map((x) => x.perSecond))
  return {
    small: { rules: small, loadMs: a.loadMs, perSecond: rate(runs.small), verdicts: runs.small[0].verdicts },
    large: { rules: large, loadMs: b.loadMs, loadRunsMs: b.loadRunsMs, fileBytes: b.bytes, perSecond: rate(runs.large), verdicts: runs.large[0].verdicts },
    queryMix: '25% exact-name hits, 25% wildcard hits (3 labels deep), 25% name misses (deny with suggestion), 25% IPv4 CIDR/address hits; names decided through decideTarget + decideAddresses (one public address)',
    slowdown: rate(runs.small) / rate(runs.large),
  }
}

// ---- leaf certificates --------------------------------------------------------------------

async function leafBench() {
  /** @type {typeof import('../../lib/certs/ca.js')} */
  const caLib = await import(new URL('certs/ca.js', dist).href)
  /** @type {typeof import('../../lib/certs/leaf.js')} */
  const leafLib = await import(new URL('certs/leaf.js', dist).href)
  const hosts = Number(values.hosts)
  const ca = await caLib.createCa({ commonName: 'proxy-gate bench CA' })
  await leafLib.leafKey() // the shared leaf key is made once per process, not per leaf
  const minter = leafLib.createLeafMinter(ca, { max: hosts * 2 })
  const uncached = []
  const names = []
  for (let i = 0; i < hosts; i++) {
    const host = i % 10 === 9 ? `10.1.${i >> 8}.${i & 255}` : `host-${i}.bench.example` // one in ten an IP address
    names.push(host)
    const t0 = performance.now()
    await minter.contextFor(host)
    uncached.push(performance.now() - t0)
  }
  if (minter.mintCount() !== hosts) throw new Error(`expected ${hosts} mints, got ${minter.mintCount()}`)
  const cachedRates = []
  for (let r = 0; r < 5; r++) {
    const n = 20_000
    const t0 = performance.now()
    for (let i = 0; i < n; i++) await minter.contextFor(names[i % 50])
    cachedRates.push(n / ((performance.now() - t0) / 1000))
  }
  if (minter.mintCount() !== hosts) throw new Error('cached lookups minted again')
  return {
    hosts,
    uncached: { medianMs: median(uncached), p99Ms: percentile(uncached, 99), minMs: Math.min(...uncached), maxMs: Math.max(...uncached), perSecond: 1000 / median(uncached) },
    cached: { perSecond: median(cachedRates), usPerLookup: 1e6 / median(cachedRates) },
  }
}

const which = positionals[0]
const result = which === 'policy' ? await policyBench() : which === 'leaf' ? await leafBench() : undefined
if (!result) {
  console.error('usage: node test/bench/micro.mjs policy|leaf')
  process.exit(2)
}
console.log(JSON.stringify(result))
