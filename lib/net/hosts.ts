// The hosts file (/etc/hosts), read the way the system's resolver does when no DNS servers are
// configured: strictly parsed, re-read when it changes (checked on lookup, no timers).
import { stat, readFile } from 'node:fs/promises'
import { parseIp, type Ip } from '../policy/ip.js'
import { normaliseName } from '../policy/target.js'

export const DEFAULT_HOSTS_FILE = '/etc/hosts'

/**
 * Name -> addresses, IPv4 first, in file order, without repeats. A line is `ADDRESS NAME...`
 * with `#` starting a comment; a line whose address is not a strict IP literal (no zones) or
 * that has a name that is not a valid host name is skipped whole.
 */
export function parseHosts(text: string): Map<string, Ip[]> {
  const table = new Map<string, Ip[]>()
  for (const raw of text.split('\n')) {
    const [address, ...names] = raw.replace(/#.*/, '').trim().split(/\s+/)
    if (address === undefined || address === '' || names.length === 0) continue
    const ip = parseIp(address)
    if (!ip) continue
    const normalised = names.map((n) => normaliseName(n))
    const valid = normalised.flatMap((n) => (n.ok ? [n.value] : []))
    if (valid.length !== normalised.length) continue
    for (const name of valid) {
      const list = table.get(name) ?? []
      if (!list.some((a) => a.family === ip.family && a.value === ip.value)) list.push(ip)
      table.set(name, list)
    }
  }
  for (const [name, list] of table) table.set(name, [...list.filter((a) => a.family === 4), ...list.filter((a) => a.family === 6)])
  return table
}

/** Returns the current table, re-reading the file when its size, mtime or inode changed. */
export function hostsTable(path: string): () => Promise<ReadonlyMap<string, Ip[]>> {
  let key: string | undefined
  let table: ReadonlyMap<string, Ip[]> = new Map()
  let reading: Promise<ReadonlyMap<string, Ip[]>> | undefined

  async function refresh(): Promise<ReadonlyMap<string, Ip[]>> {
    let current: string
    try {
      const s = await stat(path, { bigint: true })
      current = `${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`
    } catch {
      current = 'missing'
    }
    if (current === key) return table
    let text = ''
    if (current !== 'missing') {
      try {
        text = await readFile(path, 'utf8')
      } catch {
        text = ''
      }
    }
    key = current
    table = parseHosts(text)
    return table
  }

  return () => {
    reading ??= refresh().finally(() => {
      reading = undefined
    })
    return reading
  }
}
