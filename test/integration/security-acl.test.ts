// ACLs over real sockets, on in-process gateways with a password file and an ACL file in
// Mosquitto's syntax: PUBLISH and SUBSCRIBE refused (MQTT 5 reason codes, 3.1.1 behaviour), a
// filter allowed only when everything it can match is readable, retained messages, wills, %u/%c
// patterns with wildcard injection, the empty ACL, and revocation by reload (the SIGHUP path) for
// live subscriptions, persistent sessions and wills.
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type mqttPacket from 'mqtt-packet';
import { defaultConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { createLogger } from '../../src/diagnostics/log.js';
import { startGateway, type Gateway } from '../../src/gateway.js';
import { hashPassword } from '../../src/security/passwords.js';
import { listener } from '../helpers/listener-gateway.js';
import type { AnyPacket, RawClient } from '../helpers/raw-client.js';
import { ClientPool, unique } from '../helpers/flows.js';

/** Log lines (parsed pino JSON) with a way to await one. */
class LogCapture {
  readonly lines: Array<Record<string, unknown>> = [];
  private waiters: Array<() => void> = [];
  readonly stream = new Writable({
    write: (chunk: Buffer, _enc, cb) => {
      for (const l of chunk.toString().split('\n')) {
        if (l.trim()) this.lines.push(JSON.parse(l) as Record<string, unknown>);
      }
      for (const w of this.waiters.splice(0)) w();
      cb();
    },
  });

  find(pred: (l: Record<string, unknown>) => boolean, timeoutMs = 5000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no such log line; last: ${JSON.stringify(this.lines.slice(-5))}`)), timeoutMs);
      const check = (): void => {
        const hit = this.lines.find(pred);
        if (hit) {
          clearTimeout(timer);
          resolve(hit);
        } else {
          this.waiters.push(check);
        }
      };
      check();
    });
  }
}

const PASSWORD = 'pw';

interface AclGateway extends Gateway {
  port: number;
  acl: string;
  logs: LogCapture;
  /** Rewrites the ACL file and reloads (what SIGHUP does). */
  setAcl(text: string): Promise<void>;
}

/** A gateway on one non-anonymous tcp listener; every user's password is PASSWORD. */
async function startAclGateway(users: string[], aclText: string): Promise<AclGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'convoy-acl-'));
  const passwd = join(dir, 'passwd');
  const lines = await Promise.all(users.map(async (u) => `${u}:${await hashPassword(PASSWORD, { ln: 4, r: 8, p: 1 })}`));
  writeFileSync(passwd, lines.join('\n') + '\n');
  const acl = join(dir, 'acl');
  writeFileSync(acl, aclText);
  const base = defaultConfig();
  const config: Config = {
    ...base,
    data_dir: join(dir, 'data'),
    log: { level: 'info' },
    listeners: [listener({ type: 'tcp', allow_anonymous: false })],
    security: { ...base.security, password_file: passwd, acl_file: acl, ban_after_failures: 0 },
    sys: { ...base.sys, interval_s: 0 },
    store: { ...base.store, enabled: false },
  };
  const logs = new LogCapture();
  const gw = await startGateway(config, createLogger('info', logs.stream));
  return {
    ...gw,
    port: gw.listeners[0]!.port,
    acl,
    logs,
    setAcl: async (text) => {
      writeFileSync(acl, text);
      await gw.reload();
    },
    stop: async () => {
      await gw.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

type Version = 4 | 5;

/** SUBSCRIBE (QoS 1 each) and the SUBACK's codes. */
async function subscribeCodes(c: RawClient, filters: string[], messageId = 1): Promise<number[]> {
  c.send({ cmd: 'subscribe', messageId, subscriptions: filters.map((topic) => ({ topic, qos: 1 as const })) });
  const ack = await c.nextOf('suback');
  expect(ack.messageId).to.equal(messageId);
  return ack.granted as number[];
}

/** PUBLISH at QoS 1 and its PUBACK (reasonCode undefined or 0 = success). */
async function publish1(c: RawClient, topic: string, payload: string, opts: { retain?: boolean; messageId?: number } = {}): Promise<AnyPacket> {
  const messageId = opts.messageId ?? 1;
  c.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain: opts.retain ?? false, dup: false, messageId });
  const ack = await c.nextOf('puback');
  expect(ack.messageId).to.equal(messageId);
  return ack;
}

/** Topics of the PUBLISH packets that arrive before a PINGRESP (acknowledging QoS 1 ones). */
async function receivedBeforePing(c: RawClient): Promise<string[]> {
  const got = await c.nothingPendingAfterPing();
  const topics: string[] = [];
  for (const p of got) {
    if (p.cmd !== 'publish') continue;
    topics.push(p.topic);
    if ((p.qos as number) > 0) c.send({ cmd: 'puback', messageId: p.messageId as number });
  }
  return topics;
}

async function nextPublish(c: RawClient): Promise<AnyPacket> {
  const p = await c.nextOf('publish');
  if ((p.qos as number) > 0) c.send({ cmd: 'puback', messageId: p.messageId as number });
  return p;
}

describe('security: ACL', function () {
  this.timeout(30000);
  const pool = new ClientPool();
  afterEach(() => pool.closeAll());

  function login(gw: AclGateway, username: string, version: Version = 5, extra: Partial<mqttPacket.IConnectPacket> = {}): Promise<RawClient> {
    return pool.connect(gw.port, { version, username, password: Buffer.from(PASSWORD), clientId: unique(username.replace(/[^a-z]/g, '') || 'c'), ...extra });
  }

  describe('publish, subscribe, retained, wills', () => {
    let gw: AclGateway;
    before(async () => {
      gw = await startAclGateway(['alice', 'bob', 'admin'], [
        '# rules for clients without a user name (none can log in here; they must not apply to users)',
        'topic write anon/#',
        '',
        '# alice may read only a/b, write anywhere under a/ and w/alice, read r/ except r/secret/',
        'user alice',
        'topic readwrite a/b',
        'topic write a/#',
        'topic read r/#',
        'topic deny r/secret/#',
        'topic write w/alice',
        '',
        'user bob',
        'topic read a/#',
        'topic write w/bob',
        '',
        'user admin',
        'topic readwrite #',
        'topic readwrite $internal/#',
        '',
      ].join('\n'));
    });
    after(() => gw?.stop());

    for (const version of [5, 4] as const) {
      it(`a PUBLISH the ACL refuses is not delivered; PUBACK ${version === 5 ? '0x87' : 'as usual (3.1.1 has no refusal)'} (v${version})`, async () => {
        const admin = await login(gw, 'admin', 5);
        expect(await subscribeCodes(admin, ['x/#', 'a/#'])).to.deep.equal([1, 1]);
        const alice = await login(gw, 'alice', version);
        const ack = await publish1(alice, 'x/y', 'refused');
        if (version === 5) expect(ack.reasonCode).to.equal(0x87);
        else expect(ack.reasonCode ?? 0).to.equal(0);
        alice.send({ cmd: 'publish', topic: 'x/z', payload: Buffer.from('qos0 refused'), qos: 0, retain: false, dup: false });
        alice.send({ cmd: 'publish', topic: 'x/q2', payload: Buffer.from('qos2 refused'), qos: 2, retain: false, dup: false, messageId: 7 });
        const rec = await alice.nextOf('pubrec');
        if (version === 5) expect(rec.reasonCode).to.equal(0x87);
        // Then an allowed one from the same client: it is the first thing the subscriber sees.
        expect((await publish1(alice, 'a/c', 'allowed', { messageId: 2 })).reasonCode ?? 0).to.equal(0);
        const p = await nextPublish(admin);
        expect(p.topic).to.equal('a/c');
        expect(await receivedBeforePing(admin)).to.deep.equal([]);
        // The connection stays up.
        expect(await alice.nothingPendingAfterPing()).to.deep.equal([]);
      });
    }

    it('a refused SUBSCRIBE gets 0x87 (MQTT 5) / 0x80 (3.1.1), per filter', async () => {
      const v5 = await login(gw, 'alice', 5);
      expect(await subscribeCodes(v5, ['a/b', 'x/#', 'r/public/1'])).to.deep.equal([1, 0x87, 1]);
      const v4 = await login(gw, 'alice', 4);
      expect(await subscribeCodes(v4, ['a/b', 'x/#'])).to.deep.equal([1, 0x80]);
    });

    it('a filter is allowed only if everything it can match is readable', async () => {
      const alice = await login(gw, 'alice', 5);
      // Only a/b is readable under a/.
      expect(await subscribeCodes(alice, ['a/#', 'a/+', '+/b', '#', 'a/b/#', 'a/b'])).to.deep.equal([0x87, 0x87, 0x87, 0x87, 0x87, 1]);
      // r/# is readable except r/secret/#: any filter that can reach r/secret is refused.
      expect(await subscribeCodes(alice, ['r/#', 'r/+/x', 'r/secret/x', 'r/public/#', 'r/public/+/y'], 2)).to.deep.equal([0x87, 0x87, 0x87, 1, 1]);
      // Shared subscriptions are judged by their filter.
      expect(await subscribeCodes(alice, ['$share/g/a/b', '$share/g/a/#'], 3)).to.deep.equal([1, 0x87]);
      // bob reads a/#, so narrower filters are fine.
      const bob = await login(gw, 'bob', 4);
      expect(await subscribeCodes(bob, ['a/#', 'a/+/c', 'a/b', 'a'])).to.deep.equal([1, 1, 1, 1]);
    });

    it('retained messages reach only clients that may read them', async () => {
      const admin = await login(gw, 'admin', 5);
      const prefix = unique('ret');
      for (const [i, t] of [`a/b`, `a/${prefix}`, `r/secret/${prefix}`, `r/public/${prefix}`, `$internal/${prefix}`].entries()) {
        expect((await publish1(admin, t, `retained ${t}`, { retain: true, messageId: i + 1 })).reasonCode ?? 0).to.equal(0);
      }
      const alice = await login(gw, 'alice', 5);
      // Refused subscriptions deliver no retained message.
      expect(await subscribeCodes(alice, ['a/+', 'r/secret/#', 'r/#', '$internal/#'])).to.deep.equal([0x87, 0x87, 0x87, 0x87]);
      expect(await receivedBeforePing(alice)).to.deep.equal([]);
      // Allowed ones deliver only what they cover.
      expect(await subscribeCodes(alice, ['a/b', 'r/public/#'], 2)).to.deep.equal([1, 1]);
      const got = (await receivedBeforePing(alice)).sort();
      expect(got).to.include.members(['a/b', `r/public/${prefix}`]);
      expect(got.filter((t) => t.includes('secret') || t.startsWith('$') || t === `a/${prefix}`)).to.deep.equal([]);
      // bob reads a/#: he gets every retained message under a/.
      const bob = await login(gw, 'bob', 4);
      expect(await subscribeCodes(bob, ['a/#'])).to.deep.equal([1]);
      expect(await receivedBeforePing(bob)).to.include.members(['a/b', `a/${prefix}`]);
    });

    it('a will on a topic the client may not write is not published; an allowed one is', async () => {
      const admin = await login(gw, 'admin', 5);
      expect(await subscribeCodes(admin, ['w/#'])).to.deep.equal([1]);
      // alice may write w/alice only.
      const bad = await login(gw, 'alice', 4, { will: { topic: 'w/bob', payload: Buffer.from('forged'), qos: 1, retain: false } });
      await bad.close();
      await gw.logs.find((l) => l.msg === 'will not published: the ACL does not allow it' && l.topic === 'w/bob');
      const good = await login(gw, 'alice', 5, { will: { topic: 'w/alice', payload: Buffer.from('gone'), qos: 1, retain: false } });
      await good.close();
      const p = await nextPublish(admin);
      expect(p.topic).to.equal('w/alice');
      expect(String(p.payload)).to.equal('gone');
      expect(await receivedBeforePing(admin)).to.deep.equal([]);
    });

    it('a delayed will (MQTT 5 will delay) is judged as its own user when it is finally sent', async () => {
      const admin = await login(gw, 'admin', 5);
      expect(await subscribeCodes(admin, ['w/#', 'anon/#'])).to.deep.equal([1, 1]);
      const props = { sessionExpiryInterval: 60 };
      const allowedId = unique('alice');
      const allowed = await login(gw, 'alice', 5, { clientId: allowedId, properties: props, will: { topic: 'w/alice', payload: Buffer.from('late'), qos: 1, retain: false, properties: { willDelayInterval: 1 } } });
      await allowed.close();
      // alice may write w/alice: after the delay the will is published.
      const outcome = await Promise.race([
        gw.logs.find((l) => l.msg === 'will not published: the ACL does not allow it' && l.topic === 'w/alice' && l.client === allowedId, 5000)
          .then((l) => `refused (judged as user ${JSON.stringify(l.user)})`),
        admin.nextOf('publish', 5000).then((m) => `published on ${String(m.topic)}`),
      ]);
      expect(outcome).to.equal('published on w/alice');
    });

    it('a delayed will does not get the permissions of anonymous clients', async () => {
      const admin = await login(gw, 'admin', 5);
      expect(await subscribeCodes(admin, ['w/#', 'anon/#'])).to.deep.equal([1, 1]);
      const props = { sessionExpiryInterval: 60 };
      // alice may not write anon/x (only clients without a user name may).
      const c = await login(gw, 'alice', 5, { properties: props, will: { topic: 'anon/x', payload: Buffer.from('escalated'), qos: 1, retain: false, properties: { willDelayInterval: 1 } } });
      await c.close();
      // Whichever comes first once the delay is over: the refusal in the log, or the will at admin.
      const outcome = await Promise.race([
        gw.logs.find((l) => l.msg === 'will not published: the ACL does not allow it' && l.topic === 'anon/x', 5000).then(() => 'refused'),
        admin.nextOf('publish', 5000).then((m) => `published on ${String(m.topic)}`),
      ]);
      expect(outcome).to.equal('refused');
    });

    it('a retained will the client may not write does not become retained', async () => {
      const alice = await login(gw, 'alice', 5, { will: { topic: 'w/retained-forgery', payload: Buffer.from('x'), qos: 0, retain: true } });
      await alice.close();
      await gw.logs.find((l) => l.msg === 'will not published: the ACL does not allow it' && l.topic === 'w/retained-forgery');
      const admin = await login(gw, 'admin', 5);
      expect(await subscribeCodes(admin, ['w/retained-forgery'])).to.deep.equal([1]);
      expect(await receivedBeforePing(admin)).to.deep.equal([]);
    });
  });

  describe('patterns: %u and %c never widen access', () => {
    let gw: AclGateway;
    before(async () => {
      gw = await startAclGateway(['alice', 'bob', 'a/#', '+', 'a/+/b', 'admin'], [
        'pattern readwrite dev/%c/#',
        'pattern read users/%u/#',
        'pattern readwrite both/%u/%c',
        'pattern deny open/%c/private',
        'user alice',
        'topic read open/#',
        'user bob',
        'topic read open/#',
        'user admin',
        'topic readwrite #',
        '',
      ].join('\n'));
    });
    after(() => gw?.stop());

    it('a plain client id and user name get exactly their own subtree', async () => {
      const c = await login(gw, 'alice', 5, { clientId: 'truck7' });
      expect(await subscribeCodes(c, ['dev/truck7/#', 'users/alice/#', 'both/alice/truck7', 'dev/other/#', 'users/bob/#', 'dev/+/x']))
        .to.deep.equal([1, 1, 1, 0x87, 0x87, 0x87]);
      expect((await publish1(c, 'dev/truck7/state', 'x')).reasonCode ?? 0).to.equal(0);
      expect((await publish1(c, 'dev/other/state', 'x', { messageId: 2 })).reasonCode).to.equal(0x87);
    });

    for (const clientId of ['+', '#', 'x/+', 'victim/#', 'a/b']) {
      it(`client id ${JSON.stringify(clientId)} gets nothing from a %c pattern`, async () => {
        const admin = await login(gw, 'admin', 5);
        expect(await subscribeCodes(admin, ['dev/#'])).to.deep.equal([1]);
        const c = await login(gw, 'bob', 5, { clientId });
        expect(await subscribeCodes(c, ['dev/#', 'dev/+/#', 'dev/victim/#', 'dev/victim/x', `dev/${clientId}`])).to.deep.equal([0x87, 0x87, 0x87, 0x87, 0x87]);
        // Publishing into another device's subtree (or a literal-looking one) is refused.
        expect((await publish1(c, 'dev/victim/cmd', 'x')).reasonCode).to.equal(0x87);
        if (!clientId.includes('+') && !clientId.includes('#')) {
          expect((await publish1(c, `dev/${clientId}/cmd`, 'x', { messageId: 2 })).reasonCode).to.equal(0x87);
        }
        expect(await receivedBeforePing(admin)).to.deep.equal([]);
      });
    }

    for (const username of ['a/#', '+', 'a/+/b']) {
      it(`user name ${JSON.stringify(username)} gets nothing from a %u pattern`, async () => {
        const c = await login(gw, username, 5, { clientId: unique('inj') });
        expect(await subscribeCodes(c, ['users/#', 'users/a/#', 'users/a/x', 'users/+/x', 'users/a/+/b', `users/${username.replace(/[+#]/g, 'x')}`]))
          .to.deep.equal([0x87, 0x87, 0x87, 0x87, 0x87, 0x87]);
        expect((await publish1(c, 'both/a/x', 'x')).reasonCode).to.equal(0x87);
      });
    }

    it('a deny pattern with an unsafe client id denies more, never less', async () => {
      // Normal id: open/# is readable except open/ID/private, so open/# is refused but open/ID/public is fine.
      const normal = await login(gw, 'alice', 5, { clientId: 'cam1' });
      expect(await subscribeCodes(normal, ['open/#', 'open/cam1/public', 'open/cam1/private', 'open/other/private'])).to.deep.equal([0x87, 1, 0x87, 1]);
      // Id "+": the deny rule must not shrink to nothing; it covers open/# from the unsafe level on.
      const plus = await login(gw, 'bob', 5, { clientId: '+' });
      expect(await subscribeCodes(plus, ['open/other/private', 'open/x/public', 'open/#'])).to.deep.equal([0x87, 0x87, 0x87]);
    });
  });

  describe('an empty ACL file', () => {
    for (const [what, text] of [['empty', ''], ['comments only', '# nothing granted yet\n\n   # still nothing\n']] as const) {
      it(`(${what}) denies everything`, async () => {
        const gw = await startAclGateway(['alice'], text);
        try {
          const c5 = await login(gw, 'alice', 5);
          expect(await subscribeCodes(c5, ['#', 'a/b', 'alice/#'])).to.deep.equal([0x87, 0x87, 0x87]);
          expect((await publish1(c5, 'a/b', 'x')).reasonCode).to.equal(0x87);
          const c4 = await login(gw, 'alice', 4);
          expect(await subscribeCodes(c4, ['#'])).to.deep.equal([0x80]);
        } finally {
          await gw.stop();
        }
      });
    }
  });

  describe('revocation by reload (SIGHUP)', () => {
    const GRANTING = [
      'user writer', 'topic write rev/#', 'topic write w/#',
      'user reader', 'topic read rev/#', 'topic write w/reader',
      'user other', 'topic read other/#',
      'user admin', 'topic readwrite #', '',
    ].join('\n');
    const REVOKED = [
      'user writer', 'topic write rev/#', 'topic write w/#',
      'user reader', 'topic read rev/allowed',
      'user other', 'topic read other/#',
      'user admin', 'topic readwrite #', '',
    ].join('\n');
    let gw: AclGateway;
    beforeEach(async () => {
      gw = await startAclGateway(['writer', 'reader', 'other', 'admin'], GRANTING);
    });
    afterEach(() => gw?.stop());

    for (const version of [5, 4] as const) {
      it(`an existing subscription no longer allowed stops receiving (v${version})`, async () => {
        const reader = await login(gw, 'reader', version);
        expect(await subscribeCodes(reader, ['rev/#'])).to.deep.equal([1]);
        const writer = await login(gw, 'writer', 5);
        await publish1(writer, 'rev/1', 'before');
        expect((await nextPublish(reader)).topic).to.equal('rev/1');
        await gw.setAcl(REVOKED);
        await publish1(writer, 'rev/2', 'after', { messageId: 2 });
        await publish1(writer, 'rev/allowed', 'after', { messageId: 3 });
        // rev/# was removed as a whole; rev/allowed alone is readable but was never subscribed.
        expect(await receivedBeforePing(reader)).to.deep.equal([]);
        // Subscribing again: only what is still allowed.
        expect(await subscribeCodes(reader, ['rev/#', 'rev/allowed'], 2)).to.deep.equal([version === 5 ? 0x87 : 0x80, 1]);
        await publish1(writer, 'rev/allowed', 'again', { messageId: 4 });
        await publish1(writer, 'rev/3', 'x', { messageId: 5 });
        expect((await nextPublish(reader)).topic).to.equal('rev/allowed');
        expect(await receivedBeforePing(reader)).to.deep.equal([]);
      });
    }

    it('a persistent session resuming after a reload has lost the revoked subscription', async () => {
      const clientId = unique('persist');
      const first = await login(gw, 'reader', 4, { clientId, clean: false });
      expect(await subscribeCodes(first, ['rev/#'])).to.deep.equal([1]);
      await first.close();
      await gw.setAcl(REVOKED);
      const writer = await login(gw, 'writer', 5);
      await publish1(writer, 'rev/while-away', 'x');
      const again = await pool.connect(gw.port, { version: 4, username: 'reader', password: Buffer.from(PASSWORD), clientId, clean: false });
      await publish1(writer, 'rev/after-resume', 'x', { messageId: 2 });
      expect(await receivedBeforePing(again)).to.deep.equal([]);
    });

    for (const revoke of [false, true]) {
      it(revoke
        ? 'messages queued for an offline session before the revocation are not delivered after it'
        : 'control: without a revocation the message queued for the offline session is delivered on resume', async () => {
        const clientId = unique('queued');
        const first = await login(gw, 'reader', 5, { clientId, clean: false, properties: { sessionExpiryInterval: 600 } });
        expect(await subscribeCodes(first, ['rev/#'])).to.deep.equal([1]);
        await first.close();
        // The broker has seen the session go offline: the next message is queued for it.
        await gw.logs.find((l) => l.msg === 'client disconnected' && l.client === clientId);
        const writer = await login(gw, 'writer', 5);
        await publish1(writer, 'rev/queued', 'published while it was still allowed');
        if (revoke) await gw.setAcl(REVOKED);
        const again = await pool.connect(gw.port, { version: 5, username: 'reader', password: Buffer.from(PASSWORD), clientId, clean: false, properties: { sessionExpiryInterval: 600 } });
        expect(await receivedBeforePing(again)).to.deep.equal(revoke ? [] : ['rev/queued']);
      });
    }

    it('a persistent session resumed under a user name that may not read its subscriptions loses them', async () => {
      const clientId = unique('shared-id');
      const first = await login(gw, 'reader', 5, { clientId, clean: false, properties: { sessionExpiryInterval: 600 } });
      expect(await subscribeCodes(first, ['rev/#'])).to.deep.equal([1]);
      await first.close();
      // Same client id, another user: the session is resumed (sessionPresent) but judged as "other".
      const c = await pool.connect(gw.port, { version: 5, username: 'other', password: Buffer.from(PASSWORD), clientId, clean: false, properties: { sessionExpiryInterval: 600 } });
      const writer = await login(gw, 'writer', 5);
      await publish1(writer, 'rev/for-reader-only', 'x');
      expect(await receivedBeforePing(c)).to.deep.equal([]);
    });

    it('a will is judged by the ACL in force when it is sent', async () => {
      const admin = await login(gw, 'admin', 5);
      expect(await subscribeCodes(admin, ['w/#'])).to.deep.equal([1]);
      const reader = await login(gw, 'reader', 4, { will: { topic: 'w/reader', payload: Buffer.from('gone'), qos: 1, retain: false } });
      await gw.setAcl(REVOKED); // reader may no longer write w/reader
      await reader.close();
      await gw.logs.find((l) => l.msg === 'will not published: the ACL does not allow it' && l.topic === 'w/reader');
      expect(await receivedBeforePing(admin)).to.deep.equal([]);
    });

    it('a broken ACL file at reload keeps the previous rules (and subscriptions)', async () => {
      const reader = await login(gw, 'reader', 5);
      expect(await subscribeCodes(reader, ['rev/#'])).to.deep.equal([1]);
      await gw.setAcl('user reader\ntopic sometimes rev/#\nbogus line\n');
      await gw.logs.find((l) => l.msg === 'ACL file not reloaded: keeping the previous rules');
      const writer = await login(gw, 'writer', 5);
      await publish1(writer, 'rev/still', 'x');
      expect((await nextPublish(reader)).topic).to.equal('rev/still');
    });
  });
});
