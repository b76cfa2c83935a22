import { runCrashWorkload } from './lib/crash-sim.js';
import { allWorkloads } from './lib/workloads.js';

if (!process.env.NODE_TEST_CONTEXT) {
  const only = process.argv[2];
  const caches = (process.argv[3] ?? 'writeback').split(',');
  for (const w of allWorkloads()) {
    if (only && !w.name.includes(only)) continue;
    for (const cache of caches) {
      const r = await runCrashWorkload(w, { cache: cache as 'writeback', seed: 1, jitter: true });
      console.log(
        `${r.label}: ops=${r.hostOps} flushes=${r.flushes} windows=${r.windows} states=${r.states} unique=${r.unique} qemu=${r.qemuChecked} leaky=${r.leakyStates} ${r.ms}ms`,
      );
      for (const f of r.failures) console.log('  FAIL ' + f);
    }
  }
}
