import { expect } from 'chai';
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'smol-toml';
import type * as z from 'zod';
import { renderDefaultsToml } from '../../src/config/defaults-doc.js';
import {
  checkConfigFile,
  ConfigError,
  defaultConfig,
  formatConfigIssue,
  levenshtein,
  lineOf,
  loadConfigFile,
  locateKeys,
  nearest,
  parseConfigText,
  type ConfigIssue,
} from '../../src/config/load.js';
import { configSchema, descriptionOf, elementOf, shapeOf } from '../../src/config/schema.js';

/** Formatted issues of a text that must be invalid. */
function errors(text: string, env: Record<string, string> = {}): string[] {
  const r = parseConfigText(text, 'convoy.toml', env);
  if (r.ok) throw new Error('expected the configuration to be invalid');
  return r.issues.map(formatConfigIssue);
}

function valid(text: string, env: Record<string, string> = {}) {
  const r = parseConfigText(text, 'convoy.toml', env);
  if (!r.ok) throw new Error(r.issues.map(formatConfigIssue).join('\n'));
  return r.config;
}

describe('config schema and defaults', () => {
  it('has the documented defaults', () => {
    const c = defaultConfig();
    expect(c.data_dir).to.equal('./data');
    expect(c.log.level).to.equal('info');
    // Anonymous access only on the loopback listener of the embedded default.
    expect(c.listeners.map((l) => [l.type, l.host, l.port, l.allow_anonymous])).to.deep.equal([['tcp', '127.0.0.1', 1883, true]]);
    expect(c.limits).to.deep.equal({
      max_packet_size: 1048576,
      max_connections: 1024,
      max_inflight: 32,
      max_queued_messages: 1000,
      max_queued_bytes: 16777216,
      max_outbound_bytes: 4194304,
      max_topic_length: 65535,
      max_topic_levels: 128,
      keepalive_max: 65535,
      keepalive_min: 0,
      connect_timeout_ms: 10000,
      allow_zero_length_client_id: true,
    });
    expect(c.sys).to.deep.equal({ interval_s: 10 });
  });

  it('returns a fresh object each time', () => {
    const a = defaultConfig();
    a.limits.max_inflight = 1;
    expect(defaultConfig().limits.max_inflight).to.equal(32);
  });

  it('an empty file is the default configuration', () => {
    expect(valid('')).to.deep.equal(defaultConfig());
  });

  it('a partial section keeps the other defaults', () => {
    const c = valid('[limits]\nmax_inflight = 8\n');
    expect(c.limits.max_inflight).to.equal(8);
    expect(c.limits.max_packet_size).to.equal(1048576);
    expect(c.sys.interval_s).to.equal(10);
  });

  it('listeners take per-key defaults and can be several', () => {
    const c = valid('[[listeners]]\nport = 0\n\n[[listeners]]\nhost = "0.0.0.0"\nport = 1884\n');
    expect(c.listeners.map((l) => [l.type, l.host, l.port, l.allow_anonymous])).to.deep.equal([
      ['tcp', '127.0.0.1', 0, false],
      ['tcp', '0.0.0.0', 1884, false],
    ]);
  });

  it('every key in the schema has a description', () => {
    const missing: string[] = [];
    const walk = (s: z.ZodType, path: string) => {
      const shape = shapeOf(s);
      const el = elementOf(s);
      if (shape) {
        for (const [k, v] of Object.entries(shape)) {
          if (!descriptionOf(v)) missing.push(path + k);
          walk(v, `${path}${k}.`);
        }
      } else if (el) walk(el, path);
    };
    walk(configSchema, '');
    expect(missing).to.deep.equal([]);
  });
});

describe('config loading errors', () => {
  it('reports an unknown key with its line and the nearest valid key', () => {
    const text = ['data_dir = "/var/lib/convoy"', '', '[log]', 'level = "debug"', '', '[limits]', 'max_packet_sise = 10', ''].join('\n');
    expect(errors(text)).to.deep.equal(['convoy.toml:7: limits.max_packet_sise: unknown key, did you mean max_packet_size?']);
  });

  it('reports an unknown section and suggests the nearest', () => {
    expect(errors('[limit]\nmax_inflight = 3\n')).to.deep.equal(['convoy.toml:1: limit: unknown section, did you mean limits?']);
  });

  it('lists the valid keys when nothing is close', () => {
    const [e] = errors('[sys]\nfrobnicate = 1\n');
    expect(e).to.equal('convoy.toml:2: sys.frobnicate: unknown key: remove it or use one of interval_s');
  });

  it('suggests across - and _', () => {
    expect(errors('[limits]\nmax-inflight = 3\n')[0]).to.contain('did you mean max_inflight?');
  });

  it('reports every error, in file order, with lines', () => {
    const text = [
      '[log]', //                          1
      'level = "verbose"', //              2
      '[limits]', //                       3
      'max_packet_size = 1', //            4
      'max_inflight = 1.5', //             5
      'max_topic_levels = "many"', //      6
      'keepalive_maxx = 3', //             7
      '[[listeners]]', //                  8
      'port = 1883', //                    9
      '[[listeners]]', //                  10
      'port = 70000', //                   11
      'hostt = "x"', //                    12
    ].join('\n');
    const e = errors(text);
    expect(e).to.have.length(7);
    expect(e[0]).to.match(/^convoy\.toml:2: log\.level: "verbose" is not allowed: use one of trace, debug/);
    expect(e[1]).to.equal('convoy.toml:4: limits.max_packet_size: 1 is too small: use a whole number from 2 to 268435455 bytes');
    expect(e[2]).to.equal('convoy.toml:5: limits.max_inflight: 1.5 is not a whole number: use a whole number from 1 to 65535');
    expect(e[3]).to.equal(
      'convoy.toml:6: limits.max_topic_levels: expected a number, got "many": use a whole number from 1 to 65535',
    );
    expect(e[4]).to.equal('convoy.toml:7: limits.keepalive_maxx: unknown key, did you mean keepalive_max?');
    expect(e[5]).to.equal('convoy.toml:11: listeners[1].port: 70000 is too large: use a whole number from 0 to 65535');
    expect(e[6]).to.equal('convoy.toml:12: listeners[1].hostt: unknown key, did you mean host?');
  });

  it('reports unknown keys in an array-of-tables element at their line', () => {
    const text = '[[listeners]]\nport = 1\n[[listeners]]\nport = 2\nhostt = "x"\n';
    expect(errors(text)).to.deep.equal(['convoy.toml:5: listeners[1].hostt: unknown key, did you mean host?']);
  });

  it('suggests the nearest allowed value of an enum', () => {
    expect(errors('[log]\nlevel = "warnn"\n')[0]).to.equal(
      'convoy.toml:2: log.level: "warnn" is not allowed, did you mean "warn"? (one of trace, debug, info, warn, error, fatal, silent)',
    );
  });

  it('reports wrong types with what to write', () => {
    expect(errors('data_dir = 5\n')[0]).to.equal('convoy.toml:1: data_dir: expected a string, got 5: put the value in double quotes');
    expect(errors('limits = 5\n')[0]).to.equal('convoy.toml:1: limits: expected a table, got 5: write it as a [limits] section');
    expect(errors('[limits]\nallow_zero_length_client_id = "yes"\n')[0]).to.equal(
      'convoy.toml:2: limits.allow_zero_length_client_id: expected true or false, got "yes"',
    );
    expect(errors('data_dir = ""\n')[0]).to.contain('data_dir: must not be empty');
  });

  it('checks that keepalive_min does not exceed keepalive_max', () => {
    expect(errors('[limits]\nkeepalive_max = 60\nkeepalive_min = 120\n')).to.deep.equal([
      'convoy.toml:3: limits.keepalive_min: 120 is larger than keepalive_max (60): lower keepalive_min or raise keepalive_max',
    ]);
  });

  it('rejects two listeners on the same port, but allows several on port 0', () => {
    const e = errors('[[listeners]]\nport = 1883\n[[listeners]]\nhost = "0.0.0.0"\nport = 1883\n');
    expect(e).to.deep.equal([
      'convoy.toml:5: listeners[1].port: port 1883 on 0.0.0.0 is already used by listeners[0]: give each listener its own port',
    ]);
    expect(valid('[[listeners]]\nport = 0\n[[listeners]]\nport = 0\n').listeners).to.have.length(2);
    expect(valid('[[listeners]]\nhost = "10.0.0.1"\nport = 1883\n[[listeners]]\nhost = "10.0.0.2"\nport = 1883\n').listeners).to.have.length(2);
  });

  it('reports TOML syntax errors as FILE:LINE', () => {
    const e = errors('[limits]\nmax_inflight = 3\nmax_inflight 4\n');
    expect(e).to.have.length(1);
    expect(e[0]).to.match(/^convoy\.toml:3: TOML syntax error at column \d+: /);
    expect(errors('[limits]\nmax_inflight = 3\nmax_inflight = 4\n')[0]).to.match(/^convoy\.toml:3: /);
  });
});

describe('config env interpolation in files', () => {
  it('coerces numbers and booleans given as strings', () => {
    const text = '[[listeners]]\nport = "${CONVOY_LAN_PORT:-1883}"\n[limits]\nallow_zero_length_client_id = "${ZERO:-false}"\n';
    expect(valid(text).listeners[0]!.port).to.equal(1883);
    expect(valid(text, { CONVOY_LAN_PORT: '2883' }).listeners[0]!.port).to.equal(2883);
    expect(valid(text).limits.allow_zero_length_client_id).to.equal(false);
  });

  it('says clearly when an interpolated number is not numeric', () => {
    const text = '[[listeners]]\nport = "${CONVOY_LAN_PORT:-1883}"\n';
    expect(errors(text, { CONVOY_LAN_PORT: 'lan' })).to.deep.equal([
      'convoy.toml:2: listeners[0].port: expected a number, got "lan": use a whole number from 0 to 65535',
    ]);
  });

  it('reports an unset variable at its line, once', () => {
    expect(errors('data_dir = "${STATE_DIR}/convoy"\n[[listeners]]\nport = "${PORT}"\n')).to.deep.equal([
      'convoy.toml:1: data_dir: environment variable STATE_DIR is not set: set it, or give a default with "${STATE_DIR:-value}"',
      'convoy.toml:3: listeners[0].port: environment variable PORT is not set: set it, or give a default with "${PORT:-value}"',
    ]);
  });

  it('keeps $${ literal', () => {
    expect(valid('data_dir = "/x/$${HOME}"\n').data_dir).to.equal('/x/${HOME}');
  });
});

describe('config key locator', () => {
  const text = [
    '# comment [not.a.table]', //          1
    'data_dir = "x" # trailing', //         2
    '[ limits ]', //                        3
    '  max_inflight=3', //                  4
    '"quoted.key" = 1', //                  5
    'desc = """', //                        6
    'fake = 1', //                          7 (inside a string)
    '"""', //                               8
    'list = [', //                          9
    '  { a = 1 },', //                      10
    '  "x = ]",', //                        11
    ']', //                                 12
    'after = 2', //                         13
    '[[listeners]]', //                     14
    'port = 1', //                          15
    '[listeners.tls]', //                   16
    'cert = "a"', //                        17
    '[[listeners]]', //                     18
    'port = 2', //                          19
    '[[listeners.extra]]', //               20
    'x = 1', //                             21
    '[a.b]', //                             22
    'c.d = 1', //                           23
  ].join('\n');
  const index = locateKeys(text);

  it('finds keys, headers and dotted keys', () => {
    expect(lineOf(index, ['data_dir'])).to.equal(2);
    expect(lineOf(index, ['limits'])).to.equal(3);
    expect(lineOf(index, ['limits', 'max_inflight'])).to.equal(4);
    expect(lineOf(index, ['limits', 'quoted.key'])).to.equal(5);
    expect(lineOf(index, ['a', 'b', 'c', 'd'])).to.equal(23);
    expect(lineOf(index, ['a', 'b', 'c'])).to.equal(23);
    expect(lineOf(index, ['a'])).to.equal(22);
  });

  it('skips multi-line strings and arrays', () => {
    expect(lineOf(index, ['limits', 'fake'])).to.equal(3); // falls back to the table header
    expect(lineOf(index, ['limits', 'after'])).to.equal(13);
    expect(lineOf(index, ['limits', 'list', 0, 'a'])).to.equal(9);
  });

  it('indexes arrays of tables, including nested ones', () => {
    expect(lineOf(index, ['listeners', 0])).to.equal(14);
    expect(lineOf(index, ['listeners', 0, 'port'])).to.equal(15);
    expect(lineOf(index, ['listeners', 0, 'tls', 'cert'])).to.equal(17);
    expect(lineOf(index, ['listeners', 1, 'port'])).to.equal(19);
    expect(lineOf(index, ['listeners', 1, 'extra', 0, 'x'])).to.equal(21);
    expect(lineOf(index, ['listeners', 1, 'missing'])).to.equal(18);
  });

  it('returns undefined for paths not in the text', () => {
    expect(lineOf(index, ['sys', 'interval_s'])).to.equal(undefined);
  });

  it('agrees with smol-toml on the example (sanity)', () => {
    expect(() => parse(text)).not.to.throw();
  });
});

describe('config suggestions', () => {
  it('levenshtein distances', () => {
    expect(levenshtein('', '')).to.equal(0);
    expect(levenshtein('abc', '')).to.equal(3);
    expect(levenshtein('kitten', 'sitting')).to.equal(3);
    expect(levenshtein('max_packet_sise', 'max_packet_size')).to.equal(1);
  });

  it('levenshtein is a metric (property)', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), fc.string(), (a, b, c) => {
        const ab = levenshtein(a, b);
        expect(ab).to.equal(levenshtein(b, a));
        expect(ab === 0).to.equal(a === b);
        expect(ab).to.be.at.most(Math.max(a.length, b.length));
        expect(levenshtein(a, c)).to.be.at.most(ab + levenshtein(b, c));
      }),
    );
  });

  it('nearest only suggests plausible typos', () => {
    const keys = ['max_inflight', 'max_packet_size', 'keepalive_max'];
    expect(nearest('max_infligth', keys)).to.equal('max_inflight');
    expect(nearest('MAX-PACKET-SIZE', keys)).to.equal('max_packet_size');
    expect(nearest('colour', keys)).to.equal(undefined);
    expect(nearest('x', [])).to.equal(undefined);
  });
});

describe('config defaults document', () => {
  const doc = renderDefaultsToml();

  it('parses and validates to exactly defaultConfig()', () => {
    expect(valid(doc)).to.deep.equal(defaultConfig());
    // No environment is needed to read it back.
    expect(parseConfigText(doc, 'defaults.toml', { CONVOY_LAN_PORT: '9' })).to.deep.equal({ ok: true, config: defaultConfig() });
  });

  it('has a comment above every key and section', () => {
    const lines = doc.split('\n');
    lines.forEach((line, i) => {
      if (/^(\[|[a-z_]+ = )/.test(line)) expect(lines[i - 1], `line ${i + 1}: ${line}`).to.match(/^# /);
    });
  });

  it('mentions ranges and allowed values', () => {
    expect(doc).to.contain('max_packet_size = 1048576');
    expect(doc).to.contain('(2..268435455)');
    expect(doc).to.contain('one of: trace, debug, info, warn, error, fatal, silent');
  });
});

describe('config files', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'convoy-config-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('loadConfigFile returns the validated configuration', () => {
    const file = join(dir, 'ok.toml');
    writeFileSync(file, '[sys]\ninterval_s = "${SYS_S:-0}"\n');
    expect(loadConfigFile(file, {}).sys.interval_s).to.equal(0);
    expect(checkConfigFile(file, {})).to.deep.equal([]);
  });

  it('loadConfigFile throws a ConfigError carrying every issue', () => {
    const file = join(dir, 'bad.toml');
    writeFileSync(file, '[limits]\nmax_inflight = 0\nmax_connections = 0\n');
    let caught: unknown;
    try {
      loadConfigFile(file, {});
    } catch (e) {
      caught = e;
    }
    expect(caught).to.be.instanceOf(ConfigError);
    const err = caught as ConfigError;
    expect(err.issues.map((i: ConfigIssue) => i.line)).to.deep.equal([2, 3]);
    expect(err.message.split('\n')).to.have.length(2);
    expect(err.message).to.contain(`${file}:2: limits.max_inflight: 0 is too small`);
    expect(checkConfigFile(file, {})).to.have.length(2);
  });

  it('reports a missing file with what to do', () => {
    const file = join(dir, 'missing.toml');
    expect(checkConfigFile(file, {}).map(formatConfigIssue)).to.deep.equal([
      `${file}: file not found: check the path, or run \`convoy config defaults > FILE\` to create one`,
    ]);
    expect(() => loadConfigFile(file, {})).to.throw(ConfigError);
  });
});
