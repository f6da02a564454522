// IP addresses and CIDR ranges as numbers, and the table of special-purpose ranges
// that an egress proxy must never reach unless a rule names them. Pure: no I/O.

export type Family = 4 | 6

/** An address in canonical form: IPv4-mapped IPv6 (::ffff:a.b.c.d) is stored as IPv4. */
export interface Ip {
  readonly family: Family
  readonly value: bigint
}

export interface Cidr {
  readonly family: Family
  readonly base: bigint
  readonly prefix: number
}

const BITS: Record<Family, number> = { 4: 32, 6: 128 }
const MAPPED_PREFIX = 0xffffn << 32n

const V6_GROUP = /^[0-9a-f]{1,4}$/i

/**
 * A dotted quad of 0-255 without leading zeros (the only IPv4 spelling accepted) as a number, in
 * one pass: every connection's client address goes through here.
 */
function v4Value(text: string): number | undefined {
  let value = 0
  let part = 0
  let digits = 0
  let dots = 0
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 46 // the end closes the last part like a '.'
    if (c === 46) {
      if (digits === 0 || part > 255 || ++dots > 4) return undefined
      value = value * 256 + part
      part = digits = 0
    } else if (c >= 48 && c <= 57) {
      if (digits === 1 && part === 0) return undefined // a leading zero
      part = part * 10 + c - 48
      if (++digits > 3) return undefined
    } else return undefined
  }
  return dots === 4 ? value : undefined
}

function isV4(text: string): boolean {
  return v4Value(text) !== undefined
}

/** RFC 4291 text form: eight groups, one `::` for a run of zeros, a dotted quad as the last two; no zone. */
function isV6(text: string): boolean {
  const halves = text.split('::')
  if (halves.length > 2) return false
  const groupsOf = (half: string) => (half === '' ? [] : half.split(':'))
  const left = groupsOf(halves[0] ?? '')
  const right = halves.length === 2 ? groupsOf(halves[1] ?? '') : []
  const tail = halves.length === 2 ? right : left
  let count = left.length + right.length
  if (tail.at(-1)?.includes('.')) {
    if (!isV4(tail.pop() ?? '')) return false
    count += 1
  }
  if (![...left, ...right].every((g) => V6_GROUP.test(g))) return false
  return halves.length === 2 ? count <= 7 : count === 8
}

function parseV4(text: string): bigint {
  return BigInt(v4Value(text) ?? 0)
}

function parseV6(text: string): bigint {
  let head = text
  let tailV4: bigint | undefined
  const lastColon = text.lastIndexOf(':')
  if (text.includes('.', lastColon)) {
    tailV4 = parseV4(text.slice(lastColon + 1))
    head = text.slice(0, lastColon + 1) + '0:0'
  }
  const [left, right] = head.split('::') as [string, string | undefined]
  const leftGroups = left === '' ? [] : left.split(':')
  const rightGroups = right === undefined || right === '' ? [] : right.split(':')
  const missing = 8 - leftGroups.length - rightGroups.length
  const groups = [...leftGroups, ...Array<string>(right === undefined ? 0 : missing).fill('0'), ...rightGroups]
  let value = groups.reduce((acc, g) => (acc << 16n) | BigInt(parseInt(g, 16)), 0n)
  if (tailV4 !== undefined) value = (value & ~0xffffffffn) | tailV4
  return value
}

/**
 * Parses a strict IP literal: dotted-quad IPv4 without leading zeros, or IPv6 without a zone
 * and without brackets. Lenient spellings (127.1, 0x7f.0.0.1, 2130706433) are not IPs here.
 */
export function parseIp(text: string): Ip | undefined {
  const v4 = v4Value(text)
  if (v4 !== undefined) return { family: 4, value: BigInt(v4) }
  if (!isV6(text)) return undefined
  const value = parseV6(text)
  if (isMappedValue(value)) return { family: 4, value: value & 0xffffffffn }
  return { family: 6, value }
}

/** `ADDRESS:PORT`, IPv6 in brackets (`[2001:db8::1]:443`): how an address and port appear in messages. */
export function formatIpPort(ip: Ip, port: number): string {
  const text = formatIp(ip)
  return ip.family === 6 ? `[${text}]:${port}` : `${text}:${port}`
}

export function formatIp(ip: Ip): string {
  if (ip.family === 4) {
    const v = Number(ip.value) // every request logs its address: plain numbers, not BigInt shifts
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`
  }
  const groups = Array.from({ length: 8 }, (_, i) => Number((ip.value >> BigInt(112 - 16 * i)) & 0xffffn))
  let bestStart = -1
  let bestLen = 1
  for (let i = 0; i < 8; ) {
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) [bestStart, bestLen] = [i, j - i]
    i = j === i ? i + 1 : j
  }
  const hex = groups.map((g) => g.toString(16))
  if (bestStart < 0) return hex.join(':')
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`
}

/** How an IPv6 address with an IPv4-mapped prefix would look before canonicalisation. */
function isMappedValue(value: bigint): boolean {
  return value >> 32n === MAPPED_PREFIX >> 32n
}

// Every network mask, computed once: cidrContains runs for each special range on every address.
const MASKS: Record<Family, readonly bigint[]> = {
  4: Array.from({ length: 33 }, (_, p) => ((1n << 32n) - 1n) ^ ((1n << BigInt(32 - p)) - 1n)),
  6: Array.from({ length: 129 }, (_, p) => ((1n << 128n) - 1n) ^ ((1n << BigInt(128 - p)) - 1n)),
}

function mask(family: Family, prefix: number): bigint {
  return MASKS[family][prefix] as bigint
}

/** Parses `a.b.c.d/n`, `x::y/n` or a single address (a /32 or /128). Returns an error text on failure. */
export function parseCidr(text: string): Cidr | string {
  const slash = text.indexOf('/')
  const addrText = slash < 0 ? text : text.slice(0, slash)
  const prefixText = slash < 0 ? undefined : text.slice(slash + 1)
  if (isV6(addrText) && isMappedValue(parseV6(addrText))) {
    return 'IPv4-mapped IPv6 ranges are not accepted: write the IPv4 form'
  }
  const ip = parseIp(addrText)
  if (!ip) return `"${addrText}" is not an IP address (IPv4 dotted quad without leading zeros, or IPv6)`
  const bits = BITS[ip.family]
  if (prefixText === undefined) return { family: ip.family, base: ip.value, prefix: bits }
  if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > bits) {
    return `prefix length "/${prefixText}" must be a number from 0 to ${bits}`
  }
  const prefix = Number(prefixText)
  const base = ip.value & mask(ip.family, prefix)
  if (base !== ip.value) {
    return `host bits are set: did you mean ${formatIp({ family: ip.family, value: base })}/${prefix}?`
  }
  return { family: ip.family, base, prefix }
}

export function cidrContains(cidr: Cidr, ip: Ip): boolean {
  return cidr.family === ip.family && (ip.value & mask(cidr.family, cidr.prefix)) === cidr.base
}

export function formatCidr(cidr: Cidr): string {
  const addr = formatIp({ family: cidr.family, value: cidr.base })
  return cidr.prefix === BITS[cidr.family] ? addr : `${addr}/${cidr.prefix}`
}

/** True for a range of one address (a /32 or /128): the only rule that may name a cloud metadata address. */
export function isSingleAddress(cidr: Cidr): boolean {
  return cidr.prefix === BITS[cidr.family]
}

/** True when every address of `inner` lies inside `outer`. */
export function cidrWithin(inner: Cidr, outer: Cidr): boolean {
  return inner.family === outer.family && inner.prefix >= outer.prefix && cidrContains(outer, { family: inner.family, value: inner.base })
}

export type SpecialKind =
  | 'unspecified'
  | 'loopback'
  | 'private'
  | 'cgnat'
  | 'link-local'
  | 'metadata'
  | 'ula'
  | 'multicast'
  | 'broadcast'
  | 'documentation'
  | 'reserved'
  | 'ipv6-embedding'

export interface SpecialRange {
  readonly cidr: Cidr
  readonly kind: SpecialKind
  readonly label: string
}

/** Kinds that a name rule with `"private": true` may reach; everything else needs an IP rule. */
export const PRIVATE_KINDS: ReadonlySet<SpecialKind> = new Set(['private', 'ula', 'cgnat'])

const SPECIAL_TABLE: Array<[string, SpecialKind, string]> = [
  ['0.0.0.0/8', 'unspecified', '"this network" (0.0.0.0/8)'],
  ['10.0.0.0/8', 'private', 'private network (RFC 1918)'],
  ['100.64.0.0/10', 'cgnat', 'carrier-grade NAT (100.64.0.0/10)'],
  ['100.100.100.200', 'metadata', 'cloud metadata service (Alibaba)'],
  ['127.0.0.0/8', 'loopback', 'loopback'],
  ['169.254.0.0/16', 'link-local', 'link-local (169.254.0.0/16)'],
  ['169.254.169.254', 'metadata', 'cloud metadata service'],
  ['169.254.170.2', 'metadata', 'cloud metadata service (ECS)'],
  ['168.63.129.16', 'metadata', 'cloud platform service (Azure WireServer)'],
  ['172.16.0.0/12', 'private', 'private network (RFC 1918)'],
  ['192.0.0.0/24', 'reserved', 'IETF protocol assignments (192.0.0.0/24)'],
  ['192.0.0.192', 'metadata', 'cloud metadata service (Oracle)'],
  ['192.0.2.0/24', 'documentation', 'documentation range (TEST-NET-1)'],
  ['192.88.99.0/24', 'reserved', 'deprecated 6to4 relay anycast'],
  ['192.168.0.0/16', 'private', 'private network (RFC 1918)'],
  ['198.18.0.0/15', 'reserved', 'benchmarking range (198.18.0.0/15)'],
  ['198.51.100.0/24', 'documentation', 'documentation range (TEST-NET-2)'],
  ['203.0.113.0/24', 'documentation', 'documentation range (TEST-NET-3)'],
  ['224.0.0.0/4', 'multicast', 'multicast'],
  ['240.0.0.0/4', 'reserved', 'reserved (240.0.0.0/4)'],
  ['255.255.255.255', 'broadcast', 'broadcast'],
  ['::/128', 'unspecified', 'unspecified (::)'],
  ['::1/128', 'loopback', 'loopback (::1)'],
  ['::/8', 'reserved', 'reserved IPv6 (::/8, includes IPv4-compatible addresses)'],
  ['64:ff9b::/96', 'ipv6-embedding', 'NAT64 (64:ff9b::/96) embeds an IPv4 address'],
  ['64:ff9b:1::/48', 'ipv6-embedding', 'local-use NAT64 (64:ff9b:1::/48) embeds an IPv4 address'],
  ['100::/64', 'reserved', 'discard-only (100::/64)'],
  ['2001::/23', 'reserved', 'IETF protocol assignments (2001::/23)'],
  ['2001::/32', 'ipv6-embedding', 'Teredo (2001::/32) embeds an IPv4 address'],
  ['2001:db8::/32', 'documentation', 'documentation range (2001:db8::/32)'],
  ['2002::/16', 'ipv6-embedding', '6to4 (2002::/16) embeds an IPv4 address'],
  ['3fff::/20', 'documentation', 'documentation range (3fff::/20)'],
  ['fc00::/7', 'ula', 'unique local address (fc00::/7)'],
  ['fd00:ec2::254', 'metadata', 'cloud metadata service (AWS IPv6)'],
  ['fe80::/10', 'link-local', 'link-local (fe80::/10)'],
  ['fec0::/10', 'reserved', 'deprecated site-local (fec0::/10)'],
  ['ff00::/8', 'multicast', 'multicast'],
]

// Most specific first, so a metadata host inside a larger range reports as metadata.
const SPECIAL: readonly SpecialRange[] = SPECIAL_TABLE.map(([text, kind, label]) => {
  const cidr = parseCidr(text)
  if (typeof cidr === 'string') throw new Error(`bad special range ${text}: ${cidr}`)
  return { cidr, kind, label }
}).sort((a, b) => b.cidr.prefix - a.cidr.prefix)

/** Every range the guard refuses unless a rule names it: deploy/kubernetes's egress policy excludes each (test/kubernetes-egress.test.ts). */
export const SPECIAL_RANGES: readonly SpecialRange[] = SPECIAL

/**
 * Where an IPv6 range carries an IPv4 address that a gateway or tunnel reaches: the 32 bits sit in
 * `chunks` ([first bit, length], counted from the top), XORed with `flip` (Teredo obfuscates its client).
 */
interface Embedding {
  readonly name: string
  readonly within: Cidr
  readonly chunks: ReadonlyArray<readonly [number, number]>
  readonly flip: bigint
}

const EMBEDDING_TABLE: Array<[string, string, Array<[number, number]>, bigint?]> = [
  ['NAT64', '64:ff9b::/96', [[96, 32]]],
  // RFC 6052 layouts for the prefix lengths a local-use NAT64 prefix can have (bits 64-71 are skipped)
  ['local-use NAT64', '64:ff9b:1::/48', [[48, 16], [72, 16]]],
  ['local-use NAT64', '64:ff9b:1::/48', [[56, 8], [72, 24]]],
  ['local-use NAT64', '64:ff9b:1::/48', [[72, 32]]],
  ['local-use NAT64', '64:ff9b:1::/48', [[96, 32]]],
  ['6to4', '2002::/16', [[16, 32]]],
  ['Teredo server', '2001::/32', [[32, 32]]],
  ['Teredo client', '2001::/32', [[96, 32]], 0xffffffffn],
  ['IPv4-compatible', '::/96', [[96, 32]]],
  ['IPv4-translated', '::ffff:0:0:0/96', [[96, 32]]],
]

const EMBEDDINGS: readonly Embedding[] = EMBEDDING_TABLE.map(([name, text, chunks, flip]) => {
  const within = parseCidr(text)
  if (typeof within === 'string') throw new Error(`bad embedding range ${text}: ${within}`)
  return { name, within, chunks, flip: flip ?? 0n }
})

const METADATA_V4: readonly SpecialRange[] = SPECIAL.filter((range) => range.kind === 'metadata' && range.cidr.family === 4)

/** The IPv4 address that `embedding` carries in the IPv6 address `value`. */
function embeddedV4(embedding: Embedding, value: bigint): bigint {
  const bits = embedding.chunks.reduce((acc, [start, length]) => (acc << BigInt(length)) | ((value >> BigInt(128 - start - length)) & ((1n << BigInt(length)) - 1n)), 0n)
  return bits ^ embedding.flip
}

/** The IPv6 addresses of `embedding` that carry `v4`, as the bits they fix (`mask`) and their `value` there. */
function embeddingOf(embedding: Embedding, v4: bigint): { mask: bigint; value: bigint } {
  let rest = 32n
  let fixed = mask(6, embedding.within.prefix)
  let value = embedding.within.base
  for (const [start, length] of embedding.chunks) {
    rest -= BigInt(length)
    const shift = BigInt(128 - start - length)
    const ones = (1n << BigInt(length)) - 1n
    fixed |= ones << shift
    value |= (((v4 ^ embedding.flip) >> rest) & ones) << shift
  }
  return { mask: fixed, value }
}

function embeddedMetadata(metadata: SpecialRange, embedding: Embedding, value: bigint): SpecialRange {
  const v4 = formatIp({ family: 4, value: metadata.cidr.base })
  return { cidr: { family: 6, base: value, prefix: 128 }, kind: 'metadata', label: `${metadata.label} in ${embedding.name} form (${v4})` }
}

/** The cloud metadata address an IPv6 address carries in one of its IPv4 embeddings, as metadata itself. */
function metadataEmbeddedIn(ip: Ip): SpecialRange | undefined {
  for (const embedding of EMBEDDINGS) {
    if (!cidrContains(embedding.within, ip)) continue
    const v4 = embeddedV4(embedding, ip.value)
    const metadata = METADATA_V4.find((range) => range.cidr.base === v4)
    if (metadata) return embeddedMetadata(metadata, embedding, ip.value)
  }
  return undefined
}

/**
 * The most specific special-purpose range that holds `ip`, or undefined for a global unicast address.
 * An IPv6 address that embeds a cloud metadata address (NAT64, 6to4, Teredo...) is metadata too.
 */
export function classifyIp(ip: Ip): SpecialRange | undefined {
  const range = SPECIAL.find((r) => cidrContains(r.cidr, ip))
  if (range === undefined || ip.family === 4) return range
  return metadataEmbeddedIn(ip) ?? range
}

/**
 * The cloud metadata addresses that `cidr` holds (none for a range outside them); for an IPv6 range
 * also each IPv4 metadata address it holds in an embedded form, once, as the first such address.
 */
export function metadataWithin(cidr: Cidr): SpecialRange[] {
  const direct = SPECIAL.filter((range) => range.kind === 'metadata' && cidrWithin(range.cidr, cidr))
  if (cidr.family === 4) return direct
  const outer = mask(6, cidr.prefix)
  const embedded = METADATA_V4.flatMap((metadata) => {
    for (const embedding of EMBEDDINGS) {
      const form = embeddingOf(embedding, metadata.cidr.base)
      if (((form.value ^ cidr.base) & form.mask & outer) === 0n) return [embeddedMetadata(metadata, embedding, cidr.base | (form.value & ~outer))]
    }
    return []
  })
  return [...direct, ...embedded]
}

/** The special range that wholly contains `cidr`, if any: such a rule names special space on purpose. */
export function specialRangeHolding(cidr: Cidr): SpecialRange | undefined {
  return SPECIAL.find((range) => cidrWithin(cidr, range.cidr))
}
