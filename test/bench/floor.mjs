// The floor for `npm run bench`: the least a Node CONNECT relay can do. Raw `net`, CONNECT only, no
// policy, no DNS (the bench dials IP literals), no logs, no limits. Not a test and not a proxy
// anyone should run: it exists so every report shows what proxy-gate costs above Node itself.
//
//   client --CONNECT ip:port--> head read (8 KiB max) -> net.connect -> 200 -> relay both ways
//
// The download side (upstream -> client, where the bytes are) is read through `onread` into one
// buffer shared by every tunnel, copying out exactly the bytes each read returned: large reads at
// no per-tunnel memory. The upload side is a plain pipe.
//
//   node test/bench/floor.mjs PORT [SHARED_BUFFER_KIB]
import { connect, createServer } from 'node:net'

const port = Number(process.argv[2])
const shared = Buffer.allocUnsafe(Number(process.argv[3] ?? 4096) * 1024)
const HEAD_MAX = 8192

const server = createServer({ noDelay: true }, (client) => {
  client.on('error', () => client.destroy())
  let head = Buffer.alloc(0)
  const onData = (chunk) => {
    head = head.length ? Buffer.concat([head, chunk]) : chunk
    const end = head.indexOf('\r\n\r\n')
    if (end < 0) {
      if (head.length > HEAD_MAX) client.destroy()
      return
    }
    client.off('data', onData)
    client.pause()
    const match = /^CONNECT (\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5}) HTTP\/1\.[01]\r\n/.exec(head.subarray(0, end + 2).toString('latin1'))
    if (!match) return void client.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n')
    relay(client, match[1], Number(match[2]), head.subarray(end + 4))
  }
  client.on('data', onData)
})

function relay(client, host, destPort, early) {
  const upstream = connect({
    host,
    port: destPort,
    noDelay: true,
    onread: {
      buffer: shared,
      callback: (n, buf) => {
        if (!client.write(Buffer.from(buf.subarray(0, n)))) upstream.pause()
      },
    },
  })
  const destroyBoth = () => (client.destroy(), upstream.destroy())
  upstream.on('error', destroyBoth)
  client.on('error', destroyBoth)
  client.on('drain', () => upstream.resume())
  upstream.once('connect', () => {
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
    if (early.length) upstream.write(early)
    client.pipe(upstream)
    client.resume()
  })
  upstream.once('end', () => client.end())
  // a clean close has already ended the other side (pipe / 'end' above); only a failure cuts it
  client.once('close', (failed) => failed && upstream.destroy())
  upstream.once('close', (failed) => failed && client.destroy())
}

server.listen(port, '127.0.0.1')
process.once('SIGTERM', () => process.exit(0))
