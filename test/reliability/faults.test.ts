/**
 * Failing disks: a fault-injecting filter under the image fails the Nth host operation (reads,
 * writes, write-zeroes, discards, flushes, truncates) with EIO or ENOSPC, once or from then on.
 * The error reaches the BlockBackend caller with that code, the image left behind has no
 * refcount below its references (check), and what was acknowledged as durable reads back. A
 * failed fdatasync stays failed (the file driver's syncImpl seam), through the whole stack.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { BlockBackend } from '../../src/block/backend.js';
import { CACHE_MODE_NAMES, type CacheModeName, cacheMode } from '../../src/block/cache-mode.js';
import { VdiskError } from '../../src/block/errors.js';
import { formatDefinition } from '../../src/engine/formats.js';
import { checkQcow2 } from '../../src/format/qcow2/check/check.js';
import { decodeHeader } from '../../src/format/qcow2/codec/header.js';
import { FileDriver } from '../../src/io/file.js';
import { createImage } from '../../src/tools/create.js';
import { withTempDir } from '../helpers/tmp.js';
import { config, LEVEL, LONG, rng } from './lib/config.js';
import { template } from './lib/crash-sim.js';
import type { FaultPlan } from './lib/fault-driver.js';
import { runFaultCase } from './lib/faults.js';
import {
  cowBacking,
  discardReuse,
  firstTouch,
  growth,
  lazyRefcounts,
  raw,
  smallClusters,
  writeZeroes,
} from './lib/workloads.js';

const COMBOS: Pick<FaultPlan, 'errno' | 'mode'>[] = [
  { errno: 'EIO', mode: 'once' },
  { errno: 'ENOSPC', mode: 'sticky' },
  { errno: 'ENOSPC', mode: 'once' },
  { errno: 'EIO', mode: 'sticky' },
];

const WORKLOADS = [
  { w: firstTouch('off'), weight: 1 },
  { w: firstTouch('falloc'), weight: 0.5 },
  { w: smallClusters(), weight: 1 },
  { w: cowBacking('1.1'), weight: 1 },
  { w: cowBacking('0.10'), weight: 0.5 },
  { w: discardReuse(), weight: 1 },
  { w: discardReuse(true), weight: 1 },
  { w: writeZeroes(), weight: 1 },
  { w: lazyRefcounts(), weight: 0.5 },
  { w: growth('off'), weight: 0.25 },
  { w: growth('metadata'), weight: 0.12 },
  { w: raw(), weight: 0.5 },
];

/** Fault positions: every operation when there are few, else an even spread plus random ones. */
function positions(total: number, budget: number, random: () => number): number[] {
  if (total <= budget) return Array.from({ length: total }, (_, i) => i + 1);
  const out = new Set<number>();
  for (let i = 0; i < budget / 2; i++) out.add(1 + Math.floor((i * total) / (budget / 2)));
  while (out.size < budget) out.add(1 + Math.floor(random() * total));
  return [...out].sort((a, b) => a - b);
}

describe(`failing disks (${LEVEL})`, () => {
  const totals = { workloads: 0, faults: 0, injected: 0, guestErrors: 0 };
  WORKLOADS.forEach(({ w, weight }, i) => {
    const modes: CacheModeName[] = LONG ? [...CACHE_MODE_NAMES] : ['writeback', 'writethrough'];
    it(`${w.name}: ${modes.join(', ')}`, async (t) => {
      const problems: string[] = [];
      for (const cache of modes) {
        const dry = await runFaultCase(w, cache, { at: 0, errno: 'EIO', mode: 'once' });
        problems.push(...dry.problems);
        const random = rng(config.seed + i);
        const at = positions(dry.hostOps, Math.max(4, Math.round(config.faultPositions * weight)), random);
        let cases = 0;
        let injected = 0;
        let guestErrors = 0;
        for (const [k, pos] of at.entries()) {
          for (const combo of LONG ? COMBOS : [COMBOS[(k + i) % COMBOS.length]!]) {
            const r = await runFaultCase(w, cache, { at: pos, ...combo });
            cases++;
            injected += r.injected;
            guestErrors += r.guestErrors;
            problems.push(...r.problems);
          }
          if (problems.length > 20) break;
        }
        totals.workloads++;
        totals.faults += cases;
        totals.injected += injected;
        totals.guestErrors += guestErrors;
        t.diagnostic(
          `${w.name} cache=${cache}: ${dry.hostOps} host operations, ${cases} faults injected at ${at.length} positions ` +
            `(${injected} operations failed, ${guestErrors} guest requests failed)`,
        );
      }
      assert.deepEqual(problems, [], problems.slice(0, 20).join('\n'));
    });
  });

  it('counts', (t) => {
    t.diagnostic(
      `fault family: ${totals.workloads} workload runs, ${totals.faults} faults, ` +
        `${totals.injected} host operations failed, ${totals.guestErrors} guest requests failed`,
    );
    console.log(`[reliability] faults: ${JSON.stringify(totals)}`);
  });
});

describe('failing disks: regressions (found by the fault family)', () => {
  async function regionOf(w: ReturnType<typeof firstTouch>, what: 'l1' | 'reftable') {
    const t = await template(w);
    const h = decodeHeader(t.image.subarray(0, 2 ** t.image.readUInt32BE(20)));
    return what === 'l1'
      ? { offset: h.l1TableOffset, length: h.l1Size * 8 }
      : { offset: h.refcountTableOffset, length: h.refcountTableClusters * 2 ** h.clusterBits };
  }

  it('l2-tables.ts: a failed L1 entry write for a new L2 table loses no later write', async () => {
    // Before the fix the L1 entry changed in memory before its write: after the write failed,
    // later requests put their entries in a table the L1 on disk never named.
    for (const w of [firstTouch('off'), cowBacking('1.1'), smallClusters()]) {
      const l1 = await regionOf(w, 'l1');
      for (const errno of ['EIO', 'ENOSPC'] as const) {
        const r = await runFaultCase(w, 'writeback', {
          at: 1,
          errno,
          mode: 'once',
          kinds: ['write'],
          match: (_kind, offset) => offset >= l1.offset && offset < l1.offset + l1.length,
        });
        assert.equal(r.injected, 1, `${w.name}: the fault was injected`);
        assert.deepEqual(r.problems, [], r.problems.join('\n'));
      }
    }
  });

  it('allocator.ts: a failed refcount-table entry write for a new refcount block keeps refcounts', async () => {
    // Before the fix the table entry changed in memory before its write: refcounts kept in the
    // new block were lost on disk (check: refcount 0, reference 1).
    const w = smallClusters();
    const table = await regionOf(w, 'reftable');
    for (const errno of ['EIO', 'ENOSPC'] as const) {
      const r = await runFaultCase(w, 'writeback', {
        at: 1,
        errno,
        mode: 'once',
        kinds: ['write'],
        match: (_kind, offset) => offset >= table.offset && offset < table.offset + table.length,
      });
      assert.equal(r.injected, 1);
      assert.deepEqual(r.problems, [], r.problems.join('\n'));
    }
  });
});

describe('failing disks: a failed fdatasync stays failed (file driver syncImpl, whole stack)', () => {
  for (const cache of ['writeback', 'writethrough', 'none', 'directsync'] as CacheModeName[]) {
    for (const errno of ['EIO', 'ENOSPC'] as const) {
      it(`qcow2 over the file driver, cache=${cache}, fdatasync fails once with ${errno}`, async () => {
        await withTempDir(async (dir) => {
          const file = path.join(dir, 'disk.qcow2');
          await createImage({ filename: file, format: 'qcow2', size: 4 << 20 });
          let fail = false;
          let syncs = 0;
          const syncImpl = async () => {
            syncs++;
            if (fail) {
              fail = false; // a later fdatasync would succeed: the driver must not believe it
              throw Object.assign(new Error(errno), { code: errno });
            }
          };
          const mode = cacheMode(cache);
          let driver: FileDriver;
          try {
            driver = await FileDriver.open({ filename: file, cache: mode, readOnly: false, syncImpl });
          } catch (err) {
            if (err instanceof VdiskError && err.code === 'ENOTSUP' && mode.direct) return; // no O_DIRECT here
            throw err;
          }
          const image = await formatDefinition('qcow2').open(driver, { filename: file, cache: mode, readOnly: false });
          const backend = new BlockBackend(image, { writeCache: mode.writeCache });
          const data = Buffer.alloc(65536, 0xab);
          await backend.write(0, data);
          await backend.flush();
          fail = true;
          const first = mode.writeCache ? backend.flush() : backend.write(65536, data);
          await assert.rejects(first, (err: unknown) => err instanceof VdiskError && err.code === errno);
          assert.equal(fail, false, 'the fdatasync was called and failed');
          const before = syncs;
          // Every later flush, FUA and writethrough write fails, without trusting a new fdatasync.
          await assert.rejects(backend.flush(), (err: unknown) => err instanceof VdiskError && err.code === 'EIO');
          await assert.rejects(backend.write(0, data, { fua: true }), (err: unknown) => err instanceof VdiskError);
          await assert.rejects(backend.flush(), /earlier flush failed/);
          assert.equal(syncs, before, 'no fdatasync is trusted after a failed one');
          await assert.rejects(backend.close(), (err: unknown) => err instanceof VdiskError);
          // What is on disk is consistent: no refcount below references.
          const check = await FileDriver.open({ filename: file, cache: cacheMode('writeback'), readOnly: true });
          try {
            const result = await checkQcow2(check);
            assert.equal(result.corruptions, 0, result.messages.join('\n'));
            assert.equal(result.checkErrors, 0);
          } finally {
            await check.close();
          }
        });
      });
    }
  }

  it('raw over the file driver: a failed flush fails every later flush', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'disk.raw');
      await writeFile(file, Buffer.alloc(1 << 20));
      let fail = true;
      const driver = await FileDriver.open({
        filename: file,
        cache: cacheMode('writeback'),
        readOnly: false,
        syncImpl: async () => {
          if (fail) {
            fail = false;
            throw Object.assign(new Error('EIO'), { code: 'EIO' });
          }
        },
      });
      const image = await formatDefinition('raw').open(driver, {
        filename: file,
        cache: cacheMode('writeback'),
        readOnly: false,
      });
      const backend = new BlockBackend(image, { writeCache: true });
      await backend.write(0, Buffer.alloc(4096, 1));
      await assert.rejects(backend.flush(), (err: unknown) => err instanceof VdiskError && err.code === 'EIO');
      await assert.rejects(backend.flush(), /earlier flush failed/);
      await assert.rejects(backend.close());
    });
  });
});
