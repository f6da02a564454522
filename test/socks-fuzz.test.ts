// A randomized fuzz of the SOCKS5 handshake: the parsers in-process on tens of thousands of inputs
// (random bytes and mutated real messages, whole and cut at every length), then thousands of them
// sent over real sockets to a running proxy, which must close each, log no internal error and go
// on serving. The seed is printed: SOCKS_SEED repeats a run.
import { randomInt } from 'node:crypto'
import { connect } from 'node:net'
import t from 'tap'
import { MAX_HANDSHAKE_BYTES, parseCredentials, parseGreeting, parseRequest } from '../lib/socks/parse.js'
import { Random } from './helpers/client-hello.js'
import { startBannerUpstream } from './helpers/net.js'
import { startProxy } from './helpers/proxy.js'
import { credentials, greeting, request, socksConnect } from './helpers/socks.js'

const SEED = process.env.SOCKS_SEED === undefined ? randomInt(2 ** 31) : Number(process.env.SOCKS_SEED)

/** A real message of each kind, for mutation. */
function samples(random: Random): Buffer[] {
  const name = random.pick(['a.example', 'x'.repeat(255), 'git.example.com', '1.2.3.4', '::1', 'bad name', ''])
  return [
    greeting(random.pick([[0], [0, 2], [2], [1, 2, 3, 0x80]])),
    credentials(random.pick(['alice', '', 'u'.repeat(255)]), random.pick(['pw', '', 'p'.repeat(255)])),
    request(name, random.int(0, 65535), random.int(0, 4)),
    Buffer.concat([greeting([0]), request(name, random.int(1, 65535))]),
  ]
}

function mutate(random: Random, bytes: Buffer): Buffer {
  const out = Buffer.from(bytes)
  for (let i = random.int(0, 3); i > 0 && out.length > 0; i--) out[random.int(0, out.length - 1)] = random.int(0, 255)
  if (random.chance(0.2)) return Buffer.concat([out, random.bytes(random.int(1, 40))])
  if (random.chance(0.2)) return out.subarray(0, random.int(0, out.length))
  return out
}

function input(random: Random): Buffer {
  if (random.chance(0.3)) {
    const first = random.pick([5, 5, 5, 4, 1, 0x16, 0x47])
    return Buffer.concat([Buffer.from([first]), random.bytes(random.int(0, 300))])
  }
  return mutate(random, random.pick(samples(random)))
}

/** A parse result as text (addresses are bigints) */
const show = (value: unknown): string => JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))

const PARSERS = { greeting: parseGreeting, credentials: parseCredentials, request: parseRequest }

t.test('the parsers: never throw, read no further than the input, and say the same of every input cut short', async (t) => {
  t.comment(`seed ${SEED} (SOCKS_SEED=${SEED} repeats this run)`)
  const random = new Random(SEED)
  let complete = 0
  for (let i = 0; i < 20_000; i++) {
    const bytes = input(random)
    for (const [which, parse] of Object.entries(PARSERS)) {
      const whole = parse(bytes)
      if (whole.kind === 'need-more' || whole.kind === 'bad' || whole.kind === 'address-type') continue
      complete++
      if (whole.length > bytes.length || whole.length > MAX_HANDSHAKE_BYTES) return t.fail(`${which}: read ${whole.length} of ${bytes.length} bytes (input ${bytes.toString('hex')})`)
      // incremental: the message alone is read the same, and every prefix of it needs more (or is already bad)
      if (show(parse(bytes.subarray(0, whole.length))) !== show(whole)) return t.fail(`${which}: the message alone reads differently (input ${bytes.toString('hex')})`)
      for (let cut = 0; cut < whole.length; cut++) {
        const kind = parse(bytes.subarray(0, cut)).kind
        if (kind !== 'need-more' && kind !== 'bad') return t.fail(`${which}: ${cut} of ${whole.length} bytes read as ${kind} (input ${bytes.toString('hex')})`)
      }
    }
  }
  t.ok(complete > 5_000, `the inputs held many complete messages too (${complete})`)
})

/** Sends `bytes` in up to three chunks, then FIN; resolves once the proxy closed the connection. */
function throwAt(port: number, bytes: Buffer, random: Random): Promise<void> {
  const cuts = [random.int(0, bytes.length), random.int(0, bytes.length)].sort((a, b) => a - b)
  const chunks = [bytes.subarray(0, cuts[0]), bytes.subarray(cuts[0], cuts[1]), bytes.subarray(cuts[1])].filter((c) => c.length > 0)
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port })
    socket.on('error', () => undefined)
    socket.on('data', () => undefined)
    socket.once('close', () => resolve())
    socket.once('connect', () => {
      for (const chunk of chunks) socket.write(chunk)
      socket.end()
    })
  })
}

t.test('thousands of fuzzed handshakes over real sockets: each is closed, no internal error, the proxy keeps serving', async (t) => {
  t.comment(`seed ${SEED} (SOCKS_SEED=${SEED} repeats this run)`)
  const banner = await startBannerUpstream('127.0.0.1', 'still here\n')
  const proxy = await startProxy({ socks: { listen: '127.0.0.1:0' }, allow: [`127.0.0.1:${banner.port}`] })
  t.teardown(async () => {
    await proxy.close()
    await banner.close()
  })
  const port = proxy.proxy.socksAddress()?.port ?? 0
  const random = new Random(SEED ^ 0x5a5a5a5a)
  const inputs = Array.from({ length: 3_000 }, () => input(random))
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < inputs.length) await throwAt(port, inputs[next++] ?? Buffer.alloc(0), random)
  }
  await Promise.all(Array.from({ length: 16 }, worker))
  t.equal(next, inputs.length, 'every input was sent and its connection closed')
  t.same(proxy.logs().filter((l) => l.level === 'error'), [], 'no internal error')
  t.equal(banner.connections(), 0, 'no fuzzed request reached the one allowed destination')
  const ok = await socksConnect(port, '127.0.0.1', banner.port)
  t.equal(ok.code, 0x00, 'the listener still serves')
  t.equal((await ok.session.read(11))?.toString(), 'still here\n')
  ok.session.socket.destroy()
})
