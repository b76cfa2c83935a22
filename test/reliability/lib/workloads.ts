/**
 * The guest workloads of the power-loss simulator. Each one exercises one of the orderings of
 * reference/semantics.md (R1-R7; R9 in docs/architecture.md) on a small image, so that its crash states are many but cheap.
 */
import type { Preallocation } from '../../../src/block/preallocation.js';
import type { CrashWorkload } from './crash-sim.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** First writes to unallocated clusters: refcount before L2 entry (R1), L2 table before L1 (R2). */
export function firstTouch(preallocation: Preallocation): CrashWorkload {
  return {
    name: `first-touch-${preallocation}`,
    format: 'qcow2',
    size: MiB,
    options: { preallocation },
    run: async (g) => {
      await g.write(0, 4 * KiB);
      await g.write(128 * KiB, 64 * KiB);
      await g.write(300 * KiB, 100 * KiB); // spans three clusters, partial at both ends
      await g.flush();
      await Promise.all([g.write(512 * KiB, 8 * KiB), g.write(640 * KiB, 64 * KiB), g.write(708 * KiB, 4 * KiB)]);
      await g.write(MiB - 512, 512, { fua: true });
      await g.flush();
      await g.write(0, 4 * KiB); // in place
      await g.write(2 * KiB, KiB);
      await g.write(900 * KiB, 16 * KiB);
    },
  };
}

/** 512-byte clusters: an L2 table every 32 KiB of guest, a refcount block every 32 KiB of host. */
export function smallClusters(): CrashWorkload {
  return {
    name: 'small-clusters',
    format: 'qcow2',
    size: 512 * KiB,
    options: { cluster_size: 512, refcount_bits: 64 },
    run: async (g) => {
      await g.write(0, 4 * KiB);
      await g.write(40 * KiB, 8 * KiB);
      await g.flush();
      await Promise.all([g.write(100 * KiB, 2 * KiB), g.write(200 * KiB, 33 * KiB)]);
      await g.flush();
      await g.write(300 * KiB, 64 * KiB);
      await g.write(40 * KiB + 512, 1024);
    },
  };
}

/** Partial-cluster writes over a backing file copy the rest from it first (R3). */
export function cowBacking(compat: '0.10' | '1.1'): CrashWorkload {
  return {
    name: `cow-backing-v${compat === '0.10' ? 2 : 3}`,
    format: 'qcow2',
    size: MiB,
    options: { compat },
    backing: { size: MiB },
    run: async (g) => {
      await g.write(8 * KiB, 4 * KiB);
      await g.flush();
      await g.write(70 * KiB, 4 * KiB);
      await g.write(128 * KiB, 64 * KiB); // a whole cluster: nothing to copy
      await Promise.all([g.write(200 * KiB, 2 * KiB), g.write(330 * KiB, 6 * KiB)]);
      await g.flush();
      await g.write(8 * KiB + 512, 512); // in place
      await g.zero(384 * KiB, 64 * KiB, { mayUnmap: true });
      await g.discard(448 * KiB, 64 * KiB);
      await g.flush();
      await g.write(452 * KiB, 4 * KiB);
      await g.write(390 * KiB, 2 * KiB);
    },
  };
}

/**
 * Freed clusters: the cleared L2 entry is durable before the refcount drops (R4); a freed host
 * cluster is reused for another guest cluster, whose entry must not become durable before the
 * new data (else the other cluster's old data shows through).
 */
export function discardReuse(lazy = false): CrashWorkload {
  return {
    name: lazy ? 'discard-reuse-lazy' : 'discard-reuse',
    format: 'qcow2',
    size: MiB,
    options: lazy ? { lazy_refcounts: true } : {},
    setup: async (g) => {
      await g.write(0, 256 * KiB);
      await g.write(256 * KiB, 256 * KiB);
    },
    run: async (g) => {
      await g.discard(128 * KiB, 128 * KiB);
      await g.write(708 * KiB, 4 * KiB); // a new host cluster: one of the freed ones
      await g.write(768 * KiB, 64 * KiB);
      await g.flush();
      await g.discard(0, 64 * KiB);
      await g.zero(320 * KiB, 128 * KiB, { mayUnmap: true });
      await g.write(900 * KiB, 64 * KiB);
      await g.write(136 * KiB, 8 * KiB);
      await g.flush();
      await g.write(600 * KiB, 64 * KiB);
      await g.discard(448 * KiB, 64 * KiB);
      await g.write(960 * KiB, 2 * KiB);
    },
  };
}

/** Write-zeroes that keeps clusters (zero flag, host kept), unmaps them, or writes zeros. */
export function writeZeroes(): CrashWorkload {
  return {
    name: 'write-zeroes',
    format: 'qcow2',
    size: MiB,
    setup: async (g) => {
      await g.write(0, 512 * KiB);
    },
    run: async (g) => {
      await g.zero(0, 64 * KiB);
      await g.zero(64 * KiB, 64 * KiB, { mayUnmap: true });
      await g.zero(130 * KiB, 10 * KiB);
      await g.flush();
      await g.write(4 * KiB, 4 * KiB); // into the kept zero cluster
      await g.write(64 * KiB, 64 * KiB);
      await g.flush();
      await g.zero(200 * KiB, 128 * KiB, { mayUnmap: true });
      await g.write(256 * KiB, 512);
      await g.zero(600 * KiB, 64 * KiB);
      await g.write(640 * KiB, 4 * KiB);
    },
  };
}

/**
 * L1 and refcount-table growth with 512-byte clusters and 64-bit refcounts: one refcount table
 * cluster covers 2 MiB of host file, one L1 cluster 2 MiB of guest. The setup fills the image
 * close to both limits; the recorded part resizes (staged L1 growth, R5, with the tail
 * preallocated as asked) and writes past the refcount table's reach (staged table growth).
 */
export function growth(preallocation: Preallocation): CrashWorkload {
  return {
    name: `l1-reftable-growth-${preallocation}`,
    format: 'qcow2',
    size: 2 * MiB,
    options: { cluster_size: 512, refcount_bits: 64 },
    // Each state is a 2 MiB image of 512-byte clusters: the bounded run samples fewer of them.
    ci:
      preallocation === 'off'
        ? { weight: 0.35, modes: ['writeback', 'writethrough'] }
        : {
            weight: 0.25,
            modes: [({ metadata: 'writethrough', falloc: 'none', full: 'directsync' } as const)[preallocation]],
          },
    setup: async (g) => {
      for (let off = 0; off < 1792 * KiB; off += 64 * KiB) await g.write(off, 64 * KiB);
    },
    run: async (g) => {
      await g.resize(4 * MiB, preallocation);
      await g.write(2 * MiB, 8 * KiB);
      await g.flush();
      for (let i = 0; i < 6; i++) await g.write(1792 * KiB + i * 32 * KiB, 32 * KiB);
      await g.flush();
      await g.write(3 * MiB, 96 * KiB);
      await g.write(2 * MiB + 4 * KiB, 1024);
    },
  };
}

/**
 * Shrinking with 512-byte clusters and 64-bit refcounts: the clusters past the new end are freed,
 * the L2 tables and refcount blocks left counting nothing are dropped, and the file is cut (R4:
 * nothing on disk names what goes); then the image grows again over the freed space.
 */
export function shrink(): CrashWorkload {
  return {
    name: 'shrink',
    format: 'qcow2',
    size: 2 * MiB,
    options: { cluster_size: 512, refcount_bits: 64 },
    ci: { weight: 0.35, modes: ['writeback', 'writethrough'] },
    setup: async (g) => {
      await g.write(0, 128 * KiB);
      await g.write(1536 * KiB, 256 * KiB);
    },
    run: async (g) => {
      await g.write(64 * KiB, 8 * KiB);
      await g.resize(512 * KiB);
      await g.write(300 * KiB, 16 * KiB);
      await g.flush();
      await g.resize(MiB);
      await g.write(900 * KiB, 8 * KiB);
    },
  };
}

/** Lazy refcounts: the dirty bit is set (and durable) before the first write that skips refcounts (R7). */
export function lazyRefcounts(): CrashWorkload {
  return {
    name: 'lazy-refcounts',
    format: 'qcow2',
    size: MiB,
    options: { lazy_refcounts: true },
    run: async (g) => {
      await g.write(0, 4 * KiB);
      await g.write(64 * KiB, 64 * KiB);
      await g.flush();
      await Promise.all([g.write(200 * KiB, 8 * KiB), g.write(400 * KiB, 64 * KiB)]);
      await g.write(4 * KiB, 4 * KiB);
      await g.flush();
      await g.write(600 * KiB, 100 * KiB);
    },
  };
}

/** Many requests in flight at once, completing out of order. */
export function concurrent(): CrashWorkload {
  return {
    name: 'concurrent',
    format: 'qcow2',
    size: 2 * MiB,
    options: { cluster_size: 4096 },
    run: async (g, random) => {
      for (let round = 0; round < 3; round++) {
        const slots = new Set<number>();
        while (slots.size < 8) slots.add(Math.floor(random() * 128));
        await Promise.all([...slots].map((s) => g.write(s * 16 * KiB + (round % 2) * 4 * KiB, 8 * KiB)));
        if (round < 2) await g.flush();
      }
    },
  };
}

/**
 * Persistent dirty bitmaps (R9): marked in use before the first write, stored into new clusters
 * with a new directory on close, the old ones freed. Every crash state must open (a torn
 * in-place directory write is covered by the autoclear bit) and check clean.
 */
export function bitmaps(): CrashWorkload {
  return {
    name: 'bitmaps',
    format: 'qcow2',
    size: MiB,
    options: { cluster_size: 4096 },
    ci: { weight: 1, modes: ['writeback', 'writethrough'] },
    setup: async (g) => {
      const bitmaps = g.backend.persistentBitmaps()!;
      await bitmaps.add('b0', 512, true);
      await bitmaps.add('b1', 65536, true);
      await bitmaps.add('off', 4096, false);
      await g.write(0, 8 * KiB);
    },
    run: async (g) => {
      await g.write(100 * KiB, 4 * KiB);
      await g.zero(300 * KiB, 16 * KiB);
      await g.flush();
      await g.write(700 * KiB, 64 * KiB);
      await g.discard(0, 8 * KiB);
      // The bitmaps are stored by the close: its writes are crash points too.
      await g.backend.close();
    },
  };
}

/** raw: the cache mode's promise alone, with FUA and write-zeroes. */
export function raw(): CrashWorkload {
  return {
    name: 'raw',
    format: 'raw',
    size: 256 * KiB,
    run: async (g) => {
      await g.write(0, 8 * KiB);
      await g.write(64 * KiB, 4 * KiB);
      await g.flush();
      await g.write(4 * KiB, 8 * KiB, { fua: true });
      await g.zero(128 * KiB, 16 * KiB);
      await g.write(200 * KiB, 4 * KiB);
    },
  };
}

const PREALLOCATIONS: Preallocation[] = ['off', 'metadata', 'falloc', 'full'];

/** Every workload, with every preallocation mode where it applies. */
export function allWorkloads(): CrashWorkload[] {
  return [
    ...PREALLOCATIONS.map((p) => firstTouch(p)),
    smallClusters(),
    cowBacking('1.1'),
    cowBacking('0.10'),
    discardReuse(),
    discardReuse(true),
    writeZeroes(),
    ...PREALLOCATIONS.map((p) => growth(p)),
    shrink(),
    lazyRefcounts(),
    concurrent(),
    bitmaps(),
    raw(),
  ];
}
