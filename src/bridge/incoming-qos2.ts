// Where the link keeps QoS 2 PUBLISHes from HQ between PUBREC and PUBREL: MQTT.js's incoming
// store (its `incomingStore` option). MQTT.js puts the packet and sends PUBREC when put calls
// back, gets it when PUBREL arrives (the message is emitted then), and deletes it before PUBCOMP.
//
// One store serves every connection of the link: close() (MQTT.js calls it whenever a client
// ends) keeps the packets, since HQ may send PUBREL on the next connection of the same session.
// clear() drops them when HQ reports that the session is gone.
//
// MemoryIncomingQos2Store holds the packets for the process lifetime only; the durable variant
// (store/incoming-qos2-store.ts) writes them to convoy.db before PUBREC.
import mqtt, { type IPublishPacket, type IStore } from 'mqtt';

/** A packet as MQTT.js hands it to a store. */
export type StorePacket = Parameters<IStore['put']>[0];
type Packet = StorePacket;

/** MQTT.js's store callbacks (error-first). */
export type StoreDone = (err?: Error) => void;
export type StorePacketDone = (err?: Error, packet?: Packet) => void;

export interface IncomingQos2Store extends IStore {
  /** Whether held packets survive a restart. */
  readonly durable: boolean;
  /** Packets held (waiting for PUBREL). */
  readonly size: number;
  /**
   * MQTT.js's put: calls back once the packet is held (durably, for a durable store); with an
   * error when it could not be, and then PUBREC must not be sent (MQTT.js ignores the error: the
   * link checks it).
   */
  put(packet: Packet, cb: StoreDone): this;
  /**
   * The message was published locally in this event-loop turn: forget it. A durable store deletes
   * its row in the same grouped commit as the local delivery, so a crash cannot leave the order
   * both delivered and still held (which would deliver it again on HQ's next PUBREL).
   */
  release(messageId: number): void;
  /** HQ has no session for us: every held packet is stale. */
  clear(): void;
}

function missing(messageId: number | undefined): Error {
  return new Error(`incoming QoS 2 store: no PUBLISH held for packet id ${messageId}`);
}

export class MemoryIncomingQos2Store implements IncomingQos2Store {
  readonly durable: boolean = false;
  protected readonly held = new Map<number, IPublishPacket>();

  get size(): number {
    return this.held.size;
  }

  put(packet: Packet, cb: StoreDone): this {
    if (packet.cmd !== 'publish' || packet.messageId === undefined) {
      cb(new Error(`incoming QoS 2 store: only a PUBLISH with a packet id can be held, not ${packet.cmd}`));
      return this;
    }
    this.held.set(packet.messageId, packet);
    cb();
    return this;
  }

  get(packet: Pick<Packet, 'messageId'>, cb: StorePacketDone): this {
    const p = packet.messageId === undefined ? undefined : this.held.get(packet.messageId);
    if (p) cb(undefined, p);
    else cb(missing(packet.messageId));
    return this;
  }

  del(packet: Pick<Packet, 'messageId'>, cb: StorePacketDone): this {
    const id = packet.messageId;
    const p = id === undefined ? undefined : this.held.get(id);
    if (id === undefined || p === undefined) {
      cb(missing(id));
      return this;
    }
    this.release(id);
    cb(undefined, p);
    return this;
  }

  release(messageId: number): void {
    this.held.delete(messageId);
  }

  clear(): void {
    this.held.clear();
  }

  /** MQTT.js streams only its outgoing store; given for the interface, as a snapshot. */
  createStream(): ReturnType<IStore['createStream']> {
    const snapshot = new mqtt.Store({ clean: true });
    for (const p of this.held.values()) snapshot.put(p, () => undefined);
    return snapshot.createStream();
  }

  /** Called by MQTT.js whenever a client ends: the packets stay for the next connection. */
  close(cb: (err?: Error) => void): void {
    cb();
  }
}

/**
 * What one MQTT.js client is given as its incoming store: the link's store, except that a put
 * that failed is reported to `putFailed` and never called back, so MQTT.js sends no PUBREC for
 * an order that is not held.
 */
export class ConnectionIncomingStore implements IStore {
  constructor(
    private readonly store: IncomingQos2Store,
    private readonly putFailed: (packetId: number | undefined, err: Error) => void,
  ) {}

  put(packet: Packet, cb: StoreDone): this {
    this.store.put(packet, (err) => {
      if (err) this.putFailed(packet.messageId, err);
      else cb();
    });
    return this;
  }

  get(packet: Pick<Packet, 'messageId'>, cb: StorePacketDone): this {
    this.store.get(packet, cb);
    return this;
  }

  del(packet: Pick<Packet, 'messageId'>, cb: StorePacketDone): this {
    this.store.del(packet, cb);
    return this;
  }

  createStream(): ReturnType<IStore['createStream']> {
    return this.store.createStream();
  }

  /** The client ended: the link's store stays for the next connection. */
  close(cb: (err?: Error) => void): void {
    cb();
  }
}
