import { MemoryStateStore } from '../../src/store/memory-state-store.js';
import { describeStateStoreConformance } from './state-store-conformance.js';

describeStateStoreConformance('MemoryStateStore', () => {
  const store = new MemoryStateStore();
  return Promise.resolve({
    store,
    // Not durable: a "restart" sees the same instance.
    reopen: () => Promise.resolve(store),
    cleanup: () => Promise.resolve(store.close()),
  });
});
