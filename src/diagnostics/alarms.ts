// Gateway alarms: something a technician or HQ must know about (a corrupt store moved aside, a
// disk that is full). Each is logged and published retained on convoy/alarms/<name> through the
// ordinary publish path, so LAN clients, `convoy status` and (later) the uplink see it.
import type { Broker } from '../broker/broker.js';

export const ALARM_TOPIC_PREFIX = 'convoy/alarms/';

export interface Alarm {
  /** Short stable name: becomes the last topic level ("store"). */
  name: string;
  /** What happened and what to do, for a person. */
  message: string;
  /** Extra facts (file paths, counts). */
  detail?: Record<string, string | number | boolean>;
}

export function raiseAlarm(broker: Broker, alarm: Alarm): void {
  broker.log.error({ alarm: alarm.name, ...alarm.detail }, alarm.message);
  broker.publishInternal({
    topic: ALARM_TOPIC_PREFIX + alarm.name,
    payload: JSON.stringify({ name: alarm.name, message: alarm.message, at: new Date().toISOString(), ...alarm.detail }),
    qos: 1,
    retain: true,
  });
}
