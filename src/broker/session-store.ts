// Where sessions live. The in-memory store is a map; the SQLite store (durable state) implements
// the same interface and is exercised by the same conformance suite.
import type { Metrics } from '../diagnostics/metrics.js';
import { Session, type SessionLimits } from './session.js';

export interface SessionStore {
  get(clientId: string): Session | undefined;
  /** Creates a fresh session, replacing any existing one of that client id. */
  create(clientId: string): Session;
  delete(clientId: string): void;
  values(): IterableIterator<Session>;
  readonly size: number;
}

export class MemorySessionStore implements SessionStore {
  private readonly sessions = new Map<string, Session>();

  constructor(private readonly limits: SessionLimits, private readonly metrics: Metrics) {}

  get(clientId: string): Session | undefined {
    return this.sessions.get(clientId);
  }

  create(clientId: string): Session {
    const s = new Session(clientId, this.limits, this.metrics);
    this.sessions.set(clientId, s);
    return s;
  }

  delete(clientId: string): void {
    this.sessions.delete(clientId);
  }

  values(): IterableIterator<Session> {
    return this.sessions.values();
  }

  get size(): number {
    return this.sessions.size;
  }
}
