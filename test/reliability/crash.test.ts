/**
 * Power loss: every workload of lib/workloads.ts, in every cache mode (and every preallocation
 * mode where it applies), through the crash-state simulator. `npm test` runs a bounded sample
 * of the states (each workload in writeback, writethrough and one of none, directsync and
 * unsafe); `npm run test:reliability -- --long` runs all of them in all five modes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CACHE_MODE_NAMES, type CacheModeName } from '../../src/block/cache-mode.js';
import { config, LEVEL, LONG } from './lib/config.js';
import { type CrashRunReport, runCrashWorkload } from './lib/crash-sim.js';
import { allWorkloads } from './lib/workloads.js';

const EXTRA: CacheModeName[] = ['none', 'directsync', 'unsafe'];

describe(`power loss: crash states (${LEVEL})`, () => {
  const totals = { runs: 0, states: 0, unique: 0, qemu: 0, windows: 0, hostOps: 0 };
  allWorkloads().forEach((w, i) => {
    const modes: CacheModeName[] = LONG
      ? [...CACHE_MODE_NAMES]
      : (w.ci?.modes ?? ['writeback', 'writethrough', EXTRA[i % 3]!]);
    const statesCap = LONG ? undefined : Math.max(20, Math.round(config.crashStatesPerRun * (w.ci?.weight ?? 1)));
    it(`${w.name}: ${modes.join(', ')}`, async (t) => {
      const failures: string[] = [];
      for (const cache of modes) {
        for (let s = 0; s < Math.max(1, config.crashSeeds); s++) {
          const r: CrashRunReport = await runCrashWorkload(w, {
            cache,
            seed: config.seed + i * 1000 + s,
            jitter: s > 0 || w.name === 'concurrent',
            statesCap,
          });
          totals.runs++;
          totals.states += r.states;
          totals.unique += r.unique;
          totals.qemu += r.qemuChecked;
          totals.windows += r.windows;
          totals.hostOps += r.hostOps;
          t.diagnostic(
            `${r.label}: ${r.hostOps} host ops, ${r.flushes} flushes, ${r.windows} windows, ` +
              `${r.states} states tried (${r.unique} distinct, ${r.leakyStates} with leaks), ` +
              `${r.qemuChecked} checked by qemu-img, ${r.ms} ms`,
          );
          failures.push(...r.failures);
        }
      }
      assert.deepEqual(failures, [], failures.join('\n'));
    });
  });
  it('counts', (t) => {
    t.diagnostic(
      `crash family: ${totals.runs} workload runs, ${totals.hostOps} host operations, ${totals.windows} flush windows, ` +
        `${totals.states} crash states tried (${totals.unique} distinct), ${totals.qemu} also checked by qemu-img`,
    );
    console.log(`[reliability] crash states: ${JSON.stringify(totals)}`);
  });
});
