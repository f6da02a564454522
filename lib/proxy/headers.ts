// Header hygiene for forwarded messages: hop-by-hop and Connection-listed headers never cross
// the proxy, proxy credentials never reach an origin, and clients cannot steer routing.

const HOP_BY_HOP = new Set([
  'connection',
  'proxy-connection',
  'keep-alive',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
  'expect',
])

// Routing and identity hints from the client: dropped so that only the checked target matters.
const CLIENT_ROUTING = ['host', 'forwarded', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port', 'x-real-ip']

// what never goes upstream whatever Connection says: one lookup per request header
const NOT_UPSTREAM = new Set([...HOP_BY_HOP, ...CLIENT_ROUTING])

// A Connection token cannot remove framing or routing: those headers are decided by the proxy.
const NOT_REMOVABLE = new Set(['host', 'content-length', 'content-type'])

/**
 * Header names listed in Connection values, lower-cased, minus those the proxy must keep and the
 * hop-by-hop ones it drops anyway: usually none ("keep-alive"), so no second pass is needed.
 */
function connectionListed(values: readonly string[]): string[] {
  const listed: string[] = []
  for (const value of values) {
    for (const token of value.split(',')) {
      const name = token.trim().toLowerCase()
      if (name !== '' && !NOT_REMOVABLE.has(name) && !HOP_BY_HOP.has(name)) listed.push(name)
    }
  }
  return listed
}

function isDropped(name: string, listed: readonly string[]): boolean {
  return HOP_BY_HOP.has(name) || listed.includes(name) || name.startsWith('proxy-')
}

/** A flat [name, value, ...] list without the pairs whose name Connection listed. */
function withoutListed(lines: string[], values: readonly string[] | undefined): string[] {
  const listed = values ? connectionListed(values) : []
  if (listed.length === 0) return lines
  const out: string[] = []
  for (let i = 0; i < lines.length; i += 2) {
    const name = lines[i] as string
    if (!listed.includes(name.toLowerCase())) out.push(name, lines[i + 1] as string)
  }
  return out
}

/**
 * Request headers for the upstream, as a flat [name, value, ...] list that keeps order and
 * repeats. `host` is the checked authority, written first.
 */
export function upstreamRequestHeaders(rawHeaders: readonly string[], host: string): string[] {
  const out = ['host', host]
  let connection: string[] | undefined
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string
    const lower = name.toLowerCase()
    if (lower === 'connection') (connection ??= []).push(rawHeaders[i + 1] as string)
    else if (!NOT_UPSTREAM.has(lower) && !lower.startsWith('proxy-')) out.push(name, rawHeaders[i + 1] as string)
  }
  return withoutListed(out, connection)
}

/**
 * Response headers for the client from undici's raw list, flat as writeHead takes them: names
 * lower-cased (as undici's parsed headers have them), hop-by-hop and Connection-listed ones removed.
 */
export function clientResponseLines(rawHeaders: readonly Buffer[]): string[] {
  const out: string[] = []
  let connection: string[] | undefined
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = (rawHeaders[i] as Buffer).toString('latin1').toLowerCase()
    const value = (rawHeaders[i + 1] as Buffer).toString('latin1')
    if (name === 'connection') (connection ??= []).push(value)
    else if (!HOP_BY_HOP.has(name) && !name.startsWith('proxy-')) out.push(name, value)
  }
  return withoutListed(out, connection)
}

export type HeaderMap = Record<string, string | string[] | undefined>

/**
 * Request headers for a WebSocket (Upgrade) handshake: the same hygiene as upstreamRequestHeaders,
 * except that Connection and Upgrade stay (the handshake needs them). `host` is the caller's to set.
 */
export function upgradeRequestHeaders(headers: HeaderMap): HeaderMap {
  const listed = connectionListed(listValues(headers.connection))
  const out: HeaderMap = Object.create(null) as HeaderMap
  for (const [name, value] of Object.entries(headers)) {
    if (name === 'connection' || name === 'upgrade' || (!isDropped(name, listed) && !CLIENT_ROUTING.includes(name))) out[name] = value
  }
  return out
}

function listValues(value: string | string[] | undefined): string[] {
  return value === undefined ? [] : ([] as string[]).concat(value)
}

/** Response headers for the client: hop-by-hop and Connection-listed headers removed. */
export function clientResponseHeaders(headers: HeaderMap): HeaderMap {
  const listed = connectionListed(listValues(headers.connection))
  const out: HeaderMap = Object.create(null) as HeaderMap
  for (const [name, value] of Object.entries(headers)) {
    if (!isDropped(name.toLowerCase(), listed)) out[name] = value
  }
  return out
}

/** Counts header lines with this name (case-insensitive) in Node's rawHeaders list. */
export function countHeader(rawHeaders: readonly string[], name: string): number {
  let count = 0
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]?.toLowerCase() === name) count++
  return count
}
