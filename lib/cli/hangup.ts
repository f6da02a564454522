// SIGHUP, the reload signal, from the first moment of `start` and `learn`: cli.ts imports this
// module first, and when the command comes first on the command line (as in `proxy-gate start
// ...`) its listener is in place before anything else of proxy-gate loads. Without a listener a
// SIGHUP terminates Node.js, and `start` is only ready to reload once it listens: until then the
// signal waits here, and the reload runs as soon as the handler is given.

let handler: (() => void) | undefined
let waiting = false
let listening = false

function listen(): void {
  if (listening) return
  listening = true
  process.on('SIGHUP', () => {
    if (handler) handler()
    else waiting = true
  })
}

// only for these commands: a SIGHUP should end any other, as a hang-up does
if (process.argv[2] === 'start' || process.argv[2] === 'learn') listen()

/** Runs `reload` on each SIGHUP from now on, and at once if one came while there was none. */
export function onHangup(reload: () => void): void {
  handler = reload
  listen()
  if (!waiting) return
  waiting = false
  reload()
}
