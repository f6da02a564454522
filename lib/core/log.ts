// Structured logs: JSON lines on stdout (one per decision, one per finished connection), or a
// readable line per event when stdout is a terminal. proxy-gate writes the JSON lines itself;
// winston formats the terminal's lines and is loaded only for them (~10 MB of RSS that a proxy
// in a container, logging JSON, never needs).
import { EOL } from 'node:os'
import { winstonLibrary, winstonTransport } from './lazy.js'
import { prettyFormatter, wantsColour } from './pretty.js'
import { jsonWithoutC1 } from './visible.js'

export type LogLevel = 'error' | 'warn' | 'info' | 'debug' | 'silent'
export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug', 'silent']

/** Where the proxy's records go: a message and its fields, at a level. */
export interface Logger {
  error(message: string, fields?: object): void
  warn(message: string, fields?: object): void
  info(message: string, fields?: object): void
  debug(message: string, fields?: object): void
  isInfoEnabled(): boolean
}

export interface LogOptions {
  readonly level: LogLevel
  /** 'json' for machines, 'pretty' for a person at a terminal */
  readonly format: 'json' | 'pretty'
  /** default stdout, coloured when wantsColour says so; a given stream gets no colour */
  readonly stream?: NodeJS.WritableStream
  /** how long a line may wait for others before they are written together (default 10 ms); 0: at the end of its event-loop turn */
  readonly batchMs?: number
}

const MESSAGE = Symbol.for('message') // where winston's formats leave the finished line (triple-beam)
const RANK = { error: 0, warn: 1, info: 2, debug: 3 } as const
type Level = keyof typeof RANK

/** Batches writing to stdout, whose last lines are written out when the process exits. */
const atExit = new Set<LineBatch>()
let exitHook = false

/**
 * How long a line may wait for others before the batch is written (LogOptions.batchMs), and the
 * batch size that is written at once. At 1,000 requests/s a request's two lines come in different
 * event-loop turns: written per turn, that was two system calls and two more loop turns per
 * request, a fifth of its CPU (measured: 358 against 284 µs per request at 1,000 requests/s).
 */
const BATCH_MS = 10
const BATCH_BYTES = 64 * 1024

/** Log text waiting to be written after which new lines are dropped (and counted): a reader that stops must not grow the proxy. */
const MAX_UNWRITTEN = 8 * 1024 * 1024
const DROPPED_WHY = 'the log output was not read: more than 8 MiB waited to be written'

/** What a stream holds unwritten (0 for a stream that does not say). */
function unwritten(out: NodeJS.WritableStream): number {
  return (out as { writableLength?: number }).writableLength ?? 0
}

/**
 * Collects the lines of up to BATCH_MS (or one event-loop turn) and writes them with one call.
 * Every request logs two lines, and each write to a file or pipe is a synchronous system call (12%
 * of the proxy's CPU under load when made per line): batching keeps that off the request path.
 * Lines keep their order, and reach the stream within BATCH_MS (at once past BATCH_BYTES; at exit,
 * whatever waits). A pipe that nobody reads
 * (or reads too slowly) would hold every line in memory: past MAX_UNWRITTEN lines are dropped,
 * and once the stream has drained a warning says how many.
 */
class LineBatch {
  private lines: string[] = []
  private size = 0
  /** what the batch may still take: MAX_UNWRITTEN less the stream's unwritten text when last looked, less what was written since (it errs low) */
  private room = MAX_UNWRITTEN
  private dropped = 0
  private scheduled = false
  private readonly flushSoon = (): void => this.flush()
  /** the line that says how many lines were dropped */
  notice = (dropped: number): string => `{"level":"warn","message":"log lines dropped","timestamp":"${timestampNow()}","dropped":${dropped},"why":"${DROPPED_WHY}"}`

  /** the reader went away (EPIPE): lines are dropped, since logging the error would loop */
  private gone = false

  constructor(
    private readonly out: NodeJS.WritableStream,
    private readonly batchMs: number,
  ) {
    out.on('error', () => {
      this.gone = true
      this.lines = []
    })
  }

  add(line: string): void {
    if (this.gone) return
    const text = `${line}${EOL}`
    if (this.size + text.length > this.room) {
      this.room = MAX_UNWRITTEN - unwritten(this.out)
      if (this.size + text.length > this.room) return this.drop()
    }
    this.lines.push(text)
    this.size += text.length
    if (this.size >= BATCH_BYTES) this.flush()
    else if (!this.scheduled) {
      this.scheduled = true
      // unref: a batch waiting does not keep the process alive; the exit hook writes it
      if (this.batchMs > 0) setTimeout(this.flushSoon, this.batchMs).unref()
      else setImmediate(this.flushSoon)
    }
  }

  private drop(): void {
    if (this.dropped++ === 0) this.out.once('drain', this.flushSoon)
  }

  flush(): void {
    this.scheduled = false
    if (this.gone) return
    if (this.dropped > 0 && unwritten(this.out) + this.size < MAX_UNWRITTEN / 2) {
      this.lines.unshift(`${this.notice(this.dropped)}${EOL}`)
      this.dropped = 0
    }
    if (this.lines.length === 0) return
    const text = this.lines.join('')
    this.room -= text.length
    this.lines = []
    this.size = 0
    this.out.write(text)
  }
}

/**
 * JSON lines with what winston's json format writes: level, message, timestamp and every field
 * that is not undefined (in that order rather than winston's sorted one). One JSON.stringify per
 * line: winston's object stream, format chain and stable stringify cost a fifth of the proxy's
 * CPU on small requests.
 */
class JsonLogger implements Logger {
  /** `rank`: the most verbose level written (RANK), -1 for none */
  constructor(
    private readonly out: LineBatch,
    private readonly rank: number,
  ) {}

  error(message: string, fields?: object): void {
    this.write('error', message, fields)
  }

  warn(message: string, fields?: object): void {
    this.write('warn', message, fields)
  }

  info(message: string, fields?: object): void {
    this.write('info', message, fields)
  }

  debug(message: string, fields?: object): void {
    this.write('debug', message, fields)
  }

  isInfoEnabled(): boolean {
    return this.rank >= RANK.info
  }

  private write(level: Level, message: string, fields: object | undefined): void {
    if (RANK[level] > this.rank) return
    const rest = fields === undefined ? '{}' : fieldsJson(fields)
    this.line(level, JSON.stringify(message), rest === '{}' ? '}' : `,${rest.slice(1)}`)
  }

  /** `message` already quoted; `rest` the fields' JSON after the opening brace, with a leading comma unless empty */
  line(level: Level, message: string, rest: string): void {
    this.out.add(jsonWithoutC1(`{"level":"${level}","message":${message},"timestamp":"${timestampNow()}"${rest}`))
  }
}

/** JSON.stringify, or for what it refuses (a BigInt, a cycle) the text winston's safe stringify would give: a number, "[Circular]". */
function fieldsJson(fields: object): string {
  try {
    return JSON.stringify(fields)
  } catch {
    const seen = new WeakSet<object>()
    return JSON.stringify(fields, (_key, value: unknown) => {
      if (typeof value === 'bigint') return Number(value)
      if (typeof value !== 'object' || value === null) return value
      if (seen.has(value)) return '[Circular]'
      seen.add(value)
      return value
    })
  }
}

/** The terminal's readable lines: lib/core/pretty.ts through winston (a record pretty shows nothing for is dropped). */
function prettyLogger(level: Level, out: LineBatch, colour: boolean): Logger {
  const w = winstonLibrary()
  const Transport = winstonTransport()
  class ToBatch extends Transport {
    override log(info: { [MESSAGE]?: unknown }, next: () => void): void {
      out.add(String(info[MESSAGE]))
      next()
    }
  }
  const format = prettyFormatter(colour)
  out.notice = (dropped) => format({ level: 'warn', message: 'log lines dropped', timestamp: new Date().toISOString(), dropped, why: DROPPED_WHY }).join(EOL)
  const readable = w.format((info) => {
    const lines = format(info)
    if (lines.length === 0) return false
    return Object.assign(info, { [MESSAGE]: lines.join(EOL) })
  })
  // ToBatch extends winston-transport's class; the rule loses track of it through winston's `export =` types
  // eslint-disable-next-line @typescript-eslint/no-unsafe-class-instance-assignment
  return w.createLogger({ level, format: w.format.combine(w.format.timestamp(), readable()), transports: [new ToBatch()] })
}

export function createLogger(options: LogOptions): Logger {
  const out = new LineBatch(options.stream ?? process.stdout, options.batchMs ?? BATCH_MS)
  if (!options.stream) {
    atExit.add(out)
    if (!exitHook) process.once('exit', () => atExit.forEach((batch) => batch.flush())) // stdout writes are synchronous for files and pipes
    exitHook = true
  }
  if (options.level === 'silent') return new JsonLogger(out, -1)
  if (options.format === 'json') return new JsonLogger(out, RANK[options.level])
  return prettyLogger(options.level, out, !options.stream && wantsColour(process.env, process.stdout))
}

let secondAt = -1
let secondText = ''
/**
 * The ISO timestamp winston's format would add. toISOString costs ~7k instructions, and under load
 * nearly every line is a new millisecond: it runs once per second, whose text is then reused.
 */
export function timestampAt(now: number): string {
  const second = Math.floor(now / 1000)
  if (second !== secondAt) {
    secondAt = second
    secondText = new Date(now).toISOString().slice(0, -4) // up to the '.' before the milliseconds
  }
  const ms = now - second * 1000
  return `${secondText}${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z`
}

function timestampNow(): string {
  return timestampAt(Date.now())
}

/** Event types as JSON strings: a handful of them, each quoted once rather than twice per tunnel. */
const quotedTypes = new Map<string, string>()
function quotedType(type: string): string {
  let quoted = quotedTypes.get(type)
  if (quoted === undefined) quotedTypes.set(type, (quoted = JSON.stringify(type)))
  return quoted
}

/**
 * log.info for an event whose first field, `type`, is the message: the same line, without a copy
 * of the event minus `type` (two objects of ~20 fields less per tunnel). `json` is JSON.stringify
 * or a serialiser that writes the same text for the events it is given.
 */
export function logTypedEvent<E extends { readonly type: string }>(log: Logger, event: E, json: (event: E) => string = JSON.stringify): void {
  if (!log.isInfoEnabled()) return
  const message = quotedType(event.type)
  const text = log instanceof JsonLogger ? json(event) : ''
  if (!(log instanceof JsonLogger) || !text.startsWith('{"type":') || !text.startsWith(message, 8)) {
    const { type, ...fields } = event
    return log.info(type, fields)
  }
  log.line('info', message, text.slice(message.length + 8))
}
