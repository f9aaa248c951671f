import { isUtf8 } from 'node:buffer';

/**
 * Decodes an MQTT UTF-8 string from buf[start, end) or returns null when it is not well-formed
 * UTF-8, encodes a surrogate, or contains U+0000 ([MQTT-1.5.3-1], [MQTT-1.5.3-2]).
 * ASCII is the common case in topics and client ids, so it is checked with a plain loop first.
 */
export function decodeMqttString(buf: Buffer, start: number, end: number): string | null {
  let ascii = true;
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    if (b === 0) return null;
    if (b >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return buf.toString('latin1', start, end);
  // Node's isUtf8 rejects overlong forms and encoded surrogates (ED A0..BF xx) as the spec requires.
  if (!isUtf8(buf.subarray(start, end))) return null;
  for (let i = start; i < end; i++) if (buf[i] === 0) return null;
  return buf.toString('utf8', start, end);
}
