// Structured logs: JSON lines on stdout (one per decision, one per finished connection), or a
// readable line per event when stdout is a terminal.
import winston from 'winston'

export type LogLevel = 'error' | 'warn' | 'info' | 'debug' | 'silent'
export const LOG_LEVELS: readonly LogLevel[] = ['error', 'warn', 'info', 'debug', 'silent']

export type Logger = winston.Logger

export interface LogOptions {
  readonly level: LogLevel
  /** 'json' for machines, 'pretty' for a person at a terminal */
  readonly format: 'json' | 'pretty'
  readonly stream?: NodeJS.WritableStream
}

const pretty = winston.format.printf((info) => {
  const { level, message, timestamp, ...rest } = info
  const fields = Object.entries(rest)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ')
  return `${String(timestamp)} ${level} ${String(message)}${fields ? ` ${fields}` : ''}`
})

export function createLogger(options: LogOptions): Logger {
  const { combine, timestamp, json, colorize } = winston.format
  const format = options.format === 'json' ? combine(timestamp(), json()) : combine(timestamp(), colorize(), pretty)
  const transport = options.stream
    ? new winston.transports.Stream({ stream: options.stream })
    : new winston.transports.Console()
  return winston.createLogger({
    level: options.level === 'silent' ? 'error' : options.level,
    silent: options.level === 'silent',
    format,
    transports: [transport],
  })
}
