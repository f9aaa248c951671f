import { expect } from 'chai';
import { interpolateEnv, interpolateTree } from '../../src/config/env.js';

describe('config env interpolation', () => {
  const env = { HOST: 'gw.local', EMPTY: '', PORT: '1884' };

  it('leaves text without references unchanged', () => {
    expect(interpolateEnv('plain text', env)).to.deep.equal({ value: 'plain text', errors: [] });
    expect(interpolateEnv('', env)).to.deep.equal({ value: '', errors: [] });
  });

  it('replaces ${NAME} with the variable', () => {
    expect(interpolateEnv('mqtt://${HOST}:${PORT}/x', env).value).to.equal('mqtt://gw.local:1884/x');
  });

  it('${NAME} set but empty gives an empty string', () => {
    expect(interpolateEnv('a${EMPTY}b', env)).to.deep.equal({ value: 'ab', errors: [] });
  });

  it('${NAME} unset is an error naming the variable and the fix', () => {
    const r = interpolateEnv('${NOPE}', env);
    expect(r.errors).to.have.length(1);
    expect(r.errors[0]).to.contain('NOPE is not set').and.contain('${NOPE:-value}');
  });

  it('${NAME:-default} uses the default when unset or empty', () => {
    expect(interpolateEnv('${NOPE:-1883}', env).value).to.equal('1883');
    expect(interpolateEnv('${EMPTY:-x}', env).value).to.equal('x');
    expect(interpolateEnv('${PORT:-1883}', env).value).to.equal('1884');
    expect(interpolateEnv('${NOPE:-}', env)).to.deep.equal({ value: '', errors: [] });
  });

  it('${NAME-default} uses the default only when unset', () => {
    expect(interpolateEnv('${NOPE-d}', env).value).to.equal('d');
    expect(interpolateEnv('${EMPTY-d}', env).value).to.equal('');
  });

  it('defaults may contain colons, dashes and spaces', () => {
    expect(interpolateEnv('${NOPE:-tcp://a-b:1883 x}', env).value).to.equal('tcp://a-b:1883 x');
  });

  it('$${ is a literal ${', () => {
    expect(interpolateEnv('$${HOST}', env)).to.deep.equal({ value: '${HOST}', errors: [] });
    expect(interpolateEnv('a$${NOPE:-x} ${HOST}', env).value).to.equal('a${NOPE:-x} gw.local');
  });

  it('a $ not followed by { is kept', () => {
    expect(interpolateEnv('$SYS/broker $ $$ end$', env).value).to.equal('$SYS/broker $ $$ end$');
  });

  it('reports an unterminated reference', () => {
    const r = interpolateEnv('x ${HOST', env);
    expect(r.errors).to.have.length(1);
    expect(r.errors[0]).to.contain('unterminated');
  });

  it('reports invalid names', () => {
    for (const bad of ['${}', '${1A}', '${A B}', '${A:B}', '${A:?x}']) {
      const r = interpolateEnv(bad, env);
      expect(r.errors, bad).to.have.length(1);
      expect(r.errors[0]).to.contain('invalid variable reference');
    }
  });

  it('reports every problem in one string', () => {
    expect(interpolateEnv('${A}${B}', {}).errors).to.have.length(2);
  });

  it('interpolateTree walks tables and arrays and reports paths', () => {
    const doc = { a: '${HOST}', n: 5, t: { list: ['x', '${NOPE}'] }, d: new Date(0) };
    const r = interpolateTree(doc, env);
    expect(r.value).to.deep.equal({ a: 'gw.local', n: 5, t: { list: ['x', ''] }, d: new Date(0) });
    expect(r.issues).to.have.length(1);
    expect(r.issues[0]!.path).to.deep.equal(['t', 'list', 1]);
  });

  it('does not interpolate keys', () => {
    const r = interpolateTree({ '${HOST}': 'v' }, env);
    expect(r.value).to.deep.equal({ '${HOST}': 'v' });
  });
});
