// `proxy-gate sandbox probe SPEC`: not for people. `sandbox verify` runs it in a short-lived
// container on the sandbox network (the proxy-gate image itself), with the probes to try as JSON;
// it adds the container's own gateways and resolvers, tries everything at once, and prints what
// happened as one JSON document. The judging is done outside, by lib/wiring/sandbox-verify.ts.
import { randomInt } from 'node:crypto'
import { createSocket } from 'node:dgram'
import { readFileSync } from 'node:fs'
import { connect, isIPv6 } from 'node:net'
import { networkInterfaces } from 'node:os'
import { encodeQuery, readResponse } from '../dns/query.js'
import { ipv6RouteGateways, resolvNameservers, routeGateways } from '../wiring/sandbox-facts.js'
import { withLocal, type DnsOutcome, type DnsProbe, type LocalFacts, type ProbeReport, type ProbeSpec, type TcpOutcome, type TcpProbe } from '../wiring/sandbox-verify.js'

function read(path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return ''
  }
}

function localFacts(): LocalFacts {
  const addresses = Object.entries(networkInterfaces()).flatMap(([name, list]) =>
    (list ?? []).filter((a) => !a.internal).map((a) => (a.family === 'IPv6' && a.scopeid ? `${a.address}%${name}` : a.address)),
  )
  const gateways = [...routeGateways(read('/proc/net/route')), ...ipv6RouteGateways(read('/proc/net/ipv6_route'))]
  return { addresses, gateways, nameservers: resolvNameservers(read('/etc/resolv.conf')) }
}

function tcp(probe: TcpProbe, timeoutMs: number): Promise<{ outcome: TcpOutcome; code?: string }> {
  return new Promise((done) => {
    const socket = connect({ host: probe.address, port: probe.port, timeout: timeoutMs })
    socket.on('connect', () => {
      socket.destroy()
      done({ outcome: 'connected' })
    })
    socket.on('timeout', () => {
      socket.destroy()
      done({ outcome: 'timeout' })
    })
    socket.on('error', (error: NodeJS.ErrnoException) => {
      const code = error.code ?? 'error'
      done(code === 'ECONNREFUSED' ? { outcome: 'refused' } : code === 'ECONNRESET' ? { outcome: 'reset' } : { outcome: 'unreachable', code })
    })
  })
}

/** One A query over UDP on a connected socket, so that an ICMP port unreachable comes back as ECONNREFUSED. */
function dns(server: string, name: string, timeoutMs: number): Promise<DnsOutcome> {
  return new Promise((done) => {
    const socket = createSocket(isIPv6(server.split('%')[0] ?? '') ? 'udp6' : 'udp4')
    const id = randomInt(65536)
    let settled = false
    const finish = (outcome: DnsOutcome): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.close()
      done(outcome)
    }
    const timer = setTimeout(() => finish({ kind: 'timeout' }), timeoutMs)
    const failed = (error: NodeJS.ErrnoException | null | undefined): void => {
      if (error) finish(error.code === 'ECONNREFUSED' ? { kind: 'refused' } : { kind: 'unreachable', code: error.code ?? 'error' })
    }
    socket.on('error', failed)
    socket.on('message', (msg) => {
      const response = readResponse(msg, id)
      if (response) finish({ kind: 'answer', ...response })
    })
    // the connect callback gets the error of a route lookup (ENETUNREACH), send's gets a refusal on the way out
    socket.connect(53, server, (error?: Error) => (error ? failed(error) : socket.send(encodeQuery(id, name), failed)))
  })
}

function isSpec(value: unknown): value is ProbeSpec {
  const v = value as Partial<ProbeSpec> | null
  return typeof v === 'object' && v !== null && typeof v.proxy === 'string' && Array.isArray(v.tcp) && Array.isArray(v.dns) && Array.isArray(v.names) && typeof v.timeoutMs === 'number'
}

export async function probeCommand(args: readonly string[]): Promise<number> {
  let spec: unknown
  try {
    spec = JSON.parse(args[0] ?? '')
  } catch {
    spec = undefined
  }
  if (args.length !== 1 || !isSpec(spec)) {
    console.error('proxy-gate sandbox probe: internal to "sandbox verify", which runs it with what to probe as JSON')
    return 2
  }
  const local = localFacts()
  const full = withLocal(spec, local)
  const dnsProbes = full.dns.flatMap((d: DnsProbe) => full.names.map((name) => ({ ...d, name })))
  const [tcpResults, dnsResults] = await Promise.all([
    Promise.all(full.tcp.map(async (p) => ({ ...p, ...(await tcp(p, full.timeoutMs)) }))),
    Promise.all(dnsProbes.map(async (d) => ({ ...d, outcome: await dns(d.server, d.name, full.timeoutMs) }))),
  ])
  const report: ProbeReport = { local, tcp: tcpResults, dns: dnsResults }
  process.stdout.write(`${JSON.stringify(report)}\n`)
  return 0
}
