// Loopback origin servers for `npm run bench`, in their own process (forked by run.mjs with an
// IPC channel). Not a test. It also acts as the watchdog: when the bench driver goes away, for
// whatever reason, it stops every proxy the driver told it about, then exits.
//
//   http   small fixed response (18 bytes), keep-alive: the plain-HTTP forwarding target
//   bulk   reads one line "SEND <bytes>\n", sends that many bytes, then ends: CONNECT throughput
//   echo   echoes what it reads and ends when the client ends: tunnel round trips, idle tunnels
import { createServer as createHttpServer } from 'node:http'
import { createServer as createTcpServer } from 'node:net'

export const BODY = Buffer.from('hello from origin\n') // 18 bytes, as in the reference figures
const CHUNK = Buffer.alloc(256 * 1024, 0x61)

const http = createHttpServer({ keepAliveTimeout: 65_000, headersTimeout: 66_000, requestTimeout: 0 }, (req, res) => {
  req.resume()
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': String(BODY.length) })
  res.end(BODY)
})
http.maxRequestsPerSocket = 0

const bulk = createTcpServer({ noDelay: true }, (socket) => {
  socket.on('error', () => socket.destroy())
  let line = ''
  const onData = (chunk) => {
    line += chunk.toString('latin1')
    const nl = line.indexOf('\n')
    if (nl < 0) {
      if (line.length > 64) socket.destroy()
      return
    }
    socket.off('data', onData)
    const match = /^SEND (\d+)$/.exec(line.slice(0, nl))
    if (!match) return void socket.destroy()
    let left = Number(match[1])
    const pump = () => {
      while (left > 0) {
        const piece = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left)
        left -= piece.length
        if (!socket.write(piece)) return void socket.once('drain', pump)
      }
      socket.end()
    }
    socket.resume()
    pump()
  }
  socket.on('data', onData)
})

const echo = createTcpServer({ noDelay: true }, (socket) => {
  socket.on('error', () => socket.destroy())
  socket.pipe(socket)
})
for (const server of [bulk, echo]) server.maxConnections = 1_000_000

/** @param {import('node:net').Server} server @returns {Promise<number>} */
const listen = (server) => new Promise((resolve, reject) => {
  server.once('error', reject)
  server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => resolve(/** @type {import('node:net').AddressInfo} */ (server.address()).port))
})

/** PIDs of proxies the driver started: stopped here if the driver dies without doing it. */
const watched = new Set()

function stopWatched() {
  for (const pid of watched) {
    try { process.kill(pid, 'SIGTERM') } catch { watched.delete(pid) }
  }
  if (watched.size === 0) return process.exit(0)
  setTimeout(() => {
    for (const pid of watched) try { process.kill(pid, 'SIGKILL') } catch { /* gone */ }
    process.exit(0)
  }, 3_000).unref()
}

if (!process.send) {
  console.error('origin.mjs is started by test/bench/run.mjs')
  process.exit(2)
}
process.on('message', (msg) => {
  if (msg && typeof msg === 'object' && 'watch' in msg) watched.add(msg.watch)
  if (msg && typeof msg === 'object' && 'unwatch' in msg) watched.delete(msg.unwatch)
  if (msg && typeof msg === 'object' && 'stop' in msg) stopWatched()
})
process.on('disconnect', stopWatched)
process.on('SIGTERM', stopWatched)
process.on('SIGINT', () => { /* the driver handles Ctrl-C and tells us to stop */ })

const [httpPort, bulkPort, echoPort] = await Promise.all([listen(http), listen(bulk), listen(echo)])
process.send({ ready: { http: httpPort, bulk: bulkPort, echo: echoPort } })
