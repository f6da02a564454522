// curl as a real client of the proxy: run it, keep its output even when it fails, and split
// what `curl -i` printed into the CONNECT answer, the final response head and the body.
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** Runs curl with exactly `args` and resolves with its stdout, also when curl exits non-zero. */
export async function curlOutput(args: readonly string[]): Promise<string> {
  const { stdout } = await run('curl', [...args]).catch((e: unknown) => ({ stdout: (e as { stdout: string }).stdout }))
  return stdout
}

/** What `curl -i` printed, split up. */
export interface CurlResponse {
  /** status of the first head: the CONNECT answer when curl tunnelled (0 when there is none) */
  readonly connect: number
  /** status of the last head: the response itself (0 when there is none) */
  readonly status: number
  /** the last head, status line included */
  readonly headers: string
  /** everything after the last head */
  readonly body: string
}

/** Runs `curl -s -i --max-time 10 ARGS` and splits its output. */
export async function curl(args: readonly string[]): Promise<CurlResponse> {
  const blocks = (await curlOutput(['-s', '-i', '--max-time', '10', ...args])).split('\r\n\r\n')
  // with --proxytunnel curl prints the CONNECT response first
  const last = blocks.findLastIndex((b) => b.startsWith('HTTP/'))
  const head = blocks[last] ?? ''
  return {
    connect: Number(/^HTTP\/\S+ (\d+)/.exec(blocks[0] ?? '')?.[1] ?? 0),
    status: Number(/^HTTP\/\S+ (\d+)/.exec(head)?.[1] ?? 0),
    headers: head,
    body: blocks.slice(last + 1).join('\r\n\r\n'),
  }
}
