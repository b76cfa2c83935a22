/**
 * Ordering bugs the power-loss simulator found in the engine, each as the smallest workload that
 * showed it, run through every crash state of its log (no sampling). Each of these failed before
 * the fix named in its title.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CacheModeName } from '../../src/block/cache-mode.js';
import { type CrashWorkload, runCrashWorkload } from './lib/crash-sim.js';
import { concurrent } from './lib/workloads.js';

const KiB = 1024;

async function exhaustive(w: CrashWorkload, cache: CacheModeName, seed = 1, jitter = false): Promise<void> {
  const r = await runCrashWorkload(w, { cache, seed, jitter, statesCap: 0 });
  assert.ok(r.states > 0);
  assert.deepEqual(r.failures, [], r.failures.join('\n'));
}

describe('crash regressions (the guest writer: every remapped cluster is durable before its L2 entry, R3)', () => {
  it('a write into a cluster kept by write-zeroes never shows the data from before the zeroing', async () => {
    // Before the fix, the L2 entry turning the kept zero cluster back into data could reach the
    // disk before the cluster's new content: the zeroed data came back after a power loss.
    await exhaustive(
      {
        name: 'regression-zero-keep',
        format: 'qcow2',
        size: 256 * KiB,
        setup: async (g) => g.write(0, 64 * KiB),
        run: async (g) => {
          await g.zero(0, 64 * KiB);
          await g.write(4 * KiB, 4 * KiB);
          await g.flush();
        },
      },
      'writethrough',
    );
  });

  it('a freed cluster reused for another guest cluster never shows its former data (lazy refcounts)', async () => {
    // Before the fix, with lazy refcounts nothing ordered the new data before the L2 entry: a
    // crash could map guest offset 708 KiB onto the freed cluster of guest offset 128 KiB.
    await exhaustive(
      {
        name: 'regression-reuse-lazy',
        format: 'qcow2',
        size: 1024 * KiB,
        options: { lazy_refcounts: true },
        setup: async (g) => g.write(0, 256 * KiB),
        run: async (g) => {
          await g.discard(128 * KiB, 128 * KiB);
          await g.write(708 * KiB, 4 * KiB);
          await g.write(768 * KiB, 64 * KiB);
          await g.flush();
        },
      },
      'writeback',
    );
  });

  it('concurrent allocating writes never leave an L2 entry pointing past the end of the file', async () => {
    // Before the fix, another request's refcount flush could leave the refcount cache clean, so
    // the L2 write-out needed no flush first, and the entry reached the disk before the data.
    const w: CrashWorkload = { ...concurrent(), name: 'regression-concurrent-eof' };
    await exhaustive(w, 'writethrough', 1, true);
  });
});
