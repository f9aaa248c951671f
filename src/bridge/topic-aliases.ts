// Outgoing MQTT 5 topic aliases towards HQ, for one connection.
//
// Why: on a cellular link every byte is paid for, and a truck sends the same few dozen topics
// over and over. With an alias, a PUBLISH carries the topic name once per connection and a 3-byte
// Topic Alias property afterwards [MQTT-3.3.2.3.4]. Aliases are given to topics in the order they
// are first sent on a connection (after a reconnect the newest message of every telemetry topic
// goes first, so the live topics get them) until HQ's Topic Alias Maximum is reached; later
// topics go with their name. A mapping never changes within a connection, and every connection
// starts empty: HQ forgets aliases when the network connection ends [MQTT-3.3.2-7].
//
// Keyed by the topic's bytes (the drain has no topic string): a hash table with the bytes copied
// once per alias, so a lookup allocates nothing.

export class OutgoingTopicAliases {
  private max = 0;
  private used = 0;
  /** Open addressing: slot → alias (0 = empty); the topic's bytes in `keys`, its hash in `hashes`. */
  private slots = new Uint16Array(0);
  private hashes = new Uint32Array(0);
  private keys: Buffer[] = [];

  /** Aliases given so far on this connection. */
  get size(): number {
    return this.used;
  }

  /** A new connection: every alias forgotten, at most `max` (HQ's Topic Alias Maximum, capped by configuration). */
  reset(max: number): void {
    this.max = Math.max(0, Math.min(65535, Math.floor(max)));
    this.used = 0;
    let cap = 8;
    while (cap < this.max * 2) cap *= 2;
    this.slots = new Uint16Array(this.max > 0 ? cap : 0);
    this.hashes = new Uint32Array(this.slots.length);
    this.keys = [];
  }

  /**
   * The alias to use for the topic in buf[start, end), packed in a number so that the per-message
   * path allocates nothing: > 0 an alias HQ knows (send an empty topic), < 0 a new alias (send the
   * topic, and -value as its alias), 0 none.
   */
  aliasFor(buf: Buffer, start: number, end: number): number {
    if (this.max === 0 || end <= start) return 0;
    // FNV-1a over the bytes.
    let h = 0x811c9dc5;
    for (let i = start; i < end; i++) h = Math.imul(h ^ buf[i]!, 0x01000193);
    h >>>= 0;
    const mask = this.slots.length - 1;
    for (let s = h & mask; ; s = (s + 1) & mask) {
      const alias = this.slots[s]!;
      if (alias === 0) {
        if (this.used >= this.max) return 0;
        const a = ++this.used;
        this.slots[s] = a;
        this.hashes[s] = h;
        this.keys[a] = Buffer.from(buf.subarray(start, end));
        return -a;
      }
      if (this.hashes[s] === h && sameBytes(this.keys[alias]!, buf, start, end)) return alias;
    }
  }
}

function sameBytes(key: Buffer, buf: Buffer, start: number, end: number): boolean {
  if (key.length !== end - start) return false;
  for (let i = 0; i < key.length; i++) if (key[i] !== buf[start + i]) return false;
  return true;
}
