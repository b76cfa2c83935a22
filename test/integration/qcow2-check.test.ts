/**
 * `vdisk check` for qcow2 without QEMU: images made by vdisk check clean; images damaged here
 * (with the codecs) give qemu-img's exit statuses and messages, and `-r all` leaves them clean
 * with the data written before intact; hostile tables are bounded; a dirty image opens writable
 * after the repair on open.
 */
import assert from 'node:assert/strict';
import { open, readFile, truncate } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { cacheMode } from '../../src/block/cache-mode.js';
import { formatCheckHuman, formatCheckJson } from '../../src/cli/render/check.js';
import { formatDefinition } from '../../src/engine/formats.js';
import { openImage } from '../../src/engine/open.js';
import { checkQcow2 } from '../../src/format/qcow2/check/check.js';
import { makeGeometry } from '../../src/format/qcow2/codec/geometry.js';
import { decodeHeader } from '../../src/format/qcow2/codec/header.js';
import { decodeL1, encodeL1 } from '../../src/format/qcow2/codec/l1-entry.js';
import { decodeL2, encodeL2 } from '../../src/format/qcow2/codec/l2-entry.js';
import { decodeReftableEntry, setRefcount } from '../../src/format/qcow2/codec/refcount-block.js';
import { encodeSnapshotTable, type Qcow2Snapshot } from '../../src/format/qcow2/codec/snapshot-table.js';
import { MemoryDriver } from '../../src/io/memory.js';
import { type CheckImageOptions, type CheckOutcome, checkExitCode, checkImage } from '../../src/tools/check.js';
import { createImage } from '../../src/tools/create.js';
import { vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const CS = 65536;

interface Layout {
  l1Offset: number;
  l1Size: number;
  reftableOffset: number;
  refblock0: number;
  l2Offset: number;
  version: number;
}

async function readAt(file: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, offset);
    return buf;
  } finally {
    await fh.close();
  }
}

async function writeAt(file: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

const g = makeGeometry({ version: 3, clusterBits: 16, refcountOrder: 4 });

async function layoutOf(file: string): Promise<Layout> {
  const h = decodeHeader(await readAt(file, 0, CS));
  const reftable = await readAt(file, h.refcountTableOffset, 8);
  const l1 = await readAt(file, h.l1TableOffset, 8);
  return {
    l1Offset: h.l1TableOffset,
    l1Size: h.l1Size,
    reftableOffset: h.refcountTableOffset,
    refblock0: decodeReftableEntry(reftable, 0, CS),
    l2Offset: decodeL1(l1, 0, g).l2Offset,
    version: h.version,
  };
}

/** A 64 MiB qcow2 image with 1 MiB of 0xaa at 0 and 64 KiB of 0xbb at 4 MiB, written by vdisk. */
async function makeImage(file: string, options: Record<string, string | boolean> = {}): Promise<void> {
  await createImage({ filename: file, format: 'qcow2', size: 64 * MiB, options });
  const backend = await openImage(file, { format: 'qcow2' });
  try {
    await backend.write(0, Buffer.alloc(MiB, 0xaa));
    await backend.write(4 * MiB, Buffer.alloc(CS, 0xbb));
  } finally {
    await backend.close();
  }
}

async function expectData(file: string): Promise<void> {
  const backend = await openImage(file, { format: 'qcow2', readOnly: true });
  try {
    assert.ok(
      (await backend.read(0, MiB)).every((b) => b === 0xaa),
      'the 0xaa data reads back',
    );
    assert.ok(
      (await backend.read(4 * MiB, CS)).every((b) => b === 0xbb),
      'the 0xbb data reads back',
    );
  } finally {
    await backend.close();
  }
}

async function check(
  file: string,
  options: CheckImageOptions = {},
): Promise<{ outcome: CheckOutcome; code: number; messages: string[] }> {
  const messages: string[] = [];
  const outcome = await checkImage(file, { ...options, onMessage: (m) => messages.push(m) });
  return { outcome, code: checkExitCode(outcome), messages };
}

/** The host offset of L2 entry `index` of the first L2 table. */
async function dataOffset(file: string, index: number): Promise<number> {
  const l = await layoutOf(file);
  const e = decodeL2(await readAt(file, l.l2Offset + index * 8, 8), 0, g);
  assert.equal(e.kind, 'data');
  return (e as { host: number }).host;
}

async function setRefcountOf(file: string, cluster: number, value: number): Promise<void> {
  const l = await layoutOf(file);
  const block = await readAt(file, l.refblock0, CS);
  setRefcount(block, cluster, 4, value);
  await writeAt(file, l.refblock0, block);
}

async function setL2Raw(file: string, index: number, high: number, low: number): Promise<void> {
  const l = await layoutOf(file);
  const e = Buffer.alloc(8);
  e.writeUInt32BE(high >>> 0, 0);
  e.writeUInt32BE(low >>> 0, 4);
  await writeAt(file, l.l2Offset + index * 8, e);
}

describe('vdisk check: images made by vdisk', () => {
  it("checks a fresh image and a written one clean, with qemu-img's counts", async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'a.qcow2');
      await createImage({ filename: file, format: 'qcow2', size: 64 * MiB });
      const empty = await check(file);
      assert.equal(empty.code, 0);
      assert.deepEqual(empty.messages, []);
      assert.equal(empty.outcome.report?.imageEndOffset, 4 * CS);
      assert.equal(empty.outcome.report?.allocatedClusters, 0);
      await makeImage(file);
      const r = await check(file);
      assert.equal(r.code, 0);
      assert.deepEqual(r.messages, []);
      const c = r.outcome.report!;
      assert.equal(c.totalClusters, 1024);
      assert.equal(c.allocatedClusters, 17);
      assert.equal(c.checkErrors, 0);
      assert.match(formatCheckHuman(c), /^No errors were found on the image\.\n17\/1024 = 1\.66% allocated/);
      const json = JSON.parse(formatCheckJson(c));
      assert.equal(json.format, 'qcow2');
      assert.equal(json.filename, file);
      assert.equal(json.corruptions, undefined, 'zero counts are left out, as qemu-img does');
    });
  });

  it('checks images with lazy refcounts, v2 and 512-byte clusters clean', async () => {
    await withTempDir(async (dir) => {
      for (const [name, options] of [
        ['lazy', { lazy_refcounts: true }],
        ['v2', { compat: '0.10' }],
        ['small', { cluster_size: '512' }],
        ['refcount8', { refcount_bits: '8' }],
      ] as const) {
        const file = path.join(dir, `${name}.qcow2`);
        await makeImage(file, options as Record<string, string | boolean>);
        const r = await check(file);
        assert.equal(r.code, 0, `${name}: ${r.messages.join('\n')}`);
      }
    });
  });

  it('says raw has no checks (exit status 63)', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'r.img');
      await createImage({ filename: file, format: 'raw', size: MiB });
      assert.deepEqual(await checkImage(file), { unsupported: true });
      const r = await vdisk(['check', file]);
      assert.equal(r.code, 63);
      assert.equal(r.stderr, 'vdisk: This image format does not support checks\n');
      const q = await vdisk(['check', '-f', 'qcow2', file]);
      assert.equal(q.code, 1);
      assert.match(q.stderr, /Could not open .*: Image is not in qcow2 format/);
    });
  });
});

describe('vdisk check: damaged images', () => {
  it('finds a leaked cluster (exit 3) and frees it with -r leaks', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'a.qcow2');
      await makeImage(file);
      const length = (await readFile(file)).length;
      await truncate(file, length + CS);
      const leaked = length / CS;
      await setRefcountOf(file, leaked, 1);
      const r = await check(file);
      assert.equal(r.code, 3);
      assert.deepEqual(r.messages, [`Leaked cluster ${leaked} refcount=1 reference=0`]);
      const fixed = await check(file, { repair: 'leaks' });
      assert.equal(fixed.code, 0);
      assert.deepEqual(fixed.outcome.repaired, { leaks: 1, corruptions: 0 });
      assert.equal(fixed.outcome.report?.leaksFixed, 1);
      assert.equal((await check(file)).code, 0);
      await expectData(file);
    });
  });

  it('finds a refcount too high and a wrong COPIED flag', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'a.qcow2');
      await makeImage(file);
      const host = await dataOffset(file, 2);
      await setRefcountOf(file, host / CS, 2);
      const r = await check(file);
      assert.equal(r.code, 2);
      assert.equal(r.outcome.report?.leaks, 1);
      assert.equal(r.outcome.report?.corruptions, 1);
      assert.ok(r.messages.includes(`Leaked cluster ${host / CS} refcount=2 reference=1`));
      assert.ok(r.messages.some((m) => m.startsWith('ERROR OFLAG_COPIED data cluster: l2_entry=8')));
      assert.equal((await check(file, { repair: 'leaks' })).code, 0);
      await expectData(file);
    });
  });

  it('rebuilds the refcounts when a refcount is 0 (-r leaks cannot)', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'a.qcow2');
      await makeImage(file);
      const host = await dataOffset(file, 5);
      await setRefcountOf(file, host / CS, 0);
      const r = await check(file);
      assert.equal(r.code, 2);
      assert.ok(r.messages.includes(`ERROR cluster ${host / CS} refcount=0 reference=1`));
      const leaks = await check(file, { repair: 'leaks' });
      assert.equal(leaks.code, 1);
      assert.equal(leaks.outcome.failure, 'Input/output error');
      assert.ok(leaks.messages.includes('ERROR need to rebuild refcount structures'));
      const before = (await readFile(file)).length;
      const all = await check(file, { repair: 'all' });
      assert.equal(all.code, 0, all.messages.join('\n'));
      assert.ok(all.messages.includes('Rebuilding refcount structure'));
      assert.ok((await layoutOf(file)).reftableOffset >= before, 'the new refcount table is after the old end');
      assert.equal((await check(file)).code, 0);
      await expectData(file);
    });
  });

  it('repairs an L2 entry pointing past the end of the file (it reads as zeros)', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'a.qcow2');
      await makeImage(file);
      await setL2Raw(file, 3, 0x80000000, 0x10000000);
      const r = await check(file);
      assert.equal(r.code, 2);
      assert.ok(
        r.messages.includes(
          'ERROR: counting reference for region exceeding the end of the file by one cluster or more: ' +
            'offset 0x10000000 size 0x10000',
        ),
      );
      assert.equal((await check(file, { repair: 'leaks' })).code, 2);
      const all = await check(file, { repair: 'all' });
      assert.equal(all.code, 0, all.messages.join('\n'));
      const backend = await openImage(file, { format: 'qcow2', readOnly: true });
      try {
        assert.ok((await backend.read(3 * CS, CS)).every((b) => b === 0));
        assert.ok((await backend.read(0, 3 * CS)).every((b) => b === 0xaa));
        assert.ok((await backend.read(4 * CS, MiB - 4 * CS)).every((b) => b === 0xaa));
      } finally {
        await backend.close();
      }
    });
  });

  it('repairs an unaligned L2 table offset in the L1 table', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'a.qcow2');
      await makeImage(file);
      const l = await layoutOf(file);
      const e = Buffer.alloc(8);
      encodeL1(e, 0, { l2Offset: l.l2Offset, copied: true }, g);
      e.writeUInt32BE(e.readUInt32BE(4) + 0x200, 4);
      await writeAt(file, l.l1Offset, e);
      const r = await check(file);
      assert.equal(r.code, 2);
      assert.deepEqual(r.messages, [
        `ERROR l2_offset=${(l.l2Offset + 0x200).toString(16)}: Table is not cluster aligned; L1 entry corrupted`,
      ]);
      assert.equal((await check(file, { repair: 'all' })).code, 0);
      assert.equal((await check(file)).code, 0);
      await expectData(file);
    });
  });

  it('counts and repairs an L2 entry naming the refcount table as QEMU does', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'a.qcow2');
      await makeImage(file);
      const l = await layoutOf(file);
      const e = Buffer.alloc(8);
      encodeL2(e, 0, { kind: 'data', host: l.reftableOffset, copied: true }, g);
      await writeAt(file, l.l2Offset + 3 * 8, e);
      const r = await check(file);
      assert.equal(r.code, 2);
      assert.ok(r.messages.includes(`ERROR cluster ${l.reftableOffset / CS} refcount=1 reference=2`));
      assert.equal((await check(file, { repair: 'all' })).code, 0);
      assert.equal((await check(file)).code, 0);
    });
  });

  for (const [name, low] of [
    ['unaligned', 0x200],
    ['with reserved bits', 0x1],
    ['zero', -1],
  ] as const) {
    it(`rebuilds the refcounts for a refcount table entry ${name}`, async () => {
      await withTempDir(async (dir) => {
        const file = path.join(dir, 'a.qcow2');
        await makeImage(file);
        const l = await layoutOf(file);
        const e = Buffer.alloc(8);
        if (low >= 0) e.writeUInt32BE(l.refblock0 + low, 4);
        await writeAt(file, l.reftableOffset, e);
        const r = await check(file);
        assert.equal(r.code, name === 'unaligned' ? 1 : 2, r.messages.slice(0, 5).join('\n'));
        const all = await check(file, { repair: 'all' });
        assert.equal(all.code, 0, all.messages.join('\n'));
        assert.equal((await check(file)).code, 0);
        await expectData(file);
      });
    });
  }

  it('clears the corrupt bit once the image is repaired', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'a.qcow2');
      await makeImage(file);
      const bits = Buffer.alloc(8);
      bits.writeUInt32BE(2, 4); // corrupt
      await writeAt(file, 72, bits);
      await assert.rejects(openImage(file, { format: 'qcow2' }), /marked corrupt/);
      assert.equal((await check(file)).code, 0, 'the check itself finds nothing');
      assert.equal((await check(file, { repair: 'leaks' })).code, 0);
      assert.equal((await readAt(file, 72, 8)).readUInt32BE(4), 0);
      const backend = await openImage(file, { format: 'qcow2' });
      await backend.close();
    });
  });
});

describe('vdisk check: dirty images', () => {
  it('repairs a dirty image with stale lazy refcounts when it is opened writable', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'a.qcow2');
      await makeImage(file, { lazy_refcounts: true });
      // What a crash leaves: the dirty bit set and refcounts that never reached the disk.
      const bits = Buffer.alloc(8);
      bits.writeUInt32BE(1, 4);
      await writeAt(file, 72, bits);
      const host = await dataOffset(file, 7);
      await setRefcountOf(file, host / CS, 0);
      const r = await check(file);
      assert.equal(r.code, 2);
      const backend = await openImage(file, { format: 'qcow2' });
      try {
        assert.ok((await backend.read(0, MiB)).every((b) => b === 0xaa));
        await backend.write(8 * MiB, Buffer.alloc(CS, 0xcc));
      } finally {
        await backend.close();
      }
      assert.equal((await readAt(file, 72, 8)).readUInt32BE(4), 0, 'the dirty bit is clear');
      assert.equal((await check(file)).code, 0);
      await expectData(file);
    });
  });

  it('opens a dirty image read-only without repairing it', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'a.qcow2');
      await makeImage(file, { lazy_refcounts: true });
      const bits = Buffer.alloc(8);
      bits.writeUInt32BE(1, 4);
      await writeAt(file, 72, bits);
      const before = await readFile(file);
      const backend = await openImage(file, { format: 'qcow2', readOnly: true });
      await backend.close();
      assert.ok(before.equals(await readFile(file)));
    });
  });
});

describe('vdisk check: hostile tables', () => {
  it('judges an L2 table named by every L1 entry once', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'a.qcow2');
      await createImage({ filename: file, format: 'qcow2', size: 4 * 1024 * 1024 * MiB });
      const backend = await openImage(file, { format: 'qcow2' });
      await backend.write(0, Buffer.alloc(MiB, 0xaa));
      await backend.close();
      const l = await layoutOf(file);
      const l1 = Buffer.alloc(l.l1Size * 8);
      for (let i = 0; i < l.l1Size; i++) encodeL1(l1, i, { l2Offset: l.l2Offset, copied: true }, g);
      await writeAt(file, l.l1Offset, l1);
      const r = await check(file);
      assert.equal(r.code, 2);
      const c = r.outcome.report!;
      assert.equal(c.allocatedClusters, 16 * l.l1Size);
      assert.ok(r.messages.includes(`ERROR cluster ${l.l2Offset / CS} refcount=1 reference=${l.l1Size}`));
    });
  });

  it('stops when snapshot L1 tables add up to more than the file', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'a.qcow2');
      await makeImage(file);
      // 2048 snapshots, each claiming the whole 32 MiB L1 limit at the start of the file.
      const length = (await readFile(file)).length;
      await truncate(file, 40 * MiB);
      const snapshots: Qcow2Snapshot[] = [];
      for (let i = 0; i < 2048; i++) {
        snapshots.push({
          l1TableOffset: 0,
          l1Size: (32 * MiB) / 8,
          id: String(i + 1),
          name: `s${i}`,
          dateSec: 0,
          dateNsec: 0,
          vmClockNs: 0n,
          vmStateSize: 0,
          diskSize: 64 * MiB,
          unknownExtra: Buffer.alloc(0),
          extraDataSize: 24,
        });
      }
      const table = encodeSnapshotTable(snapshots);
      const at = Math.ceil(length / CS) * CS;
      await writeAt(file, at, table);
      const head = Buffer.alloc(12);
      head.writeUInt32BE(snapshots.length, 0);
      head.writeUInt32BE(0, 4);
      head.writeUInt32BE(at, 8);
      await writeAt(file, 60, head);
      const started = Date.now();
      const r = await check(file);
      assert.equal(r.code, 1);
      assert.equal(r.outcome.failure, 'File too large');
      assert.ok(Date.now() - started < 20000, 'the check stops early');
    });
  });
});

/** Records the writes and flushes a repair makes, over an in-memory copy of the image. */
class Recorder extends MemoryDriver {
  readonly log: ({ kind: 'write'; offset: number; data: Buffer } | { kind: 'flush' })[] = [];

  override async write(offset: number, buf: Buffer): Promise<void> {
    this.log.push({ kind: 'write', offset, data: Buffer.from(buf) });
    await super.write(offset, buf);
  }

  override async flush(): Promise<void> {
    this.log.push({ kind: 'flush' });
    await super.flush();
  }
}

async function memoryImage(bytes: Buffer, ops: Recorder['log'] = []): Promise<MemoryDriver> {
  const m = new MemoryDriver({ length: 0 });
  await m.write(0, bytes);
  for (const op of ops) if (op.kind === 'write') await m.write(op.offset, op.data);
  return m;
}

/**
 * The states a power loss during the repair can leave: everything up to a flush, plus any subset
 * (all of them for small windows, else each prefix and each single write) of the writes after it.
 */
function crashStates(log: Recorder['log']): Recorder['log'][] {
  const states: Recorder['log'][] = [];
  let durable: Recorder['log'] = [];
  let window: Recorder['log'] = [];
  const flushWindow = () => {
    const n = window.length;
    const subsets: number[][] = [];
    if (n <= 6) {
      for (let mask = 0; mask < 1 << n; mask++) subsets.push([...Array(n).keys()].filter((i) => (mask >> i) & 1));
    } else {
      for (let k = 0; k <= n; k++) subsets.push([...Array(k).keys()]);
      for (let i = 0; i < n; i++) subsets.push([i]);
    }
    for (const s of subsets) states.push([...durable, ...s.map((i) => window[i]!)]);
    durable = [...durable, ...window];
    window = [];
  };
  for (const op of log) {
    if (op.kind === 'flush') flushWindow();
    else window.push(op);
  }
  flushWindow();
  return states;
}

async function readGuest(file: MemoryDriver, offset: number, length: number): Promise<Buffer> {
  const image = await formatDefinition('qcow2').open(file, {
    filename: 'crashed',
    cache: cacheMode('writeback'),
    readOnly: true,
  });
  const buf = Buffer.alloc(length);
  await image.read(offset, buf);
  return buf;
}

describe('vdisk check: a repair cut short by a power loss', () => {
  const cases: { name: string; damage: (file: string) => Promise<void> }[] = [
    {
      name: 'a rebuild of the refcounts',
      damage: async (file) => setRefcountOf(file, (await dataOffset(file, 5)) / CS, 0),
    },
    {
      name: 'a leak and a COPIED flag',
      damage: async (file) => setRefcountOf(file, (await dataOffset(file, 2)) / CS, 2),
    },
    {
      name: 'an entry past the end and an unaligned L2 table offset',
      damage: async (file) => {
        await setL2Raw(file, 9, 0x80000000, 0x10000000);
        const l = await layoutOf(file);
        const e = Buffer.alloc(8);
        encodeL1(e, 0, { l2Offset: l.l2Offset, copied: true }, g);
        e.writeUInt32BE(e.readUInt32BE(4) + 0x200, 4);
        await writeAt(file, l.l1Offset, e);
      },
    },
  ];
  for (const c of cases) {
    it(`leaves no state worse than before: ${c.name}`, async () => {
      await withTempDir(async (dir) => {
        const file = path.join(dir, 'a.qcow2');
        await makeImage(file);
        await c.damage(file);
        const original = await readFile(file);
        const before = await checkQcow2(await memoryImage(original));
        assert.ok(before.corruptions + before.leaks > 0, 'the damage shows');
        const recorder = new Recorder({ length: 0 });
        await recorder.write(0, original);
        recorder.log.length = 0;
        const repaired = await checkQcow2(recorder, { repair: 'all' });
        assert.equal(repaired.corruptions + repaired.checkErrors, 0, repaired.messages.join('\n'));
        const states = crashStates(recorder.log);
        assert.ok(states.length > 2);
        for (const [n, ops] of states.entries()) {
          const state = await memoryImage(original, ops);
          const found = await checkQcow2(state);
          const label = `state ${n} of ${states.length}:\n${found.messages.slice(0, 10).join('\n')}`;
          assert.equal(found.failure, undefined, label);
          assert.ok(found.corruptions <= before.corruptions, `more corruption than before in ${label}`);
          const again = await checkQcow2(state, { repair: 'all' });
          assert.equal(again.corruptions + again.checkErrors, 0, `the repair of ${label} failed`);
          assert.equal((await checkQcow2(state)).corruptions, 0);
          assert.ok(
            (await readGuest(state, 0, 9 * CS)).every((b) => b === 0xaa),
            `data lost in ${label}`,
          );
          assert.ok(
            (await readGuest(state, 4 * MiB, CS)).every((b) => b === 0xbb),
            `data lost in ${label}`,
          );
        }
      });
    });
  }
});
