// Schema migrations for the SQLite store (convoy.db). `PRAGMA user_version` holds how many steps
// have run: step i (0-based) takes the database from version i to version i + 1. Steps are only
// ever appended; a released step is never edited (a database in the field has already run it).
//
// Design notes:
// - No FOREIGN KEY constraints: the store applies a batch as one transaction and retries a failed
//   batch, so a constraint that could fail would wedge every later commit behind it. deleteSession
//   cascades explicitly instead.
// - Small, hot tables keyed by (client_id, …) are WITHOUT ROWID: one B-tree per table instead of a
//   rowid table plus its primary-key index, so fewer pages are written per commit.
// - messages keeps its INTEGER PRIMARY KEY (the broker's id). Which messages are still referenced
//   is counted in memory (step 3 dropped the deliveries_by_message index).

export interface Migration {
  /** What the step does, for the log. */
  description: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    description: 'initial schema: sessions, subscriptions, messages, deliveries, incoming QoS 2, delayed wills, retained',
    sql: `
      CREATE TABLE sessions (
        client_id TEXT PRIMARY KEY NOT NULL,
        expiry_interval INTEGER NOT NULL,
        disconnected_at INTEGER NOT NULL
      ) WITHOUT ROWID;

      CREATE TABLE subscriptions (
        client_id TEXT NOT NULL,
        filter TEXT NOT NULL,
        qos INTEGER NOT NULL,
        no_local INTEGER NOT NULL,
        retain_as_published INTEGER NOT NULL,
        retain_handling INTEGER NOT NULL,
        subscription_id INTEGER,
        PRIMARY KEY (client_id, filter)
      ) WITHOUT ROWID;

      CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        properties TEXT,
        sender TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
      );

      CREATE TABLE deliveries (
        client_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        message_id INTEGER NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        sub_ids TEXT,
        share_key TEXT,
        state INTEGER NOT NULL,
        packet_id INTEGER NOT NULL,
        PRIMARY KEY (client_id, seq)
      ) WITHOUT ROWID;
      CREATE INDEX deliveries_by_message ON deliveries (message_id);

      CREATE TABLE incoming_qos2 (
        client_id TEXT NOT NULL,
        packet_id INTEGER NOT NULL,
        PRIMARY KEY (client_id, packet_id)
      ) WITHOUT ROWID;

      CREATE TABLE delayed_wills (
        client_id TEXT PRIMARY KEY NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        properties TEXT,
        due_at INTEGER NOT NULL
      );

      CREATE TABLE retained (
        topic TEXT PRIMARY KEY NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        properties TEXT,
        sender TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
      );
    `,
  },
  {
    description: 'uplink outbox: outbox rows by seq with class, topic and expiry indexes; outbox_meta high-water seq',
    // - seq is the per-gateway sequence number HQ sees, so it is the rowid (appends go to the end).
    // - outbox_by_class serves reads in seq order within a class and eviction of a class's oldest;
    //   outbox_by_topic served "newest per local topic" (dropped in step 5);
    //   outbox_by_expiry only holds rows with a time to live.
    // - outbox_meta.last_seq: the highest seq ever committed, written in transactions that delete
    //   rows (so an emptied outbox does not restart its numbering at 1; see outbox-store.ts).
    sql: `
      CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY,
        cls INTEGER NOT NULL,
        local_topic TEXT NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        properties TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        size INTEGER NOT NULL
      );
      CREATE INDEX outbox_by_class ON outbox (cls, seq);
      CREATE INDEX outbox_by_topic ON outbox (cls, local_topic, seq);
      CREATE INDEX outbox_by_expiry ON outbox (expires_at) WHERE expires_at > 0;

      CREATE TABLE outbox_meta (
        id INTEGER PRIMARY KEY,
        last_seq INTEGER NOT NULL
      );
      INSERT INTO outbox_meta (id, last_seq) VALUES (1, 0);
    `,
  },
  {
    description: 'drop deliveries_by_message: message references are counted in memory',
    // The store mirrors which deliveries are on disk and deletes a message with its last
    // delivery (sqlite-state-store.ts), so the index only cost a B-tree write per delivery put
    // and delete. At open, unreferenced messages are swept with one scan.
    sql: 'DROP INDEX IF EXISTS deliveries_by_message;',
  },
  {
    description: 'deliveries carry their message inline (m_* columns) when it has only that delivery',
    // Saves a messages row insert and delete per stored message in the common case of one
    // persistent consumer (sqlite-state-store.ts). NULL m_payload = the message is in messages.
    sql: `
      ALTER TABLE deliveries ADD COLUMN m_topic TEXT;
      ALTER TABLE deliveries ADD COLUMN m_payload BLOB;
      ALTER TABLE deliveries ADD COLUMN m_qos INTEGER;
      ALTER TABLE deliveries ADD COLUMN m_retain INTEGER;
      ALTER TABLE deliveries ADD COLUMN m_properties TEXT;
      ALTER TABLE deliveries ADD COLUMN m_sender TEXT;
      ALTER TABLE deliveries ADD COLUMN m_received_at INTEGER;
      ALTER TABLE deliveries ADD COLUMN m_expires_at INTEGER;
    `,
  },
  {
    description: 'drop outbox_by_topic: the newest row per topic is found among the newest rows of the class',
    // It cost a B-tree write on every outbox append and delete, for a query run once per reconnect
    // (see SqliteOutboxStore.newestPerTopic).
    sql: 'DROP INDEX IF EXISTS outbox_by_topic;',
  },
  {
    description: 'signed_order_seq: the last accepted sequence per HQ signing key (replay protection)',
    // Before this step the order verifier created the table itself when signed orders were first
    // configured; IF NOT EXISTS keeps such databases as they are.
    sql: `
      CREATE TABLE IF NOT EXISTS signed_order_seq (
        kid TEXT PRIMARY KEY NOT NULL,
        last_seq INTEGER NOT NULL,
        accepted_at INTEGER NOT NULL
      ) WITHOUT ROWID;
    `,
  },
  {
    description: 'uplink_incoming_qos2: QoS 2 orders from HQ acknowledged with PUBREC and not yet delivered locally',
    // One row per packet id of the uplink's HQ session (client_id: the uplink's client id at HQ),
    // written before PUBREC and deleted in the transaction that delivers the order locally
    // (store/incoming-qos2-store.ts). A rowid table, not WITHOUT ROWID: rows hold whole payloads.
    sql: `
      CREATE TABLE uplink_incoming_qos2 (
        client_id TEXT NOT NULL,
        packet_id INTEGER NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        properties TEXT,
        received_at INTEGER NOT NULL,
        PRIMARY KEY (client_id, packet_id)
      );
    `,
  },
  {
    description: 'outbox segments: the records one commit appended to a class packed into one row; deleted records as bitmaps',
    // See store/outbox-segment.ts for the record layout and why. Rows of the old outbox table
    // become segments of up to 256 records of a class in seq order (each record built here with
    // printf/unhex, big-endian like the layout, and joined with group_concat, which copies bytes
    // as they are); outbox_meta.last_seq takes their highest seq, so numbering continues after them.
    // - outbox_segments.id is the seq of the segment's first record.
    // - outbox_gone holds the deleted-record bitmap of a segment that still has live records.
    sql: `
      CREATE TABLE outbox_segments (
        id INTEGER PRIMARY KEY,
        cls INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        count INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        min_expires INTEGER NOT NULL,
        records BLOB NOT NULL
      );
      CREATE TABLE outbox_gone (
        segment INTEGER PRIMARY KEY,
        bits BLOB NOT NULL
      );
      INSERT INTO outbox_segments (id, cls, last_seq, count, bytes, min_expires, records)
        SELECT min(seq), cls, max(seq), count(*), sum(size), coalesce(min(nullif(expires_at, 0)), 0),
          CAST(group_concat(record, '' ORDER BY seq) AS BLOB)
        FROM (
          SELECT seq, cls, size, expires_at,
            (row_number() OVER (PARTITION BY cls ORDER BY seq) - 1) / 256 AS chunk,
            CAST(unhex(printf('%012x%012x%012x%02x%08x%04x%04x%08x%08x', seq, created_at, expires_at, qos, size,
              length(CAST(local_topic AS BLOB)), length(CAST(topic AS BLOB)),
              length(CAST(coalesce(properties, '') AS BLOB)), length(payload)))
            || CAST(local_topic AS BLOB) || CAST(topic AS BLOB) || CAST(coalesce(properties, '') AS BLOB) || payload AS BLOB)
            AS record
          FROM outbox
        )
        GROUP BY cls, chunk;
      UPDATE outbox_meta SET last_seq = max(last_seq, coalesce((SELECT max(seq) FROM outbox), 0)) WHERE id = 1;
      DROP TABLE outbox;
    `,
  },
];

/** The schema version this program writes and understands. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** The tables a database at SCHEMA_VERSION must have (checked at open, with their columns). */
export const EXPECTED_TABLES: Readonly<Record<string, readonly string[]>> = {
  sessions: ['client_id', 'expiry_interval', 'disconnected_at'],
  subscriptions: ['client_id', 'filter', 'qos', 'no_local', 'retain_as_published', 'retain_handling', 'subscription_id'],
  messages: ['id', 'topic', 'payload', 'qos', 'retain', 'properties', 'sender', 'received_at', 'expires_at'],
  deliveries: [
    'client_id', 'seq', 'message_id', 'qos', 'retain', 'sub_ids', 'share_key', 'state', 'packet_id',
    'm_topic', 'm_payload', 'm_qos', 'm_retain', 'm_properties', 'm_sender', 'm_received_at', 'm_expires_at',
  ],
  incoming_qos2: ['client_id', 'packet_id'],
  delayed_wills: ['client_id', 'topic', 'payload', 'qos', 'retain', 'properties', 'due_at'],
  retained: ['topic', 'payload', 'qos', 'retain', 'properties', 'sender', 'received_at', 'expires_at'],
  outbox_segments: ['id', 'cls', 'last_seq', 'count', 'bytes', 'min_expires', 'records'],
  outbox_gone: ['segment', 'bits'],
  outbox_meta: ['id', 'last_seq'],
  signed_order_seq: ['kid', 'last_seq', 'accepted_at'],
  uplink_incoming_qos2: ['client_id', 'packet_id', 'topic', 'payload', 'qos', 'retain', 'properties', 'received_at'],
};
