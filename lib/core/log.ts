// Structured logs: JSON lines on stdout (one per decision, one per finished connection), or a
// readable line per event when stdout is a terminal.
import { EOL } from 'node:os'
import winston from 'winston'
import TransportStream from 'winston-transport'
import { prettyFormatter, wantsColour } from './pretty.js'

export type LogLevel = 'error' | 'warn' | 'info' | 'debug' | 'silent'
export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug', 'silent']

export type Logger = winston.Logger

export interface LogOptions {
  readonly level: LogLevel
  /** 'json' for machines, 'pretty' for a person at a terminal */
  readonly format: 'json' | 'pretty'
  /** default stdout, coloured when wantsColour says so; a given stream gets no colour */
  readonly stream?: NodeJS.WritableStream
}

const MESSAGE = Symbol.for('message') // where winston's formats leave the finished line (triple-beam)

/** The readable lines of lib/core/pretty.ts; a record it shows nothing for is dropped. */
function pretty(colour: boolean): winston.Logform.Format {
  const format = prettyFormatter(colour)
  return winston.format((info) => {
    const lines = format(info)
    if (lines.length === 0) return false
    return Object.assign(info, { [MESSAGE]: lines.join(EOL) })
  })()
}
// winston exports its transport base class as `Transport`; its typings call it `transport`

/** Transports writing to stdout, whose last lines are written out when the process exits. */
const atExit = new Set<LineBatch>()
let exitHook = false

/**
 * Collects the formatted lines of one event-loop turn and writes them with one call. Every
 * request logs two lines, and each write to a file or pipe is a synchronous system call (12% of
 * the proxy's CPU under load when made per line): batching keeps that off the request path.
 * Lines keep their order; they reach the stream at the end of the turn that logged them.
 */
class LineBatch extends TransportStream {
  private lines: string[] = []
  private scheduled = false
  private readonly flushSoon = (): void => this.flush()

  /** the reader went away (EPIPE): lines are dropped, since logging the error would loop */
  private gone = false

  constructor(private readonly out: NodeJS.WritableStream) {
    super()
    out.on('error', () => {
      this.gone = true
      this.lines = []
    })
  }

  override log(info: { [MESSAGE]?: unknown }, next: () => void): void {
    this.add(String(info[MESSAGE]))
    next()
  }

  add(line: string): void {
    if (this.gone) return
    this.lines.push(`${line}${EOL}`)
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.flushSoon)
    }
  }

  flush(): void {
    this.scheduled = false
    if (this.lines.length === 0 || this.gone) return
    const text = this.lines.join('')
    this.lines = []
    this.out.write(text)
  }
}

/** JSON loggers made by createLogger, and where their lines go: events are written there directly. */
const jsonLines = new WeakMap<Logger, LineBatch>()

export function createLogger(options: LogOptions): Logger {
  const { combine, timestamp, json } = winston.format
  const format = options.format === 'json' ? combine(timestamp(), json()) : combine(timestamp(), pretty(!options.stream && wantsColour(process.env, process.stdout)))
  const transport = new LineBatch(options.stream ?? process.stdout)
  if (!options.stream) {
    atExit.add(transport)
    if (!exitHook) process.once('exit', () => atExit.forEach((t) => t.flush())) // stdout writes are synchronous for files and pipes
    exitHook = true
  }
  const logger = winston.createLogger({
    level: options.level === 'silent' ? 'error' : options.level,
    silent: options.level === 'silent',
    format,
    // LineBatch extends winston-transport's class; the rule loses track of it through winston's `export =` types
    // eslint-disable-next-line @typescript-eslint/no-unsafe-class-instance-assignment
    transports: [transport],
  })
  if (options.format === 'json' && options.level !== 'silent') jsonLines.set(logger, transport)
  return logger
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

/**
 * Logs one info event (two per request). A JSON logger gets the same line winston would write,
 * built here with one JSON.stringify: winston's per-record object stream, format chain and
 * stable stringify cost a fifth of the proxy's CPU on small requests. Other loggers go
 * through winston. Fields that are undefined are left out, as winston does.
 */
export function logEvent(log: Logger, message: string, fields: object): void {
  const out = jsonLines.get(log)
  if (out === undefined) return void log.info(message, fields)
  if (!log.isInfoEnabled()) return
  const rest = JSON.stringify(fields)
  const head = `{"level":"info","message":${JSON.stringify(message)},"timestamp":"${timestampNow()}"`
  out.add(rest === '{}' ? `${head}}` : `${head},${rest.slice(1)}`)
}

/** Event types as JSON strings: a handful of them, each quoted once rather than twice per tunnel. */
const quotedTypes = new Map<string, string>()
function quotedType(type: string): string {
  let quoted = quotedTypes.get(type)
  if (quoted === undefined) quotedTypes.set(type, (quoted = JSON.stringify(type)))
  return quoted
}

/**
 * logEvent for an event whose first field, `type`, is the message: the same line, without a copy
 * of the event minus `type` (two objects of ~20 fields less per tunnel). `json` is JSON.stringify
 * or a serialiser that writes the same text for the events it is given.
 */
export function logTypedEvent<E extends { readonly type: string }>(log: Logger, event: E, json: (event: E) => string = JSON.stringify): void {
  const out = jsonLines.get(log)
  if (out !== undefined && !log.isInfoEnabled()) return
  const message = quotedType(event.type)
  const text = out === undefined ? '' : json(event)
  if (out === undefined || !text.startsWith('{"type":') || !text.startsWith(message, 8)) {
    const { type, ...fields } = event
    return logEvent(log, type, fields)
  }
  out.add(`{"level":"info","message":${message},"timestamp":"${timestampNow()}"${text.slice(message.length + 8)}`)
}
