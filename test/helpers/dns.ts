// A real DNS server on loopback (UDP), answering from a fixture zone and counting queries,
// so tests can point proxy-gate's "dns.servers" at it and steer what names resolve to.
import { createSocket, type RemoteInfo } from 'node:dgram'
import * as packet from 'dns-packet'

export interface DnsAnswer {
  readonly A?: readonly string[]
  readonly AAAA?: readonly string[]
  /** seconds; default 0 (no caching) */
  readonly ttl?: number
  readonly rcode?: 'NXDOMAIN' | 'SERVFAIL'
  /** never answer: for timeout tests */
  readonly silent?: boolean
}

/** A fixed answer, or one computed from how many A queries this name has had (for rebinding). */
export type ZoneEntry = DnsAnswer | ((aQueries: number) => DnsAnswer)
export type Zone = Record<string, ZoneEntry>

export interface TestDns {
  readonly port: number
  /** "127.0.0.1:PORT", for rules.json "dns.servers" */
  readonly server: string
  /** questions asked per name (lower case, no trailing dot), A and AAAA together */
  queries(name: string): number
  /** A questions asked for a name (the answer the rebinding zones count) */
  aQueries(name: string): number
  totalQueries(): number
  /** resolves once this name has had `count` questions (A and AAAA together) */
  asked(name: string, count: number): Promise<void>
  /** answers for this name wait until `release` (questions are still counted as they arrive) */
  hold(name: string): { release(): void }
  close(): Promise<void>
}

/** `at` binds it elsewhere than 127.0.0.1 on a free port (a stand-in address containers can reach). */
export async function startDns(zone: Zone, at: { host: string; port: number } = { host: '127.0.0.1', port: 0 }): Promise<TestDns> {
  const socket = createSocket('udp4')
  const counts = new Map<string, number>()
  const aCounts = new Map<string, number>()
  let total = 0
  const held = new Map<string, Array<() => void>>()
  const waiters = new Set<() => void>()
  socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    const query = packet.decode(msg)
    const question = query.questions?.[0]
    if (!question) return
    const name = question.name.toLowerCase().replace(/\.$/, '')
    total++
    counts.set(name, (counts.get(name) ?? 0) + 1)
    if (question.type === 'A') aCounts.set(name, (aCounts.get(name) ?? 0) + 1)
    for (const wake of [...waiters]) wake()
    const entry = zone[name]
    const answer: DnsAnswer = typeof entry === 'function' ? entry(aCounts.get(name) ?? 0) : (entry ?? { rcode: 'NXDOMAIN' })
    if (answer.silent) return
    const records = question.type === 'A' ? (answer.A ?? []) : question.type === 'AAAA' ? (answer.AAAA ?? []) : []
    const response = packet.encode({
      id: query.id,
      type: 'response',
      flags: packet.RECURSION_DESIRED | packet.RECURSION_AVAILABLE | (answer.rcode === 'NXDOMAIN' ? 3 : answer.rcode === 'SERVFAIL' ? 2 : 0),
      questions: [question],
      answers: records.map((data) => ({ type: question.type as 'A' | 'AAAA', name: question.name, ttl: answer.ttl ?? 0, class: 'IN' as const, data })),
    })
    const send = (): void => socket.send(response, rinfo.port, rinfo.address)
    const queue = held.get(name)
    if (queue) queue.push(send)
    else send()
  })
  await new Promise<void>((resolve) => socket.bind(at.port, at.host, resolve))
  const port = socket.address().port
  return {
    port,
    server: `${at.host}:${port}`,
    queries: (name) => counts.get(name) ?? 0,
    aQueries: (name) => aCounts.get(name) ?? 0,
    totalQueries: () => total,
    asked: (name, count) =>
      new Promise<void>((resolve) => {
        const wake = (): void => {
          if ((counts.get(name) ?? 0) < count) return
          waiters.delete(wake)
          resolve()
        }
        waiters.add(wake)
        wake()
      }),
    hold: (name) => {
      held.set(name, [])
      return {
        release: () => {
          const queue = held.get(name) ?? []
          held.delete(name)
          for (const send of queue) send()
        },
      }
    },
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  }
}
