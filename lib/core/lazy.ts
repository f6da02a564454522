// Dependencies loaded on first use, not at start: each adds megabytes of RSS to a proxy that may
// never need it. undici: plain HTTP, opened tunnels, the parent's pool; http-proxy: upgrades;
// prom-client: the first metrics scrape; winston: the terminal's readable log lines; tldts (the
// public suffix list): the first wildcard rule that allows or bypasses (node-forge
// waits for a local CA the same way: certs/x509.ts). Loaded synchronously (CommonJS, once); a
// failure to load throws where the dependency is needed, which the routes answer with a 500.
import { createRequire } from 'node:module'
import type * as Undici from 'undici'
import type HttpProxy from 'http-proxy'
import type * as Prom from 'prom-client'
import type Winston from 'winston'
import type TransportStream from 'winston-transport'
import type * as Tldts from 'tldts'

const load = createRequire(import.meta.url)

/** `require(name)` on the first call, the same module after. */
// T names the module's type, which require cannot know: it is the caller's to say
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters
function onFirstUse<T>(name: string): () => T {
  let loaded: T | undefined
  return () => (loaded ??= load(name) as T)
}

export const undici = onFirstUse<typeof Undici>('undici')
export const httpProxy = onFirstUse<typeof HttpProxy>('http-proxy')
export const promClient = onFirstUse<typeof Prom>('prom-client')
export const winstonLibrary = onFirstUse<typeof Winston>('winston')
export const winstonTransport = onFirstUse<typeof TransportStream>('winston-transport')
export const tldts = onFirstUse<typeof Tldts>('tldts')
