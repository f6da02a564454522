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
const CLIENT_ROUTING = new Set(['host', 'forwarded', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port', 'x-real-ip'])

// A Connection token cannot remove framing or routing: those headers are decided by the proxy.
const NOT_REMOVABLE = new Set(['host', 'content-length', 'content-type'])

/** Header names listed in Connection values, lower-cased, minus those the proxy must keep. */
function connectionListed(values: readonly string[]): Set<string> {
  const listed = new Set<string>()
  for (const value of values) {
    for (const token of value.split(',')) {
      const name = token.trim().toLowerCase()
      if (name !== '' && !NOT_REMOVABLE.has(name)) listed.add(name)
    }
  }
  return listed
}

function isDropped(name: string, listed: Set<string>): boolean {
  return HOP_BY_HOP.has(name) || listed.has(name) || name.startsWith('proxy-')
}

/**
 * Request headers for the upstream, as a flat [name, value, ...] list that keeps order and
 * repeats. `host` is the checked authority, written first.
 */
export function upstreamRequestHeaders(rawHeaders: readonly string[], host: string): string[] {
  const connection: string[] = []
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]?.toLowerCase() === 'connection') connection.push(rawHeaders[i + 1] ?? '')
  }
  const listed = connectionListed(connection)
  const out = ['host', host]
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = (rawHeaders[i] as string).toLowerCase()
    if (!isDropped(name, listed) && !CLIENT_ROUTING.has(name)) out.push(rawHeaders[i] as string, rawHeaders[i + 1] as string)
  }
  return out
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
    if (name === 'connection' || name === 'upgrade' || (!isDropped(name, listed) && !CLIENT_ROUTING.has(name))) out[name] = value
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
