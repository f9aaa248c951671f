// The packet id allocator the link shares with MQTT.js (its messageIdProvider contract).
import { expect } from 'chai';
import { PacketIds } from '../../src/bridge/link.js';
import { QOS2_ID_BASE, qos2PacketId } from '../../src/bridge/qos2-ids.js';

const TOP = QOS2_ID_BASE - 1;

describe('uplink link: PacketIds', () => {
  it('QoS 2 records have ids of their own, from their seq: never one PacketIds hands out', () => {
    expect(qos2PacketId(1)).to.equal(QOS2_ID_BASE + 1);
    expect(qos2PacketId(65536 - QOS2_ID_BASE)).to.equal(QOS2_ID_BASE);
    for (const seq of [0, 7, 16383, 16384, 123456789]) {
      const id = qos2PacketId(seq);
      expect(id, String(seq)).to.be.within(QOS2_ID_BASE, 65535);
    }
  });

  it('allocates 1, 2, 3, … and reports the last one allocated', () => {
    const ids = new PacketIds();
    expect(ids.getLastAllocated()).to.equal(null);
    expect([ids.allocate(), ids.allocate(), ids.allocate()]).to.deep.equal([1, 2, 3]);
    expect(ids.getLastAllocated()).to.equal(3);
  });

  it('wraps past the last id below the QoS 2 range to 1, skipping ids still in use', () => {
    const ids = new PacketIds();
    for (let i = 1; i <= TOP - 1; i++) ids.allocate();
    ids.deallocate(1);
    ids.deallocate(3);
    expect(ids.allocate()).to.equal(TOP);
    expect(ids.allocate()).to.equal(1);
    expect(ids.allocate()).to.equal(3);
    expect(ids.getLastAllocated()).to.equal(3);
  });

  it('register fails for an id in use (by either side) and succeeds once it is free', () => {
    const ids = new PacketIds();
    expect(ids.register(5)).to.equal(true);
    expect(ids.register(5)).to.equal(false);
    for (const bad of [0, 65536, -1, 1.5, QOS2_ID_BASE, 65535]) expect(ids.register(bad), String(bad)).to.equal(false);
    const a = ids.allocate();
    expect(ids.register(a!)).to.equal(false);
    ids.deallocate(5);
    expect(ids.register(5)).to.equal(true);
  });

  it('allocate skips ids MQTT.js registered', () => {
    const ids = new PacketIds();
    ids.register(1);
    ids.register(2);
    expect(ids.allocate()).to.equal(3);
  });

  it('full: allocate gives null until an id is freed; a double deallocate frees only once', () => {
    const ids = new PacketIds();
    for (let i = 1; i <= TOP; i++) expect(ids.allocate()).to.equal(i);
    expect(ids.allocate()).to.equal(null);
    ids.deallocate(40000);
    ids.deallocate(40000);
    expect(ids.allocate()).to.equal(40000);
    expect(ids.allocate()).to.equal(null);
  });

  it('clear frees every id', () => {
    const ids = new PacketIds();
    for (let i = 1; i <= TOP; i++) ids.allocate();
    ids.clear();
    expect(ids.register(7)).to.equal(true);
    const seen = new Set<number>();
    for (let id = ids.allocate(); id !== null; id = ids.allocate()) seen.add(id);
    expect(seen.size).to.equal(TOP - 1);
    expect(seen.has(7)).to.equal(false);
  });
});
