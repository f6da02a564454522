// Strict parsing of where a client wants to go: CONNECT authorities, absolute-form URLs and
// host names. One grammar for requests and rules, so a check and a dial can never disagree.
import { domainToASCII, domainToUnicode } from 'node:url'
import { formatIp, parseIp, type Ip } from './ip.js'

export type Host = { readonly kind: 'name'; readonly name: string } | { readonly kind: 'ip'; readonly ip: Ip }

export interface Target {
  readonly host: Host
  readonly port: number
}

export type Result<T> = { ok: true; value: T } | { ok: false; error: string }

const ok = <T>(value: T): Result<T> => ({ ok: true, value })
const fail = <T>(error: string): Result<T> => ({ ok: false, error })

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/
// WHATWG and getaddrinfo read a name whose last label is a number as an IPv4 address.
const NUMERIC_LABEL = /^(?:0x[0-9a-f]*|[0-9]+)$/i

export function hostText(host: Host): string {
  return host.kind === 'name' ? host.name : formatIp(host.ip)
}

/** The host as written in an authority or Host header: IPv6 in brackets. */
export function formatHost(host: Host): string {
  const text = hostText(host)
  return text.includes(':') ? `[${text}]` : text
}

/** `host:port`, with IPv6 in brackets: how targets appear in logs, rules and suggestions. */
export function formatTarget(target: Target): string {
  return `${formatHost(target.host)}:${target.port}`
}

/** The Host header for a plain-HTTP target: the port only when it is not 80. */
export function hostHeader(target: Target): string {
  return target.port === 80 ? formatHost(target.host) : formatTarget(target)
}

/**
 * Normalises an ASCII host name: lower case, one trailing dot removed, LDH labels (underscore
 * allowed). Names that look like numeric IPv4 spellings are refused rather than guessed at.
 */
export function normaliseName(text: string): Result<string> {
  const name = (text.endsWith('.') ? text.slice(0, -1) : text).toLowerCase()
  if (name === '') return fail('empty host name')
  if (name.length > 253) return fail('host name longer than 253 characters')
  const labels = name.split('.')
  const bad = labels.find((label) => !LABEL.test(label))
  if (bad !== undefined) {
    return fail(bad === '' ? `empty label in host name "${text}"` : `invalid host name "${text}": label "${bad}" must be 1-63 letters, digits, "-" or "_", not starting or ending with "-"`)
  }
  if (NUMERIC_LABEL.test(labels[labels.length - 1] ?? '')) {
    return fail(`"${text}" is not a canonical IPv4 address (use four decimal octets without leading zeros)`)
  }
  return ok(name)
}

/**
 * Like normaliseName, but accepts internationalised names (as written in rules) and converts
 * them to punycode. Conversion must be lossless: invisible characters that IDNA would silently
 * drop (soft hyphen, zero-width space) are an error, not a different name.
 */
export function normaliseRuleName(text: string): Result<string> {
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\x7f]*$/.test(text)) return normaliseName(text)
  const ascii = domainToASCII(text)
  const back = domainToUnicode(ascii)
  // domainToUnicode keeps a trailing dot; normaliseName strips one afterwards
  const expected = text.normalize('NFC').toLowerCase()
  if (ascii === '' || back !== expected) return fail(`"${text}" is not a valid internationalised domain name (IDNA would change it)`)
  return normaliseName(ascii)
}

/** A host as it appears in an authority: a name, an IPv4 literal, or an IPv6 literal in brackets. */
export function parseHost(text: string): Result<Host> {
  if (text.startsWith('[')) {
    if (!text.endsWith(']')) return fail(`unbalanced bracket in "${text}"`)
    const inner = text.slice(1, -1)
    const ip = inner.includes(':') ? parseIp(inner) : undefined
    if (!ip) return fail(`"${text}" is not an IPv6 literal (zone identifiers are not accepted)`)
    return ok({ kind: 'ip', ip })
  }
  if (text.includes(':')) return fail('an IPv6 address must be written in brackets')
  const ip = parseIp(text)
  if (ip) return ok({ kind: 'ip', ip })
  const name = normaliseName(text)
  return name.ok ? ok({ kind: 'name', name: name.value }) : name
}

/** Port in decimal, 1-65535, no sign, no leading zero, no spaces. */
export function parsePort(text: string): Result<number> {
  if (!/^[1-9][0-9]{0,4}$/.test(text) || Number(text) > 65535) {
    return fail(`port "${text}" must be a decimal number from 1 to 65535`)
  }
  return ok(Number(text))
}

/** `host:port` with a required port: the CONNECT request-target and the `check` argument. */
export function parseAuthority(text: string, defaultPort?: number): Result<Target> {
  // the message ends up in logs: never echo what could be credentials (user:password@)
  if (/[/@\\?#]/.test(text)) return fail(`"${shownInError(text, 300)}" is not host:port (no scheme, userinfo, path or query)`)
  const close = text.lastIndexOf(']')
  const colon = text.lastIndexOf(':')
  const hasPort = colon > close
  if (!hasPort && defaultPort === undefined) return fail(`"${text}" has no port (expected host:port)`)
  const host = parseHost(hasPort ? text.slice(0, colon) : text)
  if (!host.ok) return host
  const port = hasPort ? parsePort(text.slice(colon + 1)) : ok(defaultPort as number)
  return port.ok ? ok({ host: host.value, port: port.value }) : port
}

export interface AbsoluteUrl {
  readonly target: Target
  /** origin-form path and query to send upstream */
  readonly path: string
}

/**
 * An absolute-form request-target (`http://host[:port]/path?query`). Hand-written rather than
 * WHATWG URL, which accepts `http:host`, backslashes and userinfo, and rewrites hosts.
 */
export function parseAbsoluteUrl(url: string): Result<AbsoluteUrl> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase()
  if (scheme === 'https') return fail('https:// URLs are not proxied as plain requests: use CONNECT')
  if (scheme !== 'http') return fail(scheme ? `unsupported scheme "${scheme}:"` : 'request-target is not an absolute http:// URL')
  if (url.slice(5, 7) !== '//') return fail('http URL must start with "http://"')
  const rest = url.slice(7)
  if (/[\\#\s]/.test(rest)) return fail('URL contains a backslash, fragment or whitespace')
  const end = rest.search(/[/?]/)
  const authority = end < 0 ? rest : rest.slice(0, end)
  if (authority.includes('@')) return fail('URL contains userinfo ("@"): credentials in URLs are not accepted')
  if (authority.includes('%')) return fail('percent-encoding in the host is not accepted')
  const target = parseAuthority(authority, 80)
  if (!target.ok) return target
  const tail = end < 0 ? '' : rest.slice(end)
  return ok({ target: target.value, path: tail.startsWith('/') ? tail : `/${tail}` })
}

/**
 * An origin-form request (`/path?query`, `Host: name[:port]`) on a transparent listener: the Host
 * header names the destination, and the port is the one the client connected to.
 */
export function parseOriginRequest(requestTarget: string, host: string | undefined, port: number): Result<AbsoluteUrl> {
  if (!requestTarget.startsWith('/')) return fail(`request-target "${shownInError(requestTarget, 100)}" is not origin-form ("/path"): a transparent listener takes requests for the Host it names`)
  if (/[\\#]/.test(requestTarget)) return fail('request-target contains a backslash or fragment')
  if (host === undefined || host === '') return fail('no Host header: a transparent listener is told the destination by it')
  if (host.includes('%')) return fail('percent-encoding in the Host header is not accepted')
  const target = parseAuthority(host, port)
  if (!target.ok) return fail(`bad Host header: ${target.error}`)
  if (target.value.port !== port) return fail(`Host header names port ${target.value.port}, but the request came in on port ${port}`)
  return ok({ target: target.value, path: requestTarget })
}

/**
 * The path of an origin-form request-target, decoded for matching: no query, percent-escapes
 * of ordinary characters decoded, and anything that could mean different paths to different
 * servers refused (dot segments, encoded slashes or backslashes, backslashes, bad escapes).
 */
export function normalisePath(target: string): Result<string> {
  const path = target.split('?')[0] ?? ''
  if (!path.startsWith('/')) return fail(`request path "${path.slice(0, 100)}" does not start with "/"`)
  if (/\\|%2f|%5c/i.test(path)) return fail('encoded slashes and backslashes are not accepted in paths')
  const segments: string[] = []
  for (const raw of path.slice(1).split('/')) {
    let segment: string
    try {
      segment = decodeURIComponent(raw)
    } catch {
      return fail(`bad percent-encoding in path segment "${raw.slice(0, 100)}"`)
    }
    if (segment === '..' || segment === '.') return fail('dot segments ("." and "..") are not accepted in paths')
    // eslint-disable-next-line no-control-regex
    if (/[\x00-\x1f\x7f]/.test(segment)) return fail('control characters are not accepted in paths')
    segments.push(segment)
  }
  return ok(`/${segments.join('/')}`)
}

/**
 * A request-target as a log line's `target` when the request was refused before it was parsed
 * (a 407, a 400): `host:port` when it parses, else only the authority it names, as written. Never
 * a path or query string (tokens) or userinfo: they stay out of logs like for every other decision.
 */
export function targetForLog(raw: string): string {
  const url = parseAbsoluteUrl(raw)
  if (url.ok) return formatTarget(url.value.target)
  const authority = parseAuthority(raw)
  if (authority.ok) return formatTarget(authority.value)
  const afterScheme = raw.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '')
  const end = afterScheme.search(/[/?#\\\s]/)
  const named = end < 0 ? afterScheme : afterScheme.slice(0, end)
  const at = named.lastIndexOf('@')
  return (at < 0 ? named : `[redacted]@${named.slice(at + 1)}`).slice(0, 300)
}

/** Text from a request for an error message: no query string or fragment (tokens), no credentials, at most `max` characters. */
function shownInError(text: string, max: number): string {
  const end = text.search(/[?#]/)
  return redactCredentials(end < 0 ? text.slice(0, max) : `${text.slice(0, Math.min(end, max))}?…`)
}

/**
 * Hides credentials wherever they could show (config errors, validate output, logs): in a value
 * or a JSON-quoted string, `[scheme://]user:password@` becomes `[scheme://][redacted]@`, up to
 * the last "@" before the closing quote (a raw "@" in a password must not leak its tail).
 */
export function redactCredentials(text: string): string {
  return text.replace(/(^|")([a-z][a-z0-9+.-]*:\/\/)?(?:[^"\\]|\\.)*@/gi, '$1$2[redacted]@')
}
