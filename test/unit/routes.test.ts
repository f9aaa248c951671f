import { expect } from 'chai';
import { checkRouteShape, compileDownlinkRoute, compileUplinkRoute, findRoute, mapTopic } from '../../src/bridge/routes.js';

describe('bridge routes (pure)', () => {
  const up = compileUplinkRoute({ local: 'truck/telemetry/#', remote: 'fleet/{gateway}/telemetry/#', qos: 1, class: 'telemetry', ttl_s: 60, store_qos0: true }, 'gw7');

  it('maps the levels matched by # after the remote prefix, {gateway} expanded', () => {
    expect(mapTopic(up, 'truck/telemetry/engine/rpm')).to.equal('fleet/gw7/telemetry/engine/rpm');
    expect(mapTopic(up, 'truck/telemetry')).to.equal('fleet/gw7/telemetry');
    expect(mapTopic(up, 'truck/telemetry/')).to.equal('fleet/gw7/telemetry/');
    expect(up.ttlMs).to.equal(60_000);
  });

  it('maps + levels positionally', () => {
    const r = compileUplinkRoute({ local: 'truck/+/door', remote: 'fleet/{gateway}/+/door', qos: 1, class: 'event', ttl_s: 0, store_qos0: true }, 'g');
    expect(mapTopic(r, 'truck/rear/door')).to.equal('fleet/g/rear/door');
  });

  it('maps downlink orders to the LAN topic', () => {
    const d = compileDownlinkRoute({ remote: 'fleet/{gateway}/orders/#', local: 'truck/orders/#', qos: 1 }, 'gw1');
    expect(d.filter).to.equal('fleet/gw1/orders/#');
    expect(mapTopic(d, 'fleet/gw1/orders/42/cancel')).to.equal('truck/orders/42/cancel');
  });

  it('picks the first matching route in config order', () => {
    const alarm = compileUplinkRoute({ local: 'truck/telemetry/alarm/#', remote: 'fleet/{gateway}/alarms/#', qos: 1, class: 'alarm', ttl_s: 0, store_qos0: true }, 'g');
    expect(findRoute([alarm, up], 'truck/telemetry/alarm/fire')?.cls).to.equal('alarm');
    expect(findRoute([alarm, up], 'truck/telemetry/speed')?.cls).to.equal('telemetry');
    expect(findRoute([alarm, up], 'truck/other')).to.equal(undefined);
  });

  it('refuses routes whose wildcard tails differ', () => {
    expect(checkRouteShape('truck/#', 'fleet/x/#')).to.equal(null);
    expect(checkRouteShape('truck/+/a', 'fleet/#')).to.match(/same wildcard levels/);
  });
});
