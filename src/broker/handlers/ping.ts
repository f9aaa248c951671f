import { writePingresp } from '../../mqtt/codec/encode.js';
import type { Connection } from '../connection.js';

/** PINGREQ → PINGRESP [MQTT-3.12.4-1]. Activity itself was recorded when the bytes arrived. */
export function handlePingreq(conn: Connection): void {
  writePingresp(conn.out);
  conn.touch();
}
