// The PAC file: a fixed FindProxyForURL function plus the rules as JSON data. Rule text never
// becomes code, the script never does DNS, and anything not bypassed goes to the proxy
// (never a DIRECT fallback), so an unknown host still reaches proxy-gate and is denied there.
import { createHash } from 'node:crypto'
import type { Ip } from '../policy/ip.js'
import type { HostPattern, Policy, PortRange } from '../policy/rules.js'

export type PacFlavor = 'standard' | 'docker'

export interface PacInput {
  /** the address clients use to reach proxy-gate, `host:port` (IPv6 in brackets) */
  readonly advertise: string
  readonly bypass: readonly HostPattern[]
  /** for the docker flavor: hosts no allow rule can match are refused by Docker itself */
  readonly policy: Policy
  readonly flavor: PacFlavor
  readonly version: string
}

/** One pattern as PAC data: [kind, value, ports]; kind e = exact, w = wildcard, 4/6 = CIDR. */
type PacEntry = ['e' | 'w', string, number[]] | ['4' | '6', number[], number[]]

function v6Groups(ip: Ip): number[] {
  return Array.from({ length: 8 }, (_, i) => Number((ip.value >> BigInt(112 - 16 * i)) & 0xffffn))
}

function pacEntry(pattern: HostPattern, ports: readonly PortRange[]): PacEntry {
  const flat = ports.flatMap(([lo, hi]) => [lo, hi])
  if (pattern.kind === 'exact') return ['e', pattern.name, flat]
  if (pattern.kind === 'wildcard') return ['w', pattern.suffix, flat]
  const { cidr } = pattern
  if (cidr.family === 4) return ['4', [Number(cidr.base), cidr.prefix], flat]
  return ['6', [...v6Groups({ family: 6, value: cidr.base }), cidr.prefix], flat]
}

/** JSON that is also safe inside JavaScript source: U+2028/2029 are line breaks to old engines. */
function jsData(value: unknown): string {
  return JSON.stringify(value).replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029')
}

// The fixed part of the script, ES5 so that every PAC engine can run it. It mirrors
// policy/rules.ts matching: lower case, one trailing dot dropped, brackets stripped, "*.x" matches
// strict subdomains only, IP patterns match only IP-literal hosts, IPv4-mapped IPv6 is IPv4.
const PAC_FUNCTIONS = String.raw`
function pgNorm(host) {
  var h = String(host).toLowerCase();
  if (h.charAt(0) === "[" && h.charAt(h.length - 1) === "]") h = h.substring(1, h.length - 1);
  if (h.charAt(h.length - 1) === ".") h = h.substring(0, h.length - 1);
  return h;
}
function pgV4(h) {
  var parts = h.split(".");
  if (parts.length !== 4) return null;
  var n = 0;
  for (var i = 0; i < 4; i++) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(parts[i]) || +parts[i] > 255) return null;
    n = n * 256 + (+parts[i]);
  }
  return n;
}
function pgV6(h) {
  if (h.indexOf(":") < 0 || !/^[0-9a-f:.]+$/.test(h)) return null;
  var last = h.lastIndexOf(":");
  var v4 = h.indexOf(".", last) >= 0 ? pgV4(h.substring(last + 1)) : null;
  if (v4 === null && h.indexOf(".") >= 0) return null;
  if (v4 !== null) h = h.substring(0, last + 1) + "0:0";
  var halves = h.split("::");
  if (halves.length > 2) return null;
  var left = halves[0] === "" ? [] : halves[0].split(":");
  var right = halves.length === 2 && halves[1] !== "" ? halves[1].split(":") : [];
  var fill = 8 - left.length - right.length;
  if (halves.length === 1 ? fill !== 0 : fill < 1) return null;
  var all = left;
  for (var z = 0; halves.length === 2 && z < fill; z++) all = all.concat(["0"]);
  all = all.concat(right);
  var groups = [];
  for (var i = 0; i < 8; i++) {
    if (!/^[0-9a-f]{1,4}$/.test(all[i])) return null;
    groups.push(parseInt(all[i], 16));
  }
  if (v4 !== null) {
    groups[6] = Math.floor(v4 / 65536);
    groups[7] = v4 % 65536;
  }
  return groups;
}
function pgInV4(n, base, prefix) {
  if (prefix === 0) return true;
  var size = Math.pow(2, 32 - prefix);
  return Math.floor(n / size) === Math.floor(base / size);
}
function pgInV6(g, net) {
  var bits = net[8];
  for (var i = 0; i < 8 && bits > 0; i++) {
    var take = bits >= 16 ? 16 : bits;
    var size = Math.pow(2, 16 - take);
    if (Math.floor(g[i] / size) !== Math.floor(net[i] / size)) return false;
    bits -= take;
  }
  return true;
}
function pgPort(ports, port) {
  if (port === null) return true;
  for (var i = 0; i < ports.length; i += 2) if (port >= ports[i] && port <= ports[i + 1]) return true;
  return false;
}
function pgName(h) {
  if (h.length === 0 || h.length > 253) return false;
  var labels = h.split(".");
  for (var i = 0; i < labels.length; i++) {
    if (!/^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/.test(labels[i])) return false;
  }
  return !/^(0x[0-9a-f]*|[0-9]+)$/.test(labels[labels.length - 1]);
}
function pgMatch(list, h, port) {
  var v4 = pgV4(h);
  var v6 = v4 === null ? pgV6(h) : null;
  if (v4 === null && v6 === null && !pgName(h)) return false;
  if (v6 !== null && v6[0] === 0 && v6[1] === 0 && v6[2] === 0 && v6[3] === 0 && v6[4] === 0 && v6[5] === 65535) {
    v4 = v6[6] * 65536 + v6[7];
    v6 = null;
  }
  for (var i = 0; i < list.length; i++) {
    var e = list[i];
    if (!pgPort(e[2], port)) continue;
    if (e[0] === "e" && v4 === null && v6 === null && h === e[1]) return true;
    if (e[0] === "w" && v4 === null && v6 === null && h.length > e[1].length + 1 && h.substring(h.length - e[1].length - 1) === "." + e[1]) return true;
    if (e[0] === "4" && v4 !== null && pgInV4(v4, e[1][0], e[1][1])) return true;
    if (e[0] === "6" && v6 !== null && pgInV6(v6, e[1])) return true;
  }
  return false;
}
function pgUrlPort(url) {
  var m = /^([a-z][a-z0-9+.-]*):\/\/(\[[^\]]*\]|[^\/:?#]*)(:([0-9]+))?/i.exec(String(url));
  if (!m) return null;
  if (m[4]) return +m[4];
  var scheme = m[1].toLowerCase();
  return scheme === "https" || scheme === "wss" ? 443 : scheme === "http" || scheme === "ws" ? 80 : null;
}
`

/** The PAC script text. Same input, same bytes (so the ETag is stable). */
export function generatePac(input: PacInput): string {
  const bypass = input.bypass.map((p) => pacEntry(p, []))
  const proxy = `PROXY ${input.advertise}`
  const lines = [
    `// proxy-gate ${input.version} PAC file, generated from rules.json: edit the rules, not this file.`,
    `// Hosts in "bypass" go DIRECT; everything else goes to proxy-gate, which decides.`,
    `var PG_PROXY = ${jsData(proxy)};`,
    `var PG_BYPASS = ${jsData(bypass)};`,
  ]
  let decide = '  return PG_PROXY;'
  if (input.flavor === 'docker') {
    const allow = input.policy.allow.map((rule) => pacEntry(rule.pattern, rule.ports))
    lines.push(`var PG_ALLOW = ${jsData(allow)};`)
    decide = '  if (!pgMatch(PG_ALLOW, h, pgUrlPort(url))) return "PROXY reject.docker.internal:1";\n  return PG_PROXY;'
  }
  return `${lines.join('\n')}\n${PAC_FUNCTIONS}
function FindProxyForURL(url, host) {
  var h = pgNorm(host);
  if (pgMatch(PG_BYPASS, h, null)) return "DIRECT";
${decide}
}
`
}

export function pacEtag(text: string): string {
  return `"${createHash('sha256').update(text).digest('base64url').slice(0, 22)}"`
}
