// One client connection: bytes → frames → packets → handlers, and packets → bytes with batching
// and backpressure. It holds per-connection protocol state only; everything that must outlive the
// connection lives in its Session.
import type { Duplex } from 'node:stream';
import { Framer, FrameError, type FrameSink } from '../mqtt/codec/framer.js';
import { OutBuffer } from '../mqtt/codec/out-buffer.js';
import { decodePacket } from '../mqtt/codec/decode.js';
import { publishSize, writeAck, writeConnack, writeDisconnect, writePublish, writeSubUnsubAck } from '../mqtt/codec/encode.js';
import { ProtocolError } from '../mqtt/errors.js';
import { PacketType, type AuthPacket, type Properties, type ProtocolVersion, type QoS, type Will } from '../mqtt/packets.js';
import { Reason, connackAllowed311, connackCode311, reasonName } from '../mqtt/reason-codes.js';
import type { Message } from './message.js';
import type { Session, SessionLink } from './session.js';
import type { Broker } from './broker.js';
import type { ListenerPolicy } from '../security/types.js';
import { PublishRate } from '../security/rate-limit.js';
import { dispatch } from './dispatch.js';

export type ConnectionState = 'awaiting-connect' | 'connecting' | 'connected' | 'closed';

let nextConnectionId = 1;

export class Connection implements FrameSink, SessionLink {
  readonly id = nextConnectionId++;
  state: ConnectionState = 'awaiting-connect';
  version: ProtocolVersion = 4;
  clientId = '';
  session: Session | null = null;
  will: Will | undefined;
  /** Keepalive in ms (0 = off); the connection is closed after 1.5× without a packet [MQTT-3.1.2-24]. */
  keepaliveMs = 0;
  /** Keepalive in seconds after the broker's bounds (MQTT 5 tells the client: Server Keep Alive). */
  negotiatedKeepalive = 0;
  /** A CONNECT header was seen: errors before CONNACK are answered with a CONNACK code. */
  connectSeen = false;
  readonly acceptedAt = Date.now();
  lastSeen = Date.now();
  /** The client sent DISCONNECT: no will [MQTT-3.1.2-10] (unless MQTT 5 reason 0x04). */
  disconnectReceived = false;
  /** MQTT 5 limits the client announced in CONNECT. */
  clientReceiveMaximum = 65535;
  clientMaximumPacketSize = 0;
  /** The client asked for reason strings and user properties on errors (MQTT 5, default 1). */
  requestProblemInformation = true;
  /** Inbound topic aliases (MQTT 5), created on first use. */
  topicAliases: Map<number, string> | null = null;
  /** Set while CONNECT waits for the client's next AUTH packet (enhanced authentication). */
  authWaiter: { resolve: (p: AuthPacket) => void; reject: (e: Error) => void } | null = null;
  /**
   * Acknowledgements waiting for a durable commit, in the order they must be sent [MQTT-4.6.0-2]:
   * each as packet type * 65536 + packet id, with its reason code and the commit batch it waits for.
   */
  private readonly heldAcks: number[] = [];
  private readonly heldReasons: number[] = [];
  private readonly heldBatches: number[] = [];
  /** Encoded packets held in the same queue (SUBACK, UNSUBACK), marked -1 in heldAcks, with what follows each. */
  private readonly heldPackets: Array<{ packet: Buffer; then: (() => void) | undefined }> = [];
  /** In the broker's list of connections with bytes to write. */
  dirty = false;
  readonly out = new OutBuffer();
  readonly framer: Framer;
  /** Frames are not processed while CONNECT is being handled (authentication is async). */
  private paused = false;
  private readingPaused = false;

  /** Effective user name after authentication (for ACLs); undefined for anonymous clients. */
  username: string | undefined;
  /** Publish rate limit (security.publish_rate_*), created when one is configured. */
  publishRate: PublishRate | null = null;
  /** Date.now() since when this client has been continuously over its rate (0 = not over). */
  private overRateSince = 0;
  private throttleTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly transport: Duplex,
    readonly remoteAddress: string,
    readonly listener: ListenerPolicy,
    readonly broker: Broker,
    /** Common name of the verified client certificate on a mutual-TLS listener. */
    readonly certificateIdentity?: string,
  ) {
    this.framer = new Framer(broker.limits.maxPacketSize);
    const { publishRateMsgs, publishRateBytes } = broker.limits;
    if (publishRateMsgs > 0 || publishRateBytes > 0) this.publishRate = new PublishRate(publishRateMsgs, publishRateBytes, Date.now());
    transport.on('data', (chunk: Buffer) => this.onData(chunk));
    transport.on('drain', () => this.onDrain());
    transport.on('error', (err: Error) => broker.log.debug({ client: this.clientId || undefined, remote: remoteAddress, err: err.message }, 'socket error'));
    transport.on('close', () => this.onClosed());
  }

  /** A method, not a field test: TypeScript keeps no narrowing across the calls that close. */
  isClosed(): boolean {
    return this.state === 'closed';
  }

  // --- reading -------------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    this.lastSeen = Date.now();
    this.broker.metrics.bytesReceived += chunk.length;
    if (this.paused) {
      this.framer.append(chunk);
      // Bounded while CONNECT is pending: stop reading rather than buffer without limit.
      if (this.framer.buffered > this.broker.limits.maxConnectSize) this.pauseReading();
    } else {
      this.broker.enter();
      try {
        this.framer.push(chunk, this);
      } finally {
        this.broker.leave();
      }
    }
    if (this.framer.error !== FrameError.None && !this.isClosed()) this.onFrameError();
  }

  onHeader(firstByte: number, totalLength: number): boolean {
    if (this.state === 'awaiting-connect') {
      // "CONNECT first" is decided by the first byte, before the body is buffered [MQTT-3.1.0-1].
      if (firstByte >> 4 !== PacketType.CONNECT || this.connectSeen) {
        this.fail(new ProtocolError(Reason.ProtocolError, `first packet is type ${firstByte >> 4}, not CONNECT [MQTT-3.1.0-1]`));
        return false;
      }
      if (totalLength > this.broker.limits.maxConnectSize) {
        this.fail(new ProtocolError(Reason.PacketTooLarge, `CONNECT of ${totalLength} bytes exceeds the ${this.broker.limits.maxConnectSize}-byte limit before login`));
        return false;
      }
      this.connectSeen = true;
    }
    return true;
  }

  onFrame(frame: Buffer, bodyOffset: number): boolean {
    if (this.state === 'closed') return false;
    try {
      const packet = decodePacket(frame, bodyOffset, this.version);
      this.broker.metrics.messagesReceived++;
      dispatch(this, packet);
    } catch (err) {
      // A CONNECT that fails to decode still tells its version: answer in that version's format.
      if (this.state === 'awaiting-connect' && frame.length > bodyOffset + 6 && frame[bodyOffset + 6] === 5) this.version = 5;
      if (err instanceof ProtocolError) this.fail(err);
      else this.fail(new ProtocolError(Reason.ImplementationSpecificError, `internal error: ${(err as Error).stack ?? String(err)}`));
      return false;
    }
    return !this.isClosed() && !this.paused;
  }

  private onFrameError(): void {
    if (this.framer.error === FrameError.TooLarge) {
      this.fail(new ProtocolError(Reason.PacketTooLarge, `packet larger than the maximum packet size of ${this.framer.maxPacketSize} bytes`));
    } else {
      this.fail(new ProtocolError(Reason.MalformedPacket, 'Remaining Length longer than 4 bytes'));
    }
  }

  /** Stops handing frames to handlers until resumeFrames (CONNECT in progress). */
  pauseFrames(): void {
    this.paused = true;
  }

  resumeFrames(): void {
    if (!this.paused || this.state === 'closed') return;
    this.paused = false;
    this.resumeReading();
    this.broker.enter();
    try {
      this.framer.run(this);
    } finally {
      this.broker.leave();
    }
    if (this.framer.error !== FrameError.None && !this.isClosed()) this.onFrameError();
  }

  /**
   * Charges a PUBLISH against the client's rate. Over it, an MQTT 5 client is disconnected with
   * 0x96; a 3.1.1 client (no such code) is throttled by not reading from it, and disconnected when
   * it stays over the rate for 10 s.
   */
  chargePublish(bytes: number): void {
    const now = Date.now();
    const waitMs = this.publishRate!.charge(bytes, now);
    if (waitMs === 0) {
      this.overRateSince = 0;
      return;
    }
    this.broker.metrics.rateLimited++;
    if (this.version === 5) throw new ProtocolError(Reason.MessageRateTooHigh, `publish rate above ${this.broker.limits.publishRateMsgs} msg/s or ${this.broker.limits.publishRateBytes} B/s`);
    if (this.overRateSince === 0) this.overRateSince = now;
    else if (now - this.overRateSince > 10_000) throw new ProtocolError(Reason.MessageRateTooHigh, 'publish rate exceeded for more than 10 s');
    if (this.throttleTimer === null) {
      // Stop handling frames (already-read bytes wait in the framer) and stop reading more.
      this.pauseFrames();
      this.pauseReading();
      this.throttleTimer = setTimeout(() => {
        this.throttleTimer = null;
        this.resumeFrames();
      }, Math.min(waitMs, 5000));
      this.throttleTimer.unref();
    }
  }

  /** Lets frames through until the client's next AUTH packet, which resolves the promise. */
  nextAuthPacket(): Promise<AuthPacket> {
    return new Promise((resolve, reject) => {
      this.authWaiter = { resolve, reject };
      this.resumeFrames();
    });
  }

  private pauseReading(): void {
    if (!this.readingPaused) {
      this.readingPaused = true;
      this.transport.pause();
    }
  }

  private resumeReading(): void {
    if (this.readingPaused) {
      this.readingPaused = false;
      this.transport.resume();
    }
  }

  // --- writing -------------------------------------------------------------------------------

  /** Bytes waiting to be written: ours and the socket's. */
  get pendingBytes(): number {
    return this.out.length + this.transport.writableLength;
  }

  get writable(): boolean {
    return this.state === 'connected' && this.pendingBytes < this.broker.limits.maxOutboundBytes;
  }

  get sendWindow(): number {
    return Math.min(this.broker.limits.maxInflight, this.clientReceiveMaximum);
  }

  /** Marks this connection as having bytes to write; the broker flushes at the end of the turn. */
  touch(): void {
    if (!this.dirty) {
      this.dirty = true;
      this.broker.markDirty(this);
    }
  }

  sendPublish(msg: Message, qos: QoS, retain: boolean, dup: boolean, packetId: number, subIds: number[] | undefined): boolean {
    let props: Properties | undefined;
    if (this.version === 5) {
      props = this.outgoingProperties(msg, subIds);
      if (this.clientMaximumPacketSize > 0 &&
          publishSize(5, msg.topicLength, msg.payloadEnd - msg.payloadStart, qos, props) > this.clientMaximumPacketSize) {
        // [MQTT-3.1.2-25]: never send a packet above the client's maximum; the message is dropped.
        this.broker.metrics.drop('too_large');
        return false;
      }
    }
    writePublish(this.out, this.version, msg, qos, retain, dup, packetId, props);
    this.broker.metrics.publishSent++;
    this.broker.metrics.messagesSent++;
    this.touch();
    return true;
  }

  private outgoingProperties(msg: Message, subIds: number[] | undefined): Properties | undefined {
    const p = msg.properties;
    if (!p && !subIds) return undefined;
    const out: Properties = p ? { ...p } : {};
    if (subIds) out.subscriptionIdentifiers = subIds;
    if (p?.messageExpiryInterval !== undefined) {
      // The expiry sent on is reduced by the time the message waited here [MQTT-3.3.2-6].
      const left = Math.ceil((msg.expiresAt - Date.now()) / 1000);
      out.messageExpiryInterval = Math.max(0, left);
    }
    return out;
  }

  /**
   * Sends PUBACK, PUBREC, PUBREL or PUBCOMP, or holds it until the store has committed what this
   * turn wrote: a message is acknowledged only once it is durable, and PUBREL goes out only once
   * the "released" state is, so a restart never re-sends a QoS 2 PUBLISH the client completed.
   * Held packets keep their order.
   */
  ack(type: 4 | 5 | 6 | 7, packetId: number, reason = 0): void {
    if (this.mustHold()) {
      this.hold(type * 65536 + packetId, reason);
      return;
    }
    writeAck(this.out, type, packetId, this.version, reason);
    this.touch();
  }

  /**
   * SUBACK or UNSUBACK: held like ack() while a commit is pending, so a client that got its SUBACK
   * finds the (persistent) subscription after a crash. `then` runs right after the packet is
   * queued for sending (SUBSCRIBE's retained messages follow it).
   */
  subUnsubAck(type: typeof PacketType.SUBACK | typeof PacketType.UNSUBACK, packetId: number, codes: number[], then?: () => void): void {
    if (this.mustHold()) {
      // Encoded apart, to go out when the commit is done.
      const packet = new OutBuffer();
      writeSubUnsubAck(packet, type, this.version, packetId, codes);
      this.hold(-1, 0);
      this.heldPackets.push({ packet: Buffer.concat(packet.take()), then });
      return;
    }
    writeSubUnsubAck(this.out, type, this.version, packetId, codes);
    this.touch();
    then?.();
  }

  /** Something this turn wrote must be committed first, or an earlier acknowledgement still waits. */
  private mustHold(): boolean {
    const journal = this.broker.journal;
    return journal !== null && (journal.wrote || this.heldAcks.length > 0);
  }

  /** Queues a held entry (type × 65536 + packet id, or -1 for a packet in heldPackets) for this turn's commit. */
  private hold(entry: number, reason: number): void {
    this.heldAcks.push(entry);
    this.heldReasons.push(reason);
    this.heldBatches.push(this.broker.holdAck(this));
  }

  /** The commit of `batch` succeeded: send every ack held for it or earlier. */
  releaseAcks(batch: number): void {
    this.sendHeld(batch, false);
  }

  /**
   * The commit of `batch` failed (disk full): the messages are not durable. MQTT 5 clients get
   * 0x97 quota exceeded; a 3.1.1 client, which has no such code, is disconnected without the
   * acknowledgement and will resend.
   */
  refuseAcks(batch: number): void {
    if (this.version !== 5) {
      this.heldAcks.length = this.heldReasons.length = this.heldBatches.length = this.heldPackets.length = 0;
      this.close(Reason.QuotaExceeded, 'the message store cannot write (disk full)');
      return;
    }
    this.sendHeld(batch, true);
  }

  private sendHeld(batch: number, refuse: boolean): void {
    if (this.isClosed()) return;
    let n = 0;
    while (n < this.heldAcks.length && this.heldBatches[n]! <= batch) {
      const v = this.heldAcks[n]!;
      n++;
      if (v === -1) {
        const held = this.heldPackets.shift()!;
        this.out.appendRef(held.packet);
        held.then?.();
        continue;
      }
      const type = Math.floor(v / 65536) as 4 | 5 | 6 | 7;
      const reason = refuse && (type === PacketType.PUBACK || type === PacketType.PUBREC) ? Reason.QuotaExceeded : this.heldReasons[n - 1]!;
      writeAck(this.out, type, v & 0xffff, this.version, reason);
    }
    if (n === 0) return;
    this.heldAcks.splice(0, n);
    this.heldReasons.splice(0, n);
    this.heldBatches.splice(0, n);
    this.touch();
  }

  sendPubrel(packetId: number): void {
    writeAck(this.out, PacketType.PUBREL, packetId, this.version);
    this.broker.metrics.messagesSent++;
    this.touch();
  }

  /** Writes everything buffered to the socket in one call (or one corked batch). */
  flush(): void {
    this.dirty = false;
    if (this.state === 'closed' && this.transport.destroyed) return;
    const chunks = this.out.take();
    let bytes = 0;
    let ok = true;
    if (chunks.length === 1) {
      bytes = chunks[0]!.length;
      ok = this.transport.write(chunks[0]!);
    } else if (chunks.length > 1) {
      this.transport.cork();
      for (const c of chunks) {
        bytes += c.length;
        ok = this.transport.write(c);
      }
      this.transport.uncork();
    }
    this.broker.metrics.bytesSent += bytes;
    // A client that does not read its acknowledgements is not read from either.
    if (!ok && this.transport.writableLength > this.broker.limits.maxOutboundBytes) this.pauseReading();
  }

  private onDrain(): void {
    if (this.state === 'closed') return;
    this.resumeReading();
    this.broker.enter();
    try {
      this.session?.pump();
    } finally {
      this.broker.leave();
    }
  }

  // --- closing -------------------------------------------------------------------------------

  /**
   * Ends the connection because of the peer: MQTT 5 clients get DISCONNECT with the reason code
   * (after CONNACK only [MQTT-3.2.0-2]); 3.1.1 clients are just disconnected [MQTT-4.8.0-1].
   */
  fail(err: ProtocolError): void {
    if (this.state === 'closed') return;
    this.broker.metrics.protocolErrors++;
    this.broker.log.warn(
      { client: this.clientId || undefined, remote: this.remoteAddress, reason: reasonName(err.reason) },
      `closing connection: ${err.message}`,
    );
    if (this.state !== 'connected') {
      // Refused during CONNECT: CONNACK with the reason where that version has a code for it
      // ([MQTT-3.2.2-4] 3.1.1, [MQTT-4.13.1-1] 5), then close.
      if (this.connectSeen && (this.version === 5 || connackAllowed311(err.reason))) {
        const props = this.version === 5 && this.requestProblemInformation ? { reasonString: err.message.slice(0, 200) } : undefined;
        writeConnack(this.out, this.version, false, this.version === 5 ? err.reason : connackCode311(err.reason), props);
      }
      this.shutdown();
      return;
    }
    this.close(err.reason, err.message);
  }

  /** Sends DISCONNECT (MQTT 5, when connected) and closes. */
  close(reason: number = Reason.Success, reasonString?: string): void {
    if (this.state === 'closed') return;
    if (this.version === 5 && this.state === 'connected') {
      const props = reasonString && this.requestProblemInformation ? { reasonString: reasonString.slice(0, 200) } : undefined;
      writeDisconnect(this.out, reason, props);
    }
    this.shutdown();
  }

  /** Closes after writing what is buffered (CONNACK with an error, DISCONNECT). */
  shutdown(): void {
    if (this.state === 'closed') return;
    const wasConnected = this.state === 'connected';
    this.state = 'closed';
    this.framer.reset();
    this.authWaiter?.reject(new Error('connection closed during authentication'));
    this.authWaiter = null;
    if (this.throttleTimer) clearTimeout(this.throttleTimer);
    this.flush();
    this.transport.end();
    // A peer that never closes its side must not keep the socket: force it after a grace period.
    setTimeout(() => this.transport.destroy(), 2000).unref();
    this.broker.connectionClosed(this, wasConnected);
  }

  private onClosed(): void {
    if (this.state !== 'closed') {
      const wasConnected = this.state === 'connected';
      this.state = 'closed';
      this.framer.reset();
      this.authWaiter?.reject(new Error('connection closed during authentication'));
      this.authWaiter = null;
      this.broker.connectionClosed(this, wasConnected);
    }
    this.broker.connectionGone(this);
  }
}
