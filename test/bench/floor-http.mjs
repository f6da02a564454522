// The plain-HTTP floor for `npm run bench`: the least a Node forward proxy does for an
// absolute-form request. node:http in, undici's dispatch API out (keep-alive pool, as
// proxy-gate uses), the answer streamed back with backpressure. No policy, no DNS (the bench
// sends IP literals), no logs, no limits. Not a proxy anyone should run: it shows what
// proxy-gate's plain HTTP costs above Node itself.
//
//   client --GET http://ip:port/path--> node:http -> undici dispatch -> client
//
//   node test/bench/floor-http.mjs PORT
import { createServer } from 'node:http'
import { Agent } from 'undici'

const port = Number(process.argv[2])
const agent = new Agent({ keepAliveTimeout: 4_000, connections: 256 })
const HOP_BY_HOP = new Set(['connection', 'proxy-connection', 'keep-alive', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade'])

/** node:http's raw header pairs minus the hop-by-hop ones, as undici takes them */
function endToEnd(raw) {
  const out = []
  for (let i = 0; i < raw.length; i += 2) {
    if (!HOP_BY_HOP.has(raw[i].toLowerCase())) out.push(raw[i], raw[i + 1])
  }
  return out
}

createServer((req, res) => {
  const url = /^http:\/\/([^/]+)(\/.*)?$/.exec(req.url ?? '')
  if (!url) return void res.writeHead(400, { connection: 'close' }).end()
  const fail = () => (res.headersSent ? res.destroy() : res.writeHead(502).end())
  agent.dispatch(
    { origin: `http://${url[1]}`, path: url[2] ?? '/', method: req.method, headers: endToEnd(req.rawHeaders), body: req.method === 'GET' || req.method === 'HEAD' ? null : req },
    {
      onRequestStart() {},
      onResponseStart(_c, status, headers) {
        if (status < 200) return
        const out = {}
        for (const [name, value] of Object.entries(headers)) if (!HOP_BY_HOP.has(name)) out[name] = value
        res.writeHead(status, out)
      },
      onResponseData(c, chunk) {
        if (res.write(chunk)) return
        c.pause()
        res.once('drain', () => c.resume())
      },
      onResponseEnd() {
        res.end()
      },
      onResponseError: fail,
    },
  )
}).listen(port, '127.0.0.1')
