// ci: floor line only: pure functions, no I/O: the same under any Node
// lib/proxy/linked-set.ts: the set behind the open-connection registry and the tunnel sweep. Entries
// join and leave in any order, each once, and a walk may close (and so remove) entries as it goes.
import t from 'tap'
import { LinkedSet } from '../lib/proxy/linked-set.js'
import type { OpenConnection } from '../lib/proxy/runtime.js'

function connections(n: number, registry: LinkedSet<OpenConnection>): OpenConnection[] {
  return Array.from({ length: n }, (_, i) => {
    const conn: OpenConnection = {
      id: `c${i}`,
      kind: 'forward',
      target: { host: { kind: 'name', name: `h${i}.example` }, port: 80 },
      resolved: undefined,
      who: { source: undefined, user: undefined },
      close: () => registry.delete(conn),
    }
    return conn
  })
}
const ids = (registry: LinkedSet<OpenConnection>): string[] => [...registry].map((c) => c.id).sort()

t.test('adds and removes in any order; adding or removing twice changes nothing', async (t) => {
  const registry = new LinkedSet<OpenConnection>()
  const [a, b, c, d] = connections(4, registry) as [OpenConnection, OpenConnection, OpenConnection, OpenConnection]
  for (const conn of [a, b, c, d, b]) registry.add(conn)
  t.equal(registry.size, 4)
  t.same(ids(registry), ['c0', 'c1', 'c2', 'c3'])
  registry.delete(c) // middle
  registry.delete(d) // head (the newest)
  registry.delete(d)
  t.equal(registry.size, 2)
  t.same(ids(registry), ['c0', 'c1'])
  registry.delete(a) // tail (the oldest)
  t.same(ids(registry), ['c1'])
  registry.add(a)
  t.same(ids(registry), ['c0', 'c1'], 'a removed entry can join again')
  registry.delete(a)
  registry.delete(b)
  t.equal(registry.size, 0)
  t.same([...registry], [])
})

t.test('a walk that closes every connection visits each once and leaves none', async (t) => {
  const registry = new LinkedSet<OpenConnection>()
  const all = connections(100, registry)
  for (const conn of all) registry.add(conn)
  const seen: string[] = []
  for (const conn of registry) {
    seen.push(conn.id)
    conn.close('shutting down')
  }
  t.equal(seen.length, 100)
  t.equal(new Set(seen).size, 100)
  t.equal(registry.size, 0)
})

t.test('an object may be in several sets: each keeps its own links, and one set cannot remove it from another', async (t) => {
  const a = new LinkedSet<OpenConnection>()
  const b = new LinkedSet<OpenConnection>()
  const [x] = connections(1, a) as [OpenConnection]
  a.add(x)
  b.delete(x)
  t.equal(a.size, 1, 'deleting from a set it is not in changes nothing')
  t.same([...a], [x])
  b.add(x)
  t.equal(b.size, 1, 'added to a second set (a socket is both open and waiting for its first byte)')
  a.delete(x)
  t.equal(a.size, 0)
  t.same([...b], [x], 'still in the second set after leaving the first')
  b.delete(x)
  t.equal(b.size, 0)
})
