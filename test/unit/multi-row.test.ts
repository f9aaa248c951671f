import { expect } from 'chai';
import Database from 'better-sqlite3';
import { multiRowInsert } from '../../src/store/multi-row.js';

describe('multiRowInsert', () => {
  it('repeats the VALUES group of a single-row INSERT', () => {
    expect(multiRowInsert('INSERT OR REPLACE INTO t (a, b) VALUES (?, ?)', 3)).to.equal(
      'INSERT OR REPLACE INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?)',
    );
    expect(multiRowInsert('INSERT INTO t VALUES (?)', 2)).to.equal('INSERT INTO t VALUES (?), (?)');
  });

  it('leaves alone what is not one row of anonymous parameters', () => {
    expect(multiRowInsert('INSERT INTO t (a) SELECT x FROM u WHERE y = ?', 4)).to.equal(null);
    expect(multiRowInsert('INSERT INTO t (a, b) VALUES (?, 1)', 4)).to.equal(null);
    expect(multiRowInsert('INSERT INTO t (a) VALUES (?) ON CONFLICT DO NOTHING', 4)).to.equal(null);
    expect(multiRowInsert('DELETE FROM t WHERE a = ?', 4)).to.equal(null);
    expect(multiRowInsert('UPDATE t SET a = ? WHERE b = ?', 4)).to.equal(null);
  });

  it('inserts the same rows, in order, with the same conflict handling as single-row statements', () => {
    const db = new Database(':memory:');
    try {
      db.exec('CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)');
      const sql = 'INSERT OR REPLACE INTO t (k, v) VALUES (?, ?)';
      db.prepare(multiRowInsert(sql, 3)!).run(1, 'a', 2, 'b', 1, 'c');
      expect(db.prepare('SELECT k, v FROM t ORDER BY k').all()).to.deep.equal([
        { k: 1, v: 'c' },
        { k: 2, v: 'b' },
      ]);
    } finally {
      db.close();
    }
  });
});
