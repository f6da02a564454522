// node:http, node:https and node:tls through require, not import. On Node 22 and 24 an ESM import
// of a builtin builds its namespace from every export, which runs the lazy getters: node:http's
// WebSocket, CloseEvent and MessageEvent load Node's bundled undici (~10 MB of RSS), and
// node:tls's rootCertificates parses every root certificate (~5 MB). proxy-gate uses neither.
import { createRequire } from 'node:module'
import type * as Http from 'node:http'
import type * as Https from 'node:https'
import type * as Tls from 'node:tls'

const load = createRequire(import.meta.url)

export const http = load('node:http') as typeof Http
export const https = load('node:https') as typeof Https
export const tls = load('node:tls') as typeof Tls
