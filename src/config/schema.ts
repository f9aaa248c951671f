// The one configuration schema: defaults, types, documentation and validation in one place.
//
// To add a section (uplink, security, drivers…): define `fooSchema = z.strictObject({...})` with a
// `.describe()` on every key, then add `foo: section(fooSchema, '…')` to `configSchema`. Defaults,
// unknown-key detection with suggestions, file:line errors and `convoy config defaults` follow
// automatically. Use `z.strictObject` everywhere so misspelt keys are errors, not silently ignored.
import * as z from 'zod';

// --- value helpers -----------------------------------------------------------------------------

/** How a received value is shown in an error message. */
export function showValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Date) return 'a date';
  return 'a table';
}

const NUMERIC = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;

/** Env interpolation only produces strings, so `port = "${PORT:-1883}"` must coerce. */
function coerceNumber(v: unknown): unknown {
  if (typeof v === 'string' && NUMERIC.test(v.trim())) return Number(v.trim());
  return v;
}

function coerceBoolean(v: unknown): unknown {
  if (typeof v !== 'string') return v;
  const s = v.trim().toLowerCase();
  if (s === 'true') return true;
  if (s === 'false') return false;
  return v;
}

interface IntOptions {
  default: number;
  min: number;
  max: number;
  /** Shown after ranges in messages, e.g. "bytes". */
  unit?: string;
  description: string;
}

/** A whole number in [min, max]; numeric strings are accepted. */
export function int(o: IntOptions) {
  const unit = o.unit ? ` ${o.unit}` : '';
  const range = `use a whole number from ${o.min} to ${o.max}${unit}`;
  const inner = z
    .number({ error: (iss) => `expected a number, got ${showValue(iss.input)}: ${range}` })
    .int({ error: (iss) => `${showValue(iss.input)} is not a whole number: ${range}` })
    .min(o.min, { error: (iss) => `${showValue(iss.input)} is too small: ${range}` })
    .max(o.max, { error: (iss) => `${showValue(iss.input)} is too large: ${range}` });
  return z.preprocess(coerceNumber, inner).default(o.default).describe(o.description);
}

export function bool(o: { default: boolean; description: string }) {
  const inner = z.boolean({
    error: (iss) => `expected true or false, got ${showValue(iss.input)}`,
  });
  return z.preprocess(coerceBoolean, inner).default(o.default).describe(o.description);
}

export function str(o: { default: string; description: string; nonEmpty?: boolean }) {
  let inner = z.string({
    error: (iss) => `expected a string, got ${showValue(iss.input)}: put the value in double quotes`,
  });
  if (o.nonEmpty) inner = inner.min(1, { error: 'must not be empty: give a value or remove the key' });
  return inner.default(o.default).describe(o.description);
}

/** One of a fixed set of strings. The loader adds a "did you mean" for near misses. */
export function oneOf<const T extends readonly [string, ...string[]]>(
  values: T,
  o: { default: T[number]; description: string },
) {
  const list = values.join(', ');
  return z
    .enum(values, { error: (iss) => `${showValue(iss.input)} is not allowed: use one of ${list}` })
    .default(o.default)
    .describe(o.description);
}

/** A table that may be left out entirely: missing keys take their defaults. */
function section<S extends z.ZodObject>(schema: S, description: string) {
  // prefault (not default) so the empty table is parsed and every inner default is filled in.
  // The cast holds because every key in a section has a default.
  return schema.prefault({} as z.input<S>).describe(description);
}

// --- sections ----------------------------------------------------------------------------------

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export const logSchema = z.strictObject({
  level: oneOf(LOG_LEVELS, { default: 'info', description: 'Minimum level written to stdout (journald).' }),
});

// Extend with 'tls', 'ws', 'wss' when those listeners exist; per-type keys can then move into a
// discriminated union on `type`.
export const LISTENER_TYPES = ['tcp', 'tls', 'ws', 'wss'] as const;

export const listenerSchema = z.strictObject({
  type: oneOf(LISTENER_TYPES, { default: 'tcp', description: 'Transport of this listener.' }),
  host: str({
    default: '127.0.0.1',
    nonEmpty: true,
    description: 'Address to bind: 127.0.0.1 for this machine only, 0.0.0.0 or :: for the truck LAN.',
  }),
  port: int({ default: 1883, min: 0, max: 65535, description: 'TCP port; 0 picks a free port.' }),
  allow_anonymous: bool({
    default: false,
    description: 'Accept clients without a user name and password. Safe only on a loopback listener; the embedded default allows it on 127.0.0.1.',
  }),
  path: str({ default: '/mqtt', nonEmpty: true, description: 'URL path of a ws/wss listener.' }),
  cert: str({ default: '', description: 'tls/wss: server certificate chain file (PEM). Reloaded on SIGHUP.' }),
  key: str({ default: '', description: 'tls/wss: private key file (PEM) of the certificate. Reloaded on SIGHUP.' }),
  ca: str({ default: '', description: 'tls/wss: CA file (PEM) that signs client certificates; needed for require_client_cert.' }),
  crl: str({ default: '', description: 'tls/wss: certificate revocation list file (PEM); revoked client certificates are refused.' }),
  require_client_cert: bool({ default: false, description: 'tls/wss: mutual TLS, clients must present a certificate signed by ca.' }),
  use_identity_as_username: bool({
    default: false,
    description: "tls/wss with client certificates: the certificate's common name becomes the user name (for ACLs); no password needed.",
  }),
});

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const INT32 = 2 ** 31 - 1;

export const limitsSchema = z
  .strictObject({
    max_packet_size: int({
      default: 1048576,
      min: 2,
      max: 268435455,
      unit: 'bytes',
      description: 'Largest MQTT packet accepted from a client, in bytes; larger ones close the connection.',
    }),
    max_connections: int({
      default: 1024,
      min: 1,
      max: 1000000,
      description: 'Simultaneous client connections; further connections are refused.',
    }),
    max_inflight: int({
      default: 32,
      min: 1,
      max: 65535,
      description: 'Unacknowledged QoS 1/2 messages towards one client.',
    }),
    max_queued_messages: int({
      default: 1000,
      min: 0,
      max: INT32,
      description: 'Messages queued per session while offline or over the inflight window; 0 = unlimited.',
    }),
    max_queued_bytes: int({
      default: 16777216,
      min: 0,
      max: MAX_SAFE,
      unit: 'bytes',
      description: 'Bytes queued per session while offline or over the inflight window; 0 = unlimited.',
    }),
    max_outbound_bytes: int({
      default: 4194304,
      min: 1024,
      max: MAX_SAFE,
      unit: 'bytes',
      description: 'Bytes buffered towards one connected client before QoS 0 messages to it are dropped.',
    }),
    max_topic_length: int({
      default: 65535,
      min: 1,
      max: 65535,
      unit: 'bytes',
      description: 'Longest topic name or filter, in bytes of UTF-8.',
    }),
    max_topic_levels: int({
      default: 128,
      min: 1,
      max: 65535,
      description: 'Most "/"-separated levels in a topic name or filter.',
    }),
    keepalive_max: int({
      default: 65535,
      min: 0,
      max: 65535,
      unit: 'seconds',
      description: "The server caps a client's keepalive at this many seconds.",
    }),
    keepalive_min: int({
      default: 0,
      min: 0,
      max: 65535,
      unit: 'seconds',
      description: 'Smallest keepalive accepted from a client, in seconds; 0 = no minimum.',
    }),
    connect_timeout_ms: int({
      default: 10000,
      min: 1,
      max: 600000,
      unit: 'ms',
      description: 'Deadline in milliseconds for the CONNECT packet after a TCP connection is accepted.',
    }),
    allow_zero_length_client_id: bool({
      default: true,
      description: 'Accept an empty client id (the broker then assigns one).',
    }),
  })
  .superRefine((l, ctx) => {
    if (l.keepalive_min > l.keepalive_max) {
      ctx.addIssue({
        code: 'custom',
        path: ['keepalive_min'],
        message: `${l.keepalive_min} is larger than keepalive_max (${l.keepalive_max}): lower keepalive_min or raise keepalive_max`,
      });
    }
  });

export const sysSchema = z.strictObject({
  interval_s: int({
    default: 10,
    min: 0,
    max: 86400,
    unit: 'seconds',
    description: 'Seconds between $SYS topic updates; 0 disables them.',
  }),
});

export const storeSchema = z.strictObject({
  enabled: bool({
    default: true,
    description:
      'Keep sessions, queued messages and retained messages in data_dir/convoy.db (SQLite, WAL, synchronous FULL). ' +
      'QoS 1/2 messages that must outlive their publisher are acknowledged only after they are committed.',
  }),
  commit_window_ms: int({
    default: 0,
    min: 0,
    max: 50,
    unit: 'ms',
    description:
      'Extra time a commit waits to group more changes; 0 groups what arrives in one event-loop turn. ' +
      'A few ms trades latency for fewer writes on slow SD cards.',
  }),
  integrity_check_ms: int({
    default: 2000,
    min: 0,
    max: 600000,
    unit: 'ms',
    description: 'Time budget of the integrity check at start; a corrupt database is moved aside and a fresh one created.',
  }),
});

export const securitySchema = z.strictObject({
  password_file: str({ default: '', description: 'Password file (convoy passwd FILE USER); empty = no password logins.' }),
  acl_file: str({ default: '', description: 'ACL file in Mosquitto syntax; empty = every authenticated client may use every topic. Deny by default once set.' }),
  ban_after_failures: int({ default: 15, min: 0, max: 100000, description: 'Failed logins (per address or per user name) within ban_window_s that trigger a ban; 0 = never.' }),
  ban_window_s: int({ default: 60, min: 1, max: 86400, unit: 'seconds', description: 'Window for counting failed logins.' }),
  ban_duration_s: int({ default: 300, min: 1, max: 604800, unit: 'seconds', description: 'How long a banned address or user name is refused.' }),
  max_connections_per_address: int({ default: 0, min: 0, max: 1000000, description: 'Connections from one IP address; 0 = no limit.' }),
  publish_rate_msgs: int({ default: 0, min: 0, max: 10000000, unit: 'messages/s', description: 'Per-client PUBLISH rate; MQTT 5 clients above it get 0x96, 3.1.1 clients are throttled. 0 = no limit.' }),
  publish_rate_bytes: int({ default: 0, min: 0, max: Number.MAX_SAFE_INTEGER, unit: 'bytes/s', description: 'Per-client PUBLISH bytes per second; 0 = no limit.' }),
  connect_max_bytes: int({ default: 65536, min: 64, max: 268435455, unit: 'bytes', description: 'Largest packet accepted before CONNECT completes.' }),
  hash_concurrency: int({ default: 2, min: 1, max: 64, description: 'Password hashes computed at once (off the event loop); more logins wait.' }),
});

export const OUTBOX_CLASS_NAMES = ['alarm', 'event', 'telemetry', 'bulk'] as const;

export const uplinkRouteSchema = z.strictObject({
  local: str({ default: '', nonEmpty: true, description: 'Local topic filter whose messages go to HQ (e.g. "truck/telemetry/#").' }),
  remote: str({
    default: '',
    nonEmpty: true,
    description:
      'Topic at HQ: the local filter\'s literal prefix is replaced by this one, the levels matched by wildcards follow; ' +
      '{gateway} is the gateway id (e.g. "fleet/{gateway}/telemetry/#").',
  }),
  qos: int({ default: 1, min: 0, max: 2, description: 'QoS towards HQ.' }),
  class: oneOf(OUTBOX_CLASS_NAMES, { default: 'telemetry', description: 'Priority class: alarms drain first and are never evicted.' }),
  ttl_s: int({ default: 0, min: 0, max: 31536000, unit: 'seconds', description: 'Drop the message if not sent within this time; 0 = keep until sent or evicted.' }),
  store_qos0: bool({ default: true, description: 'Store QoS 0 local messages in the outbox too (otherwise they go only while the link is up).' }),
  sign: bool({ default: false, description: 'Sign these messages with the gateway key ([uplink.signing] gateway_key) so HQ can verify which truck sent them (MQTT 5: sig/kid/exp user properties; 3.1.1: the signed envelope).' }),
});

export const downlinkRouteSchema = z.strictObject({
  remote: str({ default: '', nonEmpty: true, description: 'Topic filter subscribed at HQ ({gateway} allowed), e.g. "fleet/{gateway}/orders/#".' }),
  local: str({ default: '', nonEmpty: true, description: 'Local topic: HQ\'s literal prefix is replaced by this one (e.g. "truck/orders/#").' }),
  qos: int({ default: 1, min: 0, max: 2, description: 'QoS of the subscription at HQ.' }),
  verify: bool({
    default: false,
    description: 'Deliver only orders signed by a trusted HQ key ([uplink.signing]); unsigned, forged, altered, replayed, expired or wrong-truck messages are dropped and raise convoy/alarms/orders.',
  }).optional(), // optional in the type only (the parsed value is always set): route literals in code may leave it out
});

export const uplinkSigningSchema = z.strictObject({
  trusted_keys_dir: str({ default: './keys/trusted', nonEmpty: true, description: 'Directory of trusted HQ Ed25519 public keys (NAME.pem), managed by "convoy keys add/remove".' }),
  gateway_key: str({ default: './keys/gateway.key', nonEmpty: true, description: 'The gateway\'s own Ed25519 private key ("convoy keys init"; mode 0600). Signs uplink routes with sign = true.' }),
  max_clock_skew_s: int({ default: 60, min: 0, max: 86400, unit: 'seconds', description: 'An order is still accepted this long after its expiry time (truck clock drift).' }),
  alarm_interval_s: int({ default: 60, min: 1, max: 86400, unit: 'seconds', description: 'At most two convoy/alarms/orders messages per interval; further refusals are summed.' }),
});

export const uplinkTlsSchema = z.strictObject({
  enabled: bool({ default: false, description: 'Connect to HQ over TLS.' }),
  ca: str({ default: '', description: 'CA certificate file (PEM) that signs HQ; empty = the system store.' }),
  cert: str({ default: '', description: 'Client certificate file (PEM) for mutual TLS; empty = none.' }),
  key: str({ default: '', description: 'Private key file (PEM) of the client certificate.' }),
  servername: str({ default: '', description: 'Name checked in HQ\'s certificate; empty = the endpoint host.' }),
});

export const uplinkSchema = z.strictObject({
  enabled: bool({ default: false, description: 'Bridge to the headquarters broker.' }),
  gateway_id: str({ default: 'gw1', nonEmpty: true, description: 'This truck\'s id: {gateway} in topics, and the gw user property on every uplink message.' }),
  endpoints: z
    .array(z.string().regex(/^[^\s:]+:\d{1,5}$/, { error: 'use "host:port", e.g. "hq.example.com:8883"' }))
    .min(1, { error: 'give at least one "host:port"' })
    .default(['127.0.0.1:1883'])
    .describe('HQ broker endpoints "host:port", tried in order (failover).'),
  protocol_version: int({ default: 5, min: 4, max: 5, description: 'MQTT version towards HQ: 4 (3.1.1) or 5.' }),
  client_id: str({ default: 'convoy-{gateway}', nonEmpty: true, description: 'Client id at HQ ({gateway} allowed).' }),
  username: str({ default: '', description: 'User name at HQ; empty = none.' }),
  password: str({ default: '', description: 'Password at HQ (use ${ENV} rather than writing it here).' }),
  keepalive_s: int({ default: 30, min: 2, max: 3600, unit: 'seconds', description: 'Keepalive towards HQ; a link silent for 2× this is declared dead.' }),
  connect_timeout_ms: int({ default: 10000, min: 100, max: 120000, unit: 'ms', description: 'Limit for TCP connect, TLS handshake and CONNACK together.' }),
  session_expiry_s: int({ default: 604800, min: 0, max: 4294967295, unit: 'seconds', description: 'Session expiry at HQ (MQTT 5), so orders sent while offline wait there.' }),
  backoff_initial_ms: int({ default: 1000, min: 10, max: 600000, unit: 'ms', description: 'First reconnect delay (exponential with full jitter).' }),
  backoff_max_ms: int({ default: 60000, min: 10, max: 3600000, unit: 'ms', description: 'Longest reconnect delay.' }),
  backoff_reset_ms: int({ default: 60000, min: 0, max: 3600000, unit: 'ms', description: 'A link up this long resets the backoff.' }),
  sequence_311: oneOf(['topic-suffix', 'none'] as const, {
    default: 'topic-suffix',
    description: 'How a 3.1.1 HQ gets gateway id and sequence number (MQTT 5 uses user properties): "topic-suffix" appends /{gateway}/{seq}.',
  }),
  topic_alias_max: int({ default: 64, min: 0, max: 65535, description: 'MQTT 5: topic aliases used towards HQ per connection, at most HQ\'s Topic Alias Maximum. A topic\'s name then goes once per connection and a 3-byte alias after it (fewer bytes on the cellular link); 0 = none.' }),
  status_topic: str({ default: 'fleet/{gateway}/status', nonEmpty: true, description: 'Retained "online"/"offline" at HQ (offline is the will).' }),
  tls: section(uplinkTlsSchema, 'TLS towards HQ.'),
  routes: z.array(uplinkRouteSchema).default([]).describe('Local → HQ routes: one [[uplink.routes]] table each.'),
  downlink: z.array(downlinkRouteSchema).default([]).describe('HQ → local routes: one [[uplink.downlink]] table each.'),
  signing: section(uplinkSigningSchema, 'Signed orders: HQ keys trusted on downlink routes with verify = true.'),
});

export const outboxSchema = z.strictObject({
  budget_bytes: int({ default: 268435456, min: 65536, max: Number.MAX_SAFE_INTEGER, unit: 'bytes', description: 'Most bytes the outbox may hold; beyond, eviction (expired, then oldest of the lowest class, never alarms).' }),
  min_free_bytes: int({ default: 67108864, min: 0, max: Number.MAX_SAFE_INTEGER, unit: 'bytes', description: 'Free space kept on the data filesystem; the outbox evicts rather than go below.' }),
  drain_rate_msgs: int({ default: 0, min: 0, max: 1000000, unit: 'messages/s', description: 'Cap on backlog messages sent to HQ per second; 0 = none.' }),
  drain_rate_bytes: int({ default: 0, min: 0, max: Number.MAX_SAFE_INTEGER, unit: 'bytes/s', description: 'Cap on backlog bytes sent to HQ per second; 0 = none.' }),
  inflight_window: int({ default: 64, min: 1, max: 65535, description: 'Unacknowledged messages towards HQ (also capped by HQ\'s receive maximum). The drain rate is at most this many per round trip to HQ (64 over a 50 ms cellular round trip: about 1,280 messages/s). A crash may send up to 4 times this many again (those in flight, and those acknowledged whose removal had not committed).' }),
});

const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '[::]']);

function bindsOverlap(a: { host: string; port: number }, b: { host: string; port: number }): boolean {
  if (a.port === 0 || a.port !== b.port) return false;
  return a.host === b.host || WILDCARD_HOSTS.has(a.host) || WILDCARD_HOSTS.has(b.host);
}

export const configSchema = z
  .strictObject({
    data_dir: str({
      default: './data',
      nonEmpty: true,
      description: 'Directory for the SQLite store and other state.',
    }),
    log: section(logSchema, 'Logging.'),
    listeners: z
      .array(listenerSchema)
      .prefault([{ allow_anonymous: true }])
      .describe('Where MQTT clients connect: one [[listeners]] table per listener.'),
    limits: section(limitsSchema, 'Protocol and resource limits for MQTT clients.'),
    sys: section(sysSchema, '$SYS topics with broker statistics.'),
    store: section(storeSchema, 'Durable broker state (sessions, queues, retained messages).'),
    security: section(securitySchema, 'Authentication, authorisation and abuse limits.'),
    uplink: section(uplinkSchema, 'The bridge to the headquarters broker.'),
    outbox: section(outboxSchema, 'The store-and-forward queue towards HQ (in data_dir/convoy.db).'),
  })
  .superRefine((c, ctx) => {
    c.listeners.forEach((l, j) => {
      if ((l.type === 'tls' || l.type === 'wss') && (l.cert === '' || l.key === '')) {
        ctx.addIssue({ code: 'custom', path: ['listeners', j, l.cert === '' ? 'cert' : 'key'], message: `a ${l.type} listener needs cert and key files (PEM): create them with "convoy certs server"` });
      }
      if (l.require_client_cert && l.ca === '') {
        ctx.addIssue({ code: 'custom', path: ['listeners', j, 'ca'], message: 'require_client_cert needs ca: the CA file that signs client certificates' });
      }
    });
    c.listeners.forEach((l, j) => {
      const i = c.listeners.findIndex((k, idx) => idx < j && bindsOverlap(k, l));
      if (i >= 0) {
        ctx.addIssue({
          code: 'custom',
          path: ['listeners', j, 'port'],
          message: `port ${l.port} on ${l.host} is already used by listeners[${i}]: give each listener its own port`,
        });
      }
    });
  });

export type Config = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
export type LogConfig = Config['log'];
export type ListenerConfig = Config['listeners'][number];
export type LimitsConfig = Config['limits'];
export type SysConfig = Config['sys'];
export type StoreConfig = Config['store'];
export type SecurityConfig = Config['security'];
export type UplinkConfig = Config['uplink'];
export type UplinkRouteConfig = UplinkConfig['routes'][number];
export type DownlinkRouteConfig = UplinkConfig['downlink'][number];
export type OutboxConfig = Config['outbox'];

// --- schema introspection (for unknown-key suggestions and the defaults document) -------------

/** One wrapper (default, prefault, optional, nullable, preprocess pipe) removed, or undefined at a leaf. */
function stepWrapper(s: z.ZodType): z.ZodType | undefined {
  if (s instanceof z.ZodDefault || s instanceof z.ZodPrefault || s instanceof z.ZodOptional) return s.unwrap() as z.ZodType;
  if (s instanceof z.ZodNullable) return s.unwrap() as z.ZodType;
  if (s instanceof z.ZodPipe) return s.out as z.ZodType;
  return undefined;
}

/** Strips all wrappers down to the schema that holds the shape or the checks. */
export function unwrapSchema(s: z.ZodType): z.ZodType {
  let cur = s;
  for (let next = stepWrapper(cur); next; next = stepWrapper(cur)) cur = next;
  return cur;
}

/** The first description found on a schema or its wrappers. */
export function descriptionOf(s: z.ZodType): string | undefined {
  for (let cur: z.ZodType | undefined = s; cur; cur = stepWrapper(cur)) {
    if (cur.description) return cur.description;
  }
  return undefined;
}

/** The object shape of a (possibly wrapped) schema, or undefined if it is not a table. */
export function shapeOf(s: z.ZodType): Record<string, z.ZodType> | undefined {
  const u = unwrapSchema(s);
  return u instanceof z.ZodObject ? u.shape : undefined;
}

/** The element schema of a (possibly wrapped) array schema. */
export function elementOf(s: z.ZodType): z.ZodType | undefined {
  const u = unwrapSchema(s);
  return u instanceof z.ZodArray ? (u.element as z.ZodType) : undefined;
}

/** The schema found at a key path (array indices step into elements), if any. */
export function schemaAt(path: readonly PropertyKey[], root: z.ZodType = configSchema): z.ZodType | undefined {
  let cur: z.ZodType | undefined = root;
  for (const seg of path) {
    if (!cur) return undefined;
    if (typeof seg === 'number') {
      cur = elementOf(cur);
    } else if (typeof seg === 'string') {
      cur = shapeOf(cur)?.[seg];
    } else {
      return undefined;
    }
  }
  return cur;
}

/** A short note on allowed values derived from the schema, e.g. "0..65535" or "one of: a, b". */
export function constraintNote(s: z.ZodType): string | undefined {
  const u = unwrapSchema(s);
  if (u instanceof z.ZodNumber && u.minValue !== null && u.maxValue !== null) {
    return u.maxValue >= Number.MAX_SAFE_INTEGER ? `at least ${u.minValue}` : `${u.minValue}..${u.maxValue}`;
  }
  if (u instanceof z.ZodEnum) return `one of: ${(u.options as string[]).join(', ')}`;
  return undefined;
}
