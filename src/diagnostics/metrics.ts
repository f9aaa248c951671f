// Broker counters: plain numbers bumped on the hot path, read by $SYS and (later) `convoy status`.

/** Why a message was not delivered to a subscriber. Stable names: they appear in $SYS and logs. */
export type DropReason =
  | 'queue_full'          // offline/over-window queue reached max_queued_messages or _bytes
  | 'slow_subscriber'     // QoS 0 while the client's outbound buffer is over max_outbound_bytes
  | 'offline_qos0'        // QoS 0 for a disconnected persistent session (not queued, as Mosquitto)
  | 'expired'             // MQTT 5 message expiry passed while queued
  | 'too_large'           // larger than the client's maximum packet size (MQTT 5)
  | 'session_expired'     // queued when the session expired
  | 'store_unavailable'   // refused because the durable store cannot write (disk full, read-only)
  | 'uplink_full';        // refused because the uplink outbox is full (only alarms left)

export class Metrics {
  readonly startedAt = Date.now();
  messagesReceived = 0;
  messagesSent = 0;
  publishReceived = 0;
  publishSent = 0;
  bytesReceived = 0;
  bytesSent = 0;
  connectionsAccepted = 0;
  connectionsRefused = 0;
  protocolErrors = 0;
  publishDropped = 0;
  /** Logins refused (bad password, unknown user, anonymous not allowed). */
  authFailures = 0;
  /** Logins refused because the address or user name is banned. */
  loginsBanned = 0;
  /** Publishes, subscriptions and wills refused by the ACL. */
  aclDenied = 0;
  /** Connections refused by max_connections_per_address. */
  refusedPerAddress = 0;
  /** Times a client went over its publish rate. */
  rateLimited = 0;
  readonly dropped: Record<DropReason, number> = {
    queue_full: 0, slow_subscriber: 0, offline_qos0: 0, expired: 0, too_large: 0, session_expired: 0, store_unavailable: 0, uplink_full: 0,
  };

  drop(reason: DropReason, n = 1): void {
    this.dropped[reason] += n;
    this.publishDropped += n;
  }
}
