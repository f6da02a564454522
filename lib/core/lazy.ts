// Dependencies loaded on first use, not at start: undici (plain HTTP, opened tunnels, the parent's
// pool) and http-proxy (upgrades) add ~10 MB of RSS to a proxy that may only ever relay tunnels
// (node-forge waits for a CA the same way: certs/x509.ts). Loaded synchronously (CommonJS, once);
// a failure to load throws where the dependency is needed, which the routes answer with a 500.
import { createRequire } from 'node:module'
import type * as Undici from 'undici'
import type HttpProxy from 'http-proxy'

const load = createRequire(import.meta.url)

let undiciModule: typeof Undici | undefined
let httpProxyModule: typeof HttpProxy | undefined

export const undici = (): typeof Undici => (undiciModule ??= load('undici') as typeof Undici)
export const httpProxy = (): typeof HttpProxy => (httpProxyModule ??= load('http-proxy') as typeof HttpProxy)
