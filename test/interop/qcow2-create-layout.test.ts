/**
 * planCreateLayout must place every structure where qemu-img create 7.2 does. Each case builds a
 * whole image from the layout with the vdisk codecs and compares it with qemu-img's file, byte
 * for byte (metadata clusters and file length for the big sparse ones).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { encodeHeaderCluster } from '../../src/format/qcow2/codec/header.js';
import { encodeL1 } from '../../src/format/qcow2/codec/l1-entry.js';
import { encodeL2 } from '../../src/format/qcow2/codec/l2-entry.js';
import { encodeReftableEntry, setRefcount } from '../../src/format/qcow2/codec/refcount-block.js';
import { type CreateLayout, type CreateLayoutOptions, planCreateLayout } from '../../src/format/qcow2/create/layout.js';

function hasQemuImg(): boolean {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const QEMU = hasQemuImg();
const SKIP = QEMU ? false : 'qemu-img is not installed: the layout comparison with QEMU did not run';
if (!QEMU) console.warn(`SKIPPED: ${SKIP}`);

const dir = mkdtempSync(join(tmpdir(), 'vdisk-qcow2-layout-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Writes the image the layout describes; returns the byte ranges holding metadata. */
function writeImage(path: string, layout: CreateLayout): { offset: number; length: number }[] {
  const g = layout.geometry;
  const cs = g.clusterSize;
  const h = layout.header;
  const regions: { offset: number; length: number }[] = [];
  const fd = openSync(path, 'w');
  const put = (buf: Buffer, offset: number) => {
    writeSync(fd, buf, 0, buf.length, offset);
    regions.push({ offset, length: buf.length });
  };
  try {
    for (const t of layout.staleRefcountTables) {
      const old = Buffer.alloc(t.entries.length * 8);
      t.entries.forEach((off, i) => {
        encodeReftableEntry(old, i, off, cs);
      });
      writeSync(fd, old, 0, old.length, t.offset);
    }
    for (const z of layout.zeroedRanges) writeSync(fd, Buffer.alloc(z.length), 0, z.length, z.offset);
    put(encodeHeaderCluster(h, {}), 0);
    const reftable = Buffer.alloc(h.refcountTableClusters * cs);
    layout.refcountTable.forEach((off, i) => {
      if (!off) return;
      encodeReftableEntry(reftable, i, off, cs);
      const block = Buffer.alloc(cs);
      const first = i * g.refcountBlockEntries;
      for (const r of layout.allocated) {
        const s = Math.max(first, r.offset / cs);
        const e = Math.min(first + g.refcountBlockEntries, (r.offset + r.length) / cs);
        for (let c = s; c < e; c++) setRefcount(block, c - first, g.refcountOrder, 1);
      }
      put(block, off);
    });
    put(reftable, h.refcountTableOffset);
    const l1 = Buffer.alloc(h.l1Size * 8);
    for (const t of layout.l2Tables) {
      encodeL1(l1, t.l1Index, { l2Offset: t.offset, copied: true }, g);
      const l2 = Buffer.alloc(cs);
      for (const run of layout.dataRuns) {
        for (let o = 0; o < run.length; o += cs) {
          const guest = run.guestOffset + o;
          if (Math.floor(guest / g.l2Coverage) !== t.l1Index) continue;
          const sub = g.extendedL2 ? { alloc: 0, zero: 0 } : undefined;
          const entry = { kind: 'data' as const, host: run.hostOffset + o, copied: true, ...(sub ? { sub } : {}) };
          encodeL2(l2, Math.floor(guest / cs) % g.l2Entries, entry, g);
        }
      }
      put(l2, t.offset);
    }
    if (h.l1Size > 0) put(l1, h.l1TableOffset);
    ftruncateSync(fd, layout.fileLength);
  } finally {
    closeSync(fd);
  }
  return regions;
}

function readAt(fd: number, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  const n = readSync(fd, buf, 0, length, offset);
  return buf.subarray(0, n);
}

/** Compares two files over the given ranges, or entirely when `ranges` is undefined. */
function compareFiles(a: string, b: string, ranges?: { offset: number; length: number }[]): void {
  const size = statSync(a).size;
  assert.equal(statSync(b).size, size, 'file length');
  const fa = openSync(a, 'r');
  const fb = openSync(b, 'r');
  try {
    const chunks = ranges ?? [{ offset: 0, length: size }];
    for (const r of chunks) {
      for (let off = r.offset; off < r.offset + r.length; off += 4 * 1024 * 1024) {
        const len = Math.min(4 * 1024 * 1024, r.offset + r.length - off);
        const x = readAt(fa, off, len);
        const y = readAt(fb, off, len);
        if (!x.equals(y)) {
          const at = x.findIndex((v, i) => v !== y[i]);
          assert.fail(
            `files differ at byte ${off + at}: vdisk ${x.subarray(at, at + 16).toString('hex')}, qemu ${y.subarray(at, at + 16).toString('hex')}`,
          );
        }
      }
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const cases: CreateLayoutOptions[] = [
  { size: 64 * MiB },
  { size: 0 },
  { size: 512 },
  { size: 64 * MiB + 512 },
  { size: 64 * MiB, version: 2 },
  { size: GiB, clusterBits: 9 },
  { size: 16 * GiB, clusterBits: 9 },
  { size: 100 * GiB, clusterBits: 12 },
  { size: 10 * 1024 * GiB },
  { size: 1024 * 1024 * GiB },
  { size: 1024 * 1024 * GiB, clusterBits: 21 },
  { size: 30 * GiB, clusterBits: 9, refcountOrder: 0 },
  { size: 4 * GiB, clusterBits: 9, refcountOrder: 6 },
  { size: 10 * GiB, clusterBits: 9, refcountOrder: 6 },
  { size: 100 * 1024 * GiB, refcountOrder: 6 },
  { size: 64 * MiB, preallocation: 'metadata' },
  { size: GiB, preallocation: 'metadata' },
  { size: 1000 * MiB, preallocation: 'metadata' },
  { size: 512, preallocation: 'metadata' },
  { size: 8 * MiB, clusterBits: 9, refcountOrder: 0, preallocation: 'metadata' },
  { size: 8 * MiB + 512, clusterBits: 9, refcountOrder: 6, preallocation: 'metadata' },
  { size: MiB + 512, extendedL2: true, preallocation: 'metadata' },
  { size: MiB + 2048, extendedL2: true, preallocation: 'metadata' },
  { size: 64 * MiB, clusterBits: 14, extendedL2: true, preallocation: 'metadata' },
  { size: 64 * MiB, version: 2, preallocation: 'metadata' },
  { size: 4 * GiB, clusterBits: 21, preallocation: 'metadata' },
  { size: 64 * MiB, preallocation: 'falloc' },
  { size: 64 * MiB + 512, preallocation: 'falloc' },
  { size: 0, preallocation: 'falloc' },
  { size: 16 * MiB, clusterBits: 9, preallocation: 'falloc' },
  { size: 16 * MiB, extendedL2: true, preallocation: 'falloc' },
  { size: 16 * MiB, preallocation: 'full' },
  { size: 4 * MiB, clusterBits: 9, refcountOrder: 6, preallocation: 'full' },
];

function qemuOptions(o: CreateLayoutOptions): string {
  const opts = [
    `cluster_size=${2 ** (o.clusterBits ?? 16)}`,
    `refcount_bits=${2 ** (o.refcountOrder ?? 4)}`,
    `preallocation=${o.preallocation ?? 'off'}`,
    `compat=${o.version === 2 ? '0.10' : '1.1'}`,
  ];
  if (o.extendedL2) opts.push('extended_l2=on');
  return opts.join(',');
}

describe('qcow2 create layout against qemu-img create', { skip: SKIP }, () => {
  for (const o of cases) {
    it(qemuOptions(o) + ` size=${o.size}`, () => {
      const theirs = join(dir, 'qemu.qcow2');
      const ours = join(dir, 'vdisk.qcow2');
      rmSync(theirs, { force: true });
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', qemuOptions(o), theirs, String(o.size)]);
      const layout = planCreateLayout(o);
      const regions = writeImage(ours, layout);
      for (const t of layout.staleRefcountTables) regions.push({ offset: t.offset, length: t.entries.length * 8 });
      compareFiles(ours, theirs, layout.fileLength > 256 * MiB ? regions : undefined);
    });
  }

  it('refuses the sizes qemu-img refuses', () => {
    const file = join(dir, 'too-big.qcow2');
    assert.throws(() =>
      execFileSync(
        'qemu-img',
        ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', file, String(128 * GiB + 512)],
        {
          stdio: 'ignore',
        },
      ),
    );
    assert.throws(
      () => planCreateLayout({ size: 128 * GiB + 512, clusterBits: 9 }),
      /too large for file format 'qcow2'/,
    );
  });
});
