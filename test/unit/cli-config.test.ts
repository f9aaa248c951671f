import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseConfigText, defaultConfig } from '../../src/config/load.js';

// Compiled to dist/test/unit/, next to dist/src/.
const MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url));

function convoy(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [MAIN, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '', ...env },
    timeout: 15000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('cli: convoy config', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'convoy-cli-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const file = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  it('config check prints FILE: ok and exits 0 for a valid file', () => {
    const p = file('ok.toml', '[[listeners]]\nport = "${LAN_PORT:-1883}"\n');
    const r = convoy(['config', 'check', p]);
    expect(r.stdout).to.equal(`${p}: ok\n`);
    expect(r.stderr).to.equal('');
    expect(r.code).to.equal(0);
  });

  it('config check prints every error as FILE:LINE and exits 1', () => {
    const p = file('bad.toml', ['[limits]', 'max_packet_sise = 10', 'max_inflight = 0', '[log]', 'level = "loud"'].join('\n'));
    const r = convoy(['config', 'check', p]);
    expect(r.code).to.equal(1);
    expect(r.stdout).to.equal('');
    expect(r.stderr.trimEnd().split('\n')).to.deep.equal([
      `${p}:2: limits.max_packet_sise: unknown key, did you mean max_packet_size?`,
      `${p}:3: limits.max_inflight: 0 is too small: use a whole number from 1 to 65535`,
      `${p}:5: log.level: "loud" is not allowed: use one of trace, debug, info, warn, error, fatal, silent`,
      `${p}: 3 errors`,
    ]);
  });

  it('config check uses the environment', () => {
    const p = file('env.toml', '[[listeners]]\nport = "${LAN_PORT}"\n');
    expect(convoy(['config', 'check', p], { LAN_PORT: '1884' }).code).to.equal(0);
    const r = convoy(['config', 'check', p]);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.contain(`${p}:2: listeners[0].port: environment variable LAN_PORT is not set`);
  });

  it('config check reports a missing file and exits 1', () => {
    const r = convoy(['config', 'check', join(dir, 'nope.toml')]);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.contain('nope.toml: file not found');
  });

  it('config check without a file is a usage error (exit 2)', () => {
    const r = convoy(['config', 'check']);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.contain('missing FILE');
  });

  it('config defaults prints TOML that checks ok and equals the defaults', () => {
    const r = convoy(['config', 'defaults']);
    expect(r.code).to.equal(0);
    const parsed = parseConfigText(r.stdout, 'defaults.toml', {});
    expect(parsed).to.deep.equal({ ok: true, config: defaultConfig() });
    const p = file('defaults.toml', r.stdout);
    expect(convoy(['config', 'check', p]).code).to.equal(0);
  });

  it('unknown config subcommand exits 2', () => {
    const r = convoy(['config', 'frob']);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.contain('unknown subcommand "frob"');
  });
});

describe('cli: convoy', () => {
  it('--version and version print the package version', () => {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
    for (const arg of ['--version', 'version']) {
      const r = convoy([arg]);
      expect(r.code).to.equal(0);
      expect(r.stdout).to.equal(`convoy ${pkg.version}\n`);
    }
  });

  it('help lists the commands; help COMMAND shows its usage', () => {
    const r = convoy(['help']);
    expect(r.code).to.equal(0);
    expect(r.stdout).to.contain('Usage: convoy <command>').and.contain('config').and.contain('run');
    const c = convoy(['help', 'config']);
    expect(c.code).to.equal(0);
    expect(c.stdout).to.contain('convoy config check FILE');
    expect(convoy(['config', '--help']).stdout).to.contain('convoy config defaults');
    expect(convoy(['help', 'frob']).code).to.equal(2);
  });

  it('an unknown command prints usage and exits 2', () => {
    const r = convoy(['frob']);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.contain('unknown command "frob"').and.contain('Usage: convoy');
  });

  it('no command prints usage and exits 2', () => {
    const r = convoy([]);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.contain('Usage: convoy');
  });

  it('run rejects unexpected arguments with exit 2', () => {
    const r = convoy(['run', '--confg', 'x']);
    expect(r.code).to.equal(2);
    expect(r.stderr).to.contain('unexpected argument "--confg"');
    expect(convoy(['run', '--config']).code).to.equal(2);
  });
});
