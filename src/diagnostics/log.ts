// Structured logging (pino to stdout, so journald keeps it). No worker-thread transports:
// they do not work inside the single binary.
import { pino, type Logger, type Level } from 'pino';

export type { Logger };
export type LogLevel = Level | 'silent';

export function createLogger(level: LogLevel = 'info', destination?: NodeJS.WritableStream): Logger {
  return pino(
    { level, base: { app: 'convoy' }, timestamp: pino.stdTimeFunctions.isoTime },
    destination ?? pino.destination({ sync: false }),
  );
}

/** A logger that drops everything: for tests and library use. */
export const silentLogger: Logger = pino({ level: 'silent' });
