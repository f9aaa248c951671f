// The crash test's checker on hand-made histories: losses, duplicates by QoS and DUP flag,
// wrong QoS, unacknowledged deliveries and phantoms.
import { expect } from 'chai';
import { checkDeliveries, missingKeys, type AckedMessage, type ReceivedMessage } from '../chaos/crash-checker.js';

const a = (key: string, qos: 1 | 2, round = 1): AckedMessage => ({ key, qos, round });
const r = (key: string, qos: 0 | 1 | 2, incarnation = 1, dup = false): ReceivedMessage => ({ key, qos, dup, incarnation });

describe('crash checker', () => {
  it('passes when every acknowledged message arrived once at the right QoS', () => {
    const rep = checkDeliveries([a('p:0', 1), a('p:1', 2)], [r('p:0', 1), r('p:1', 2)], { grantedQos: 2 });
    expect(rep.problems).to.deep.equal([]);
    expect(rep).to.include({ acked: 2, receivedCopies: 2, receivedDistinct: 2, qos1ExtraCopies: 0, unackedDelivered: 0 });
  });

  it('reports an acknowledged message that never arrived, with its round', () => {
    const rep = checkDeliveries([a('p:0', 1), a('p:1', 2, 3)], [r('p:0', 1)], { grantedQos: 2 });
    expect(rep.lost).to.deep.equal([a('p:1', 2, 3)]);
    expect(rep.problems).to.have.length(1);
    expect(rep.problems[0]).to.contain('p:1 (QoS 2, acked in round 3)');
  });

  it('allows QoS 1 duplicates with DUP and counts them', () => {
    const rep = checkDeliveries([a('p:0', 1)], [r('p:0', 1, 1), r('p:0', 1, 2, true), r('p:0', 1, 3, true)], { grantedQos: 1 });
    expect(rep.problems).to.deep.equal([]);
    expect(rep.qos1Duplicates).to.have.length(1);
    expect(rep.qos1ExtraCopies).to.equal(2);
    expect(rep.qos1Duplicates[0]!.arrivals).to.deep.equal([
      { incarnation: 1, dup: false }, { incarnation: 2, dup: true }, { incarnation: 3, dup: true },
    ]);
  });

  it('rejects a QoS 1 copy without DUP from a later broker incarnation (the restarted broker sets DUP)', () => {
    const rep = checkDeliveries([a('p:0', 1)], [r('p:0', 1, 1), r('p:0', 1, 2, false)], { grantedQos: 1 });
    expect(rep.qos1RedeliveredAfterRestartWithoutDup).to.equal(1);
    expect(rep.problems.join()).to.contain('after a restart without DUP');
  });

  it('rejects a QoS 1 copy without DUP from the same incarnation', () => {
    const rep = checkDeliveries([a('p:0', 1)], [r('p:0', 1, 2), r('p:0', 1, 2, false)], { grantedQos: 1 });
    expect(rep.qos1RedeliveredWithoutDupSameIncarnation.map((d) => d.key)).to.deep.equal(['p:0']);
    expect(rep.problems.join()).to.contain('without DUP');
  });

  it('rejects any QoS 2 duplicate, DUP or not', () => {
    const rep = checkDeliveries([a('p:1', 2)], [r('p:1', 2, 1), r('p:1', 2, 2, true)], { grantedQos: 2 });
    expect(rep.qos2Duplicates.map((d) => d.key)).to.deep.equal(['p:1']);
    expect(rep.problems.join()).to.contain('QoS 2');
  });

  it('expects the lower of published and granted QoS', () => {
    // A QoS 2 publish to a QoS 1 subscription arrives at QoS 1, and may then be duplicated.
    const ok = checkDeliveries([a('p:1', 2)], [r('p:1', 1), r('p:1', 1, 2, true)], { grantedQos: 1 });
    expect(ok.problems).to.deep.equal([]);
    const bad = checkDeliveries([a('p:0', 1)], [r('p:0', 2)], { grantedQos: 2 });
    expect(bad.wrongQos).to.deep.equal([{ key: 'p:0', expected: 1, got: 2 }]);
  });

  it('counts unacknowledged deliveries without failing, and rejects phantoms', () => {
    const published = new Set(['p:0', 'p:1']);
    const rep = checkDeliveries([a('p:0', 1)], [r('p:0', 1), r('p:1', 2), r('x:9', 1)], { grantedQos: 2, published });
    expect(rep.unackedDelivered).to.equal(1);
    expect(rep.phantoms).to.deep.equal(['x:9']);
    expect(rep.problems).to.have.length(1);
  });

  it('lists the acknowledged keys still missing', () => {
    expect(missingKeys([a('p:0', 1), a('p:1', 2)], new Set(['p:1']))).to.deep.equal(['p:0']);
  });
});
