import { reasonName, type ReasonCode } from './reason-codes.js';

/**
 * A violation by the peer that ends its connection. Carries the MQTT 5 reason code sent in
 * DISCONNECT (or CONNACK during connect) and a message naming what was wrong.
 */
export class ProtocolError extends Error {
  constructor(
    readonly reason: ReasonCode,
    message: string,
  ) {
    super(message);
    this.name = 'ProtocolError';
  }

  get reasonName(): string {
    return reasonName(this.reason);
  }
}
