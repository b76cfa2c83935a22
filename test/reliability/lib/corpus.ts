/**
 * The hostile-image corpus, generated from small valid images: every limit of
 * reference/qcow2.md and every attack of reference/semantics.md, each as one mutation of a base
 * image. Also the map of each base image's metadata, which the mutation fuzzer aims at.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { BlockBackend } from '../../../src/block/backend.js';
import { cacheMode } from '../../../src/block/cache-mode.js';
import { formatDefinition } from '../../../src/engine/formats.js';
import { geometryOf } from '../../../src/format/qcow2/codec/geometry.js';
import { decodeHeader } from '../../../src/format/qcow2/codec/header.js';
import { decodeReftableEntry } from '../../../src/format/qcow2/codec/refcount-block.js';
import {
  decodeSnapshotTable,
  encodeSnapshotTable,
  type Qcow2Snapshot,
} from '../../../src/format/qcow2/codec/snapshot-table.js';
import { RawDriver } from '../../../src/format/raw/driver.js';
import { createImage } from '../../../src/tools/create.js';
import { hasCommand } from '../../helpers/run.js';
import { FlatDriver } from './flat-driver.js';

const KiB = 1024;
const MiB = 1024 * KiB;

export interface Region {
  what: string;
  offset: number;
  length: number;
}

export interface Layout {
  clusterSize: number;
  clusterBits: number;
  version: number;
  extendedL2: boolean;
  size: number;
  headerLength: number;
  l1Offset: number;
  l1Size: number;
  reftableOffset: number;
  reftableClusters: number;
  refblocks: number[];
  /** L2 tables of the active L1, by L1 index. */
  l2Tables: { index: number; offset: number }[];
  snapshotsOffset: number;
  snapshotsSize: number;
  snapshotL1s: { offset: number; size: number }[];
  fileLength: number;
  /** Every metadata range: what the fuzzer mutates. */
  regions: Region[];
}

export interface BaseImage {
  name: string;
  bytes: Buffer;
  backing?: Buffer;
  layout: Layout;
}

export function layoutOf(bytes: Buffer): Layout {
  const cs0 = 2 ** bytes.readUInt32BE(20);
  const h = decodeHeader(bytes.subarray(0, Math.min(cs0, bytes.length)));
  const g = geometryOf(h);
  const cs = g.clusterSize;
  const refblocks: number[] = [];
  for (let i = 0; i < (h.refcountTableClusters * cs) / 8; i++) {
    const e = decodeReftableEntry(
      bytes.subarray(h.refcountTableOffset, h.refcountTableOffset + h.refcountTableClusters * cs),
      i,
      cs,
    );
    if (e) refblocks.push(e);
  }
  const l2Tables: { index: number; offset: number }[] = [];
  for (let i = 0; i < h.l1Size; i++) {
    const off = Number(bytes.readBigUInt64BE(h.l1TableOffset + i * 8) & 0x00fffffffffffe00n);
    if (off) l2Tables.push({ index: i, offset: off });
  }
  let snapshotsSize = 0;
  let snapshotL1s: { offset: number; size: number }[] = [];
  if (h.nbSnapshots > 0) {
    const t = decodeSnapshotTable(bytes.subarray(h.snapshotsOffset), h.nbSnapshots, {
      version: h.version,
      imageSize: h.size,
    });
    snapshotsSize = t.size;
    snapshotL1s = t.snapshots.map((s) => ({ offset: s.l1TableOffset, size: s.l1Size }));
  }
  const regions: Region[] = [
    { what: 'header', offset: 0, length: Math.min(cs, 4096) },
    { what: 'L1 table', offset: h.l1TableOffset, length: h.l1Size * 8 },
    { what: 'refcount table', offset: h.refcountTableOffset, length: Math.min(h.refcountTableClusters * cs, 4096) },
    ...refblocks.map((o) => ({ what: 'refcount block', offset: o, length: Math.min(cs, 4096) })),
    ...l2Tables.map((t) => ({ what: 'L2 table', offset: t.offset, length: Math.min(cs, 4096) })),
  ];
  if (snapshotsSize > 0) regions.push({ what: 'snapshot table', offset: h.snapshotsOffset, length: snapshotsSize });
  for (const s of snapshotL1s) regions.push({ what: 'snapshot L1', offset: s.offset, length: s.size * 8 });
  return {
    clusterSize: cs,
    clusterBits: h.clusterBits,
    version: h.version,
    extendedL2: g.extendedL2,
    size: h.size,
    headerLength: h.headerLength,
    l1Offset: h.l1TableOffset,
    l1Size: h.l1Size,
    reftableOffset: h.refcountTableOffset,
    reftableClusters: h.refcountTableClusters,
    refblocks,
    l2Tables,
    snapshotsOffset: h.snapshotsOffset,
    snapshotsSize,
    snapshotL1s,
    fileLength: bytes.length,
    regions: regions.filter((r) => r.length > 0),
  };
}

function pattern(length: number, seed: number): Buffer {
  const buf = Buffer.alloc(length);
  for (let i = 0; i < length; i++) buf[i] = (seed * 29 + i * 13 + (i >> 10)) & 0xff;
  return buf;
}

async function build(
  name: string,
  size: number,
  options: Record<string, string | number | boolean>,
  fill: (b: BlockBackend) => Promise<void>,
  extra: { backing?: Buffer; leaveDirty?: boolean } = {},
): Promise<BaseImage> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vdisk-corpus-'));
  try {
    const file = path.join(dir, 'base.qcow2');
    const opts = { ...options };
    if (extra.backing) {
      await writeFile(path.join(dir, 'backing.raw'), extra.backing);
      opts.backing_file = 'backing.raw';
      opts.backing_fmt = 'raw';
    }
    await createImage({ filename: file, format: 'qcow2', size, options: opts });
    const flat = new FlatDriver(await readFile(file), { name: 'base.qcow2' });
    const image = await formatDefinition('qcow2').open(flat, {
      filename: 'base.qcow2',
      cache: cacheMode('writeback'),
      readOnly: false,
      openBacking: async () => new RawDriver(new FlatDriver(extra.backing!, { readOnly: true })),
    });
    const backend = new BlockBackend(image, { writeCache: true });
    await fill(backend);
    if (extra.leaveDirty) await backend.flush();
    else await backend.close();
    const bytes = Buffer.from(flat.bytes());
    return { name, bytes, backing: extra.backing, layout: layoutOf(bytes) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** An image with an internal snapshot, made by qemu-img (vdisk does not create snapshots). */
async function snapshotBase(): Promise<BaseImage | undefined> {
  if (!hasCommand('qemu-img') || !hasCommand('qemu-io')) return undefined;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vdisk-corpus-'));
  try {
    const file = path.join(dir, 'snap.qcow2');
    const run = (cmd: string, args: string[]) => {
      const r = spawnSync(cmd, args, { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
    };
    run('qemu-img', ['create', '-q', '-f', 'qcow2', file, '1M']);
    run('qemu-io', ['-c', 'write -P 0x11 0 128k', file]);
    run('qemu-img', ['snapshot', '-c', 'first', file]);
    run('qemu-io', ['-c', 'write -P 0x22 64k 64k', '-c', 'write -P 0x33 512k 64k', file]);
    const bytes = await readFile(file);
    return { name: 'snapshot', bytes, layout: layoutOf(bytes) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

let bases: Promise<BaseImage[]> | undefined;

/** The base images, built once per process. */
export function baseImages(): Promise<BaseImage[]> {
  bases ??= (async () => {
    const list: BaseImage[] = [];
    list.push(
      await build('v3', 4 * MiB, {}, async (b) => {
        await b.write(0, pattern(192 * KiB, 1));
        await b.writeCompressed(MiB, Buffer.alloc(64 * KiB, 0x5a));
        await b.write(2 * MiB, pattern(64 * KiB, 2));
        await b.writeZeroes(2 * MiB, 64 * KiB);
        await b.write(3 * MiB + 4 * KiB, pattern(8 * KiB, 3));
      }),
    );
    list.push(
      await build('v2', MiB, { compat: '0.10' }, async (b) => {
        await b.write(0, pattern(128 * KiB, 4));
        await b.write(512 * KiB, pattern(4 * KiB, 5));
      }),
    );
    list.push(
      await build('small-clusters', 256 * KiB, { cluster_size: 512, refcount_bits: 64 }, async (b) => {
        await b.write(0, pattern(40 * KiB, 6));
        await b.write(100 * KiB, pattern(2 * KiB, 7));
      }),
    );
    list.push(
      await build('extended-l2', MiB, { extended_l2: true }, async (b) => {
        await b.write(4 * KiB, pattern(4 * KiB, 8));
        await b.write(128 * KiB, pattern(64 * KiB, 9));
      }),
    );
    list.push(
      await build('refcount-bits-1', 512 * KiB, { cluster_size: 4096, refcount_bits: 1 }, async (b) => {
        await b.write(0, pattern(64 * KiB, 10));
      }),
    );
    list.push(
      await build(
        'lazy-dirty',
        MiB,
        { lazy_refcounts: true },
        async (b) => {
          await b.write(0, pattern(128 * KiB, 11));
        },
        { leaveDirty: true },
      ),
    );
    list.push(
      await build(
        'backing',
        MiB,
        {},
        async (b) => {
          await b.write(4 * KiB, pattern(4 * KiB, 12));
        },
        { backing: pattern(MiB, 13) },
      ),
    );
    const snap = await snapshotBase();
    if (snap) list.push(snap);
    return list;
  })();
  return bases;
}

// --- mutations ---

type Mutate = (b: Buffer, L: Layout) => Buffer | undefined;

export interface HostileCase {
  name: string;
  base: string;
  mutate: Mutate;
  /** Outcomes of the read-write open that are right for this image ('opened' or a code). */
  expect?: string[];
  /** A time bound other than the default, for images at QEMU's own limits (milliseconds). */
  timeBoundMs?: number;
}

const u32 =
  (off: number, v: number): Mutate =>
  (b) => {
    b.writeUInt32BE(v >>> 0, off);
    return b;
  };
const u64 =
  (off: number, v: bigint): Mutate =>
  (b) => {
    b.writeBigUInt64BE(BigInt.asUintN(64, v), off);
    return b;
  };
const both =
  (...ms: Mutate[]): Mutate =>
  (b, L) => {
    let out = b;
    for (const m of ms) out = m(out, L) ?? out;
    return out;
  };

const TWO63 = 2n ** 63n;
const TWO64 = 2n ** 64n;
const H = {
  backingOffset: 8,
  backingSize: 16,
  clusterBits: 20,
  size: 24,
  crypt: 32,
  l1Size: 36,
  l1Offset: 40,
  reftableOffset: 48,
  reftableClusters: 56,
  nbSnapshots: 60,
  snapshotsOffset: 64,
  incompatible: 72,
  compatible: 80,
  autoclear: 88,
  refcountOrder: 96,
  headerLength: 100,
  compression: 104,
};

/** Writes header extensions at header_length (replacing whatever is there). */
const extensions =
  (exts: { type: number; data: Buffer; len?: number }[], end = true): Mutate =>
  (b, L) => {
    let off = L.headerLength;
    for (const e of exts) {
      b.writeUInt32BE(e.type >>> 0, off);
      b.writeUInt32BE((e.len ?? e.data.length) >>> 0, off + 4);
      e.data.copy(b, off + 8);
      off += 8 + Math.ceil(e.data.length / 8) * 8;
    }
    if (end) b.fill(0, off, off + 8);
    return b;
  };

/** Puts a backing file name in cluster 0 (after the extensions). */
const backingName =
  (name: string | Buffer, sizeOverride?: number): Mutate =>
  (b, L) => {
    const bytes = typeof name === 'string' ? Buffer.from(name) : name;
    const off = Math.min(L.clusterSize - bytes.length, 2048);
    bytes.copy(b, off);
    b.writeBigUInt64BE(BigInt(off), H.backingOffset);
    b.writeUInt32BE(sizeOverride ?? bytes.length, H.backingSize);
    return b;
  };

/** Sets L1 entry i (raw 64-bit value). */
const l1 =
  (i: number, v: (L: Layout) => bigint): Mutate =>
  (b, L) => {
    b.writeBigUInt64BE(BigInt.asUintN(64, v(L)), L.l1Offset + i * 8);
    return b;
  };

/** Sets entry i of the first L2 table (raw 64-bit value; the bitmap too with extended L2). */
const l2 =
  (i: number, v: (L: Layout) => bigint, bitmap?: bigint): Mutate =>
  (b, L) => {
    const t = L.l2Tables[0]!.offset;
    const size = L.extendedL2 ? 16 : 8;
    b.writeBigUInt64BE(BigInt.asUintN(64, v(L)), t + i * size);
    if (bitmap !== undefined && L.extendedL2) b.writeBigUInt64BE(bitmap, t + i * size + 8);
    return b;
  };

const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;

/** Sets refcount-table entry i. */
const reftable =
  (i: number, v: (L: Layout) => bigint): Mutate =>
  (b, L) => {
    b.writeBigUInt64BE(BigInt.asUintN(64, v(L)), L.reftableOffset + i * 8);
    return b;
  };

/** Appends a snapshot table (raw bytes) at the end, cluster-aligned, and points the header at it. */
const snapshotTable =
  (count: number, table: (L: Layout) => Buffer): Mutate =>
  (b, L) => {
    const at = Math.ceil(b.length / L.clusterSize) * L.clusterSize;
    const t = table(L);
    const out = Buffer.concat([
      b,
      Buffer.alloc(at - b.length),
      t,
      Buffer.alloc((L.clusterSize - (t.length % L.clusterSize)) % L.clusterSize),
    ]);
    out.writeUInt32BE(count, H.nbSnapshots);
    out.writeBigUInt64BE(BigInt(at), H.snapshotsOffset);
    return out;
  };

/** A snapshot table entry for an image of layout `L`, with `over` changed. */
export function snapshotRecord(L: Layout, over: Partial<Qcow2Snapshot> = {}): Qcow2Snapshot {
  return {
    l1TableOffset: L.l1Offset,
    l1Size: L.l1Size,
    id: '1',
    name: 'snap',
    dateSec: 0,
    dateNsec: 0,
    vmClockNs: 0n,
    vmStateSize: 0,
    diskSize: L.size,
    unknownExtra: Buffer.alloc(0),
    extraDataSize: 24,
    ...over,
  };
}

/** Patches fields of the first encoded snapshot entry. */
const snapEntry = (over: Partial<Qcow2Snapshot>, patch?: (t: Buffer) => void) => (L: Layout) => {
  const t = encodeSnapshotTable([snapshotRecord(L, over)]);
  patch?.(t);
  return t;
};

export function hostileCases(): HostileCase[] {
  const cases: HostileCase[] = [];
  const add = (name: string, base: string, mutate: Mutate, expect?: string[], timeBoundMs?: number) =>
    cases.push({ name, base, mutate, expect, timeBoundMs });
  const E = (...codes: string[]) => codes;

  // The fixed header, field by field.
  add('magic wrong', 'v3', u32(0, 0x514649fa), E('EINVAL'));
  for (const v of [0, 1, 4, 0xffffffff]) add(`version ${v}`, 'v3', u32(4, v), E('ENOTSUP'));
  for (const v of [0, 8, 22, 31, 32, 63, 64, 0xffffffff])
    add(`cluster_bits ${v}`, 'v3', u32(H.clusterBits, v), E('ECORRUPT', 'ENOTSUP'));
  for (const v of [0, 8, 96, 100, 108, 65536 + 8, 0xfffffff8, 0xffffffff]) {
    add(`header_length ${v}`, 'v3', u32(H.headerLength, v), E('ECORRUPT'));
  }
  add('header_length 104 (no compression byte)', 'v3', u32(H.headerLength, 104), E('opened'));
  add('header_length = cluster size', 'v3', u32(H.headerLength, 65536), E('opened', 'ECORRUPT'));
  for (const v of [65537n, 2n ** 32n, TWO63, TWO64 - 1n]) {
    add(`backing_file_offset ${v}`, 'v3', both(u64(H.backingOffset, v), u32(H.backingSize, 8)), E('ECORRUPT'));
  }
  add('backing_file_size 1024', 'v3', both(u64(H.backingOffset, 4096n), u32(H.backingSize, 1024)), E('ECORRUPT'));
  add(
    'backing_file_size 0xffffffff',
    'v3',
    both(u64(H.backingOffset, 4096n), u32(H.backingSize, 0xffffffff)),
    E('ECORRUPT'),
  );
  add('backing name past cluster 0', 'v3', both(u64(H.backingOffset, 65530n), u32(H.backingSize, 100)), E('ECORRUPT'));
  add('l1_size 0 for a non-empty disk', 'v3', u32(H.l1Size, 0), E('ECORRUPT'));
  add('l1_size 0xffffffff (n*8 overflows 32 bits)', 'v3', u32(H.l1Size, 0xffffffff), E('ENOTSUP'));
  add('l1_size at the 32 MiB limit, file small', 'v3', u32(H.l1Size, 4 * MiB), E('ECORRUPT'));
  add('l1_size one over the 32 MiB limit', 'v3', u32(H.l1Size, 4 * MiB + 1), E('ENOTSUP'));
  for (const [what, v] of [
    ['unaligned', (L: Layout) => BigInt(L.l1Offset + 8)],
    ['2^63 - 64 KiB', () => TWO63 - 65536n],
    ['2^63', () => TWO63],
    ['2^64 - 64 KiB', () => TWO64 - 65536n],
    ['2^56', () => 2n ** 56n],
    ['2^53', () => 2n ** 53n],
    ['past the end of the file', (L: Layout) => BigInt(Math.ceil(L.fileLength / 65536) * 65536 + 65536)],
  ] as [string, (L: Layout) => bigint][]) {
    // A table past the end of the file reads as zeros, as QEMU reads it.
    const pastEnd = what === 'past the end of the file' ? ['opened'] : [];
    add(`l1_table_offset ${what}`, 'v3', (b, L) => u64(H.l1Offset, v(L))(b, L), E('ECORRUPT', 'EOVERFLOW', ...pastEnd));
    add(
      `refcount_table_offset ${what}`,
      'v3',
      (b, L) => u64(H.reftableOffset, v(L))(b, L),
      E('ECORRUPT', 'EOVERFLOW', ...pastEnd),
    );
    add(
      `snapshots_offset ${what}, 1 snapshot`,
      'v3',
      (b, L) => both(u32(H.nbSnapshots, 1), u64(H.snapshotsOffset, v(L)))(b, L),
      E('ECORRUPT', 'EOVERFLOW'),
    );
  }
  add('l1 table overlapping the header', 'v3', u64(H.l1Offset, 0n), E('opened', 'ECORRUPT'));
  add('refcount table overlapping the header', 'v3', u64(H.reftableOffset, 0n), E('opened', 'ECORRUPT'));
  add('refcount_table_clusters 0', 'v3', u32(H.reftableClusters, 0), E('ECORRUPT'));
  add('refcount_table_clusters at the 8 MiB limit, file small', 'v3', u32(H.reftableClusters, 128), E('ECORRUPT'));
  add('refcount_table_clusters over the 8 MiB limit', 'v3', u32(H.reftableClusters, 129), E('ENOTSUP'));
  add('refcount_table_clusters 0xffffffff', 'v3', u32(H.reftableClusters, 0xffffffff), E('ENOTSUP'));
  add(
    '2 MiB clusters, refcount table of 4 clusters past the end',
    'v3',
    both(u32(H.clusterBits, 21), u32(H.reftableClusters, 4)),
    E('ECORRUPT'),
  );
  add('nb_snapshots 65537', 'v3', u32(H.nbSnapshots, 65537), E('ENOTSUP'));
  add('nb_snapshots 0xffffffff', 'v3', u32(H.nbSnapshots, 0xffffffff), E('ENOTSUP'));
  add(
    'nb_snapshots 65536, table past the end',
    'v3',
    both(u32(H.nbSnapshots, 65536), u64(H.snapshotsOffset, 2n ** 40n)),
    E('ECORRUPT'),
  );
  add(
    '1 snapshot at offset 0 (the header)',
    'v3',
    both(u32(H.nbSnapshots, 1), u64(H.snapshotsOffset, 0n)),
    E('ECORRUPT', 'ENOTSUP', 'EOVERFLOW'),
  );
  for (const [what, v] of [
    ['0', 0n],
    ['2^53 - 512', 2n ** 53n - 512n],
    ['2^53', 2n ** 53n],
    ['2^63', TWO63],
    ['2^64 - 1', TWO64 - 1n],
    ['1 PiB with the L1 it needs, past the end', 2n ** 50n],
  ] as [string, bigint][]) {
    add(
      `virtual size ${what}`,
      'v3',
      (b, L) => {
        u64(H.size, v)(b, L);
        if (v === 2n ** 50n) b.writeUInt32BE(2 ** 21, H.l1Size);
        return b;
      },
      v === 0n ? E('opened') : E('ECORRUPT', 'EOVERFLOW', 'ENOTSUP'),
    );
  }
  add(
    'a 1 PiB disk in a small file (L1 present)',
    'v3',
    (b, L) => {
      const at = Math.ceil(b.length / 65536) * 65536;
      const out = Buffer.concat([b, Buffer.alloc(at - b.length + 2 ** 24)]);
      for (const t of L.l2Tables) out.writeBigUInt64BE(BigInt(t.offset) | COPIED, at + t.index * 8);
      out.writeBigUInt64BE(2n ** 50n, H.size);
      out.writeUInt32BE(2 ** 21, H.l1Size);
      out.writeBigUInt64BE(BigInt(at), H.l1Offset);
      return out;
    },
    E('opened'),
  );
  for (const v of [1, 2, 3, 0xffffffff]) add(`crypt_method ${v}`, 'v3', u32(H.crypt, v), E('ENOTSUP', 'ECORRUPT'));
  for (let bit = 0; bit < 64; bit++) {
    const expect =
      bit === 0
        ? E('opened')
        : bit === 1
          ? E('ECORRUPT')
          : bit === 2 || bit >= 5
            ? E('ENOTSUP')
            : bit === 3
              ? E('ECORRUPT')
              : undefined;
    add(`incompatible bit ${bit}`, 'v3', u64(H.incompatible, 1n << BigInt(bit)), expect);
  }
  add('dirty and corrupt bits', 'v3', u64(H.incompatible, 3n), E('ECORRUPT'));
  add('every incompatible bit', 'v3', u64(H.incompatible, TWO64 - 1n), E('ENOTSUP', 'ECORRUPT'));
  add('every compatible bit', 'v3', u64(H.compatible, TWO64 - 1n), E('opened'));
  add('every autoclear bit', 'v3', u64(H.autoclear, TWO64 - 1n), E('opened', 'ECORRUPT', 'ENOTSUP'));
  for (const v of [7, 31, 0xffffffff]) add(`refcount_order ${v}`, 'v3', u32(H.refcountOrder, v), E('ECORRUPT'));
  for (const v of [0, 3, 6]) add(`refcount_order ${v} (refcounts misread)`, 'v3', u32(H.refcountOrder, v));
  add(
    'compression_type 1 without its bit',
    'v3',
    (b) => {
      b[H.compression] = 1;
      return b;
    },
    E('ECORRUPT'),
  );
  add(
    'compression_type 2',
    'v3',
    (b) => {
      b[H.compression] = 2;
      return b;
    },
    E('ENOTSUP', 'ECORRUPT'),
  );
  add('extended L2 bit with 4 KiB clusters', 'refcount-bits-1', u64(H.incompatible, 16n), E('ECORRUPT'));
  add('extended L2 bit on a standard image (entries misread)', 'v3', u64(H.incompatible, 16n));
  add('dirty bit on a lazy image (repaired on open)', 'lazy-dirty', (b) => b, E('opened'));
  add(
    'dirty bit, refcounts all zero (rebuilt on open)',
    'lazy-dirty',
    (b, L) => {
      for (const r of L.refblocks) b.fill(0, r, r + L.clusterSize);
      return b;
    },
    E('opened', 'EIO'),
  );

  // Header extensions that lie about their length.
  add(
    'extension length 0xffffffff',
    'v3',
    extensions([{ type: 0x12345678, data: Buffer.alloc(8), len: 0xffffffff }]),
    E('ECORRUPT'),
  );
  add(
    'extension running past cluster 0',
    'v3',
    extensions([{ type: 0x12345678, data: Buffer.alloc(8), len: 65536 - 112 - 7 }]),
    E('ECORRUPT'),
  );
  add('8000 empty unknown extensions, no end marker', 'v3', (b, L) => {
    for (let off = L.headerLength; off + 8 <= L.clusterSize; off += 8) {
      b.writeUInt32BE(0x0badbeef, off);
      b.writeUInt32BE(0, off + 4);
    }
    return b;
  });
  add(
    'backing format extension of 16 bytes',
    'backing',
    extensions([{ type: 0xe2792aca, data: Buffer.from('raw'.padEnd(16, 'x')) }]),
    E('ECORRUPT'),
  );
  add(
    'backing format vmdk',
    'backing',
    extensions([{ type: 0xe2792aca, data: Buffer.from('vmdk') }]),
    E('ENOTSUP', 'opened'),
  );
  add(
    'feature table filling cluster 0 with 0xff',
    'v3',
    (b, L) => {
      const len = L.clusterSize - L.headerLength - 16;
      return extensions([{ type: 0x6803f857, data: Buffer.alloc(len, 0xff) }])(b, L);
    },
    E('opened'),
  );
  const bitmaps = (nb: number, size: bigint, offset: bigint, reserved = 0) => {
    const d = Buffer.alloc(24);
    d.writeUInt32BE(nb, 0);
    d.writeUInt32BE(reserved, 4);
    d.writeBigUInt64BE(size, 8);
    d.writeBigUInt64BE(offset, 16);
    return both(u64(H.autoclear, 1n), extensions([{ type: 0x23852875, data: d }]));
  };
  add('bitmaps: 65536 bitmaps', 'v3', bitmaps(65536, 4096n, 65536n * 10n), E('ENOTSUP'));
  add('bitmaps: 0 bitmaps', 'v3', bitmaps(0, 4096n, 65536n * 10n), E('ECORRUPT'));
  add('bitmaps: directory offset unaligned', 'v3', bitmaps(1, 4096n, 65536n * 10n + 8n), E('ECORRUPT'));
  add('bitmaps: directory size huge', 'v3', bitmaps(1, 2n ** 62n, 65536n * 10n), E('ENOTSUP'));
  add('bitmaps: directory past the end of the file', 'v3', bitmaps(1, 4096n, 2n ** 40n), E('opened', 'ECORRUPT'));
  add('bitmaps: reserved field set', 'v3', bitmaps(1, 4096n, 65536n, 1), E('ECORRUPT'));
  add(
    'bitmaps extension without its autoclear bit',
    'v3',
    (b, L) => {
      bitmaps(0, 0n, 0n)(b, L);
      b.writeBigUInt64BE(0n, H.autoclear);
      return b;
    },
    E('opened'),
  );
  add(
    'data file extension and bit',
    'v3',
    both(u64(H.incompatible, 4n), extensions([{ type: 0x44415441, data: Buffer.from('/etc/shadow') }])),
    E('ENOTSUP'),
  );
  add(
    'crypto header extension without LUKS',
    'v3',
    extensions([{ type: 0x0537be77, data: Buffer.alloc(16) }]),
    E('ECORRUPT'),
  );
  add(
    'crypto header extension, offset overflowing, LUKS',
    'v3',
    both(u32(H.crypt, 2), extensions([{ type: 0x0537be77, data: Buffer.alloc(16, 0xff) }])),
    E('ENOTSUP', 'ECORRUPT', 'EOVERFLOW'),
  );

  // Backing names inside the image (the open policy itself is tested on real files).
  add('backing name of 1023 bytes that does not exist', 'v3', backingName('a'.repeat(1023)), E('ENOENT'));
  add(
    'backing name json:',
    'v3',
    backingName('json:{"file":{"driver":"file","filename":"/etc/shadow"}}'),
    E('ENOENT', 'ENOTSUP'),
  );
  add('backing name with a NUL inside', 'v3', backingName(Buffer.from('back\0ing.raw')), E('ENOENT'));
  add('backing name of size 0', 'v3', backingName('x', 0), E('opened', 'ENOENT', 'ECORRUPT'));

  // L1 entries.
  const past = (L: Layout) => BigInt(Math.ceil(L.fileLength / L.clusterSize) * L.clusterSize + 16 * L.clusterSize);
  add(
    'L1 entry past the end of the file',
    'v3',
    l1(0, (L) => past(L) | COPIED),
    E('opened', 'ECORRUPT'),
  );
  add(
    'L1 entry at 2^55',
    'v3',
    l1(0, () => (1n << 55n) | COPIED),
    E('ECORRUPT', 'EOVERFLOW'),
  );
  add(
    'L1 entry with reserved bits',
    'v3',
    l1(0, (L) => BigInt(L.l2Tables[0]!.offset) | COPIED | (1n << 60n)),
    E('ECORRUPT'),
  );
  add(
    'L1 entry unaligned',
    'v3',
    l1(0, (L) => BigInt(L.l2Tables[0]!.offset + 512) | COPIED),
    E('ECORRUPT'),
  );
  add(
    'L1 entry pointing at the header',
    'small-clusters',
    l1(0, () => 0n | COPIED | 512n),
  );
  add(
    'L1 entry pointing at the refcount table',
    'v3',
    l1(0, (L) => BigInt(L.reftableOffset) | COPIED),
  );
  add(
    'L1 entry pointing at the L1 table',
    'v3',
    l1(0, (L) => BigInt(L.l1Offset) | COPIED),
  );
  add(
    'L1 entry pointing at a refcount block',
    'v3',
    l1(0, (L) => BigInt(L.refblocks[0]!) | COPIED),
  );
  add(
    'two L1 entries sharing one L2 table',
    'small-clusters',
    l1(1, (L) => BigInt(L.l2Tables[0]!.offset) | COPIED),
  );

  // L2 entries.
  add(
    'L2 entry past the end of the file',
    'v3',
    l2(0, (L) => past(L) | COPIED),
  );
  add(
    'L2 entry at 2^56 - cluster',
    'v3',
    l2(0, () => ((1n << 56n) - 65536n) | COPIED),
  );
  add(
    'L2 entry with reserved bits',
    'v3',
    l2(0, (L) => BigInt(L.l2Tables[0]!.offset + 65536) | COPIED | 2n),
  );
  add(
    'L2 entry pointing at the header',
    'v3',
    l2(1, () => COPIED | 0n),
    undefined,
  );
  add(
    'L2 entry pointing at the L1 table',
    'v3',
    l2(0, (L) => BigInt(L.l1Offset) | COPIED),
  );
  add(
    'L2 entry pointing at the refcount table',
    'v3',
    l2(0, (L) => BigInt(L.reftableOffset) | COPIED),
  );
  add(
    'L2 entry pointing at a refcount block',
    'v3',
    l2(0, (L) => BigInt(L.refblocks[0]!) | COPIED),
  );
  add(
    'L2 entry pointing at its own L2 table',
    'v3',
    l2(0, (L) => BigInt(L.l2Tables[0]!.offset) | COPIED),
  );
  add(
    'zero flag with a host cluster past the end',
    'v3',
    l2(0, (L) => past(L) | COPIED | 1n),
  );
  add(
    'zero flag in a v2 image',
    'v2',
    l2(0, (L) => BigInt(L.l2Tables[0]!.offset + 65536) | COPIED | 1n),
  );
  const compressed = (offset: bigint, sectors: bigint) => (L: Layout) =>
    COMPRESSED | (sectors << BigInt(62 - (L.clusterBits - 8))) | offset;
  add(
    'compressed cluster past the end of the file',
    'v3',
    l2(0, (L) => compressed(past(L), 1n)(L)),
  );
  add(
    'compressed cluster with the largest sector count',
    'v3',
    l2(0, (L) => compressed(512n, (1n << BigInt(L.clusterBits - 8)) - 1n)(L)),
  );
  add('compressed cluster reading the header', 'v3', l2(0, compressed(0n, 3n)));
  add(
    'compressed cluster ending past the file',
    'v3',
    l2(0, (L) => compressed(BigInt(L.fileLength - 100), 7n)(L)),
  );
  add(
    'compressed entry with the COPIED bit',
    'v3',
    l2(0, (L) => compressed(512n, 1n)(L) | COPIED),
  );
  add(
    'compressed entry in an extended-L2 image',
    'extended-l2',
    l2(0, (L) => compressed(512n, 1n)(L), 0n),
  );
  add(
    'extended L2: allocated and zero bits both set',
    'extended-l2',
    l2(0, (L) => BigInt(L.l2Tables[0]!.offset + 65536) | COPIED, 0x00000001_00000001n),
  );
  add(
    'extended L2: allocated bits on an unallocated entry',
    'extended-l2',
    l2(3, () => 0n, 0xffffn),
  );
  add(
    'extended L2: bitmap all ones',
    'extended-l2',
    l2(2, (L) => BigInt(L.l2Tables[0]!.offset + 65536 * 4) | COPIED, TWO64 - 1n),
  );
  add('L2 table full of 0xff', 'v3', (b, L) => {
    b.fill(0xff, L.l2Tables[0]!.offset, L.l2Tables[0]!.offset + L.clusterSize);
    return b;
  });
  add('L2 table full of COPIED entries to one cluster', 'small-clusters', (b, L) => {
    const t = L.l2Tables[0]!.offset;
    for (let i = 0; i < L.clusterSize / 8; i++) b.writeBigUInt64BE(BigInt(L.l2Tables[0]!.offset) | COPIED, t + i * 8);
    return b;
  });

  // Refcount table and blocks.
  add('refcount table entry past the end of the file', 'v3', reftable(0, past), E('opened', 'ECORRUPT'));
  add(
    'refcount table entry with reserved bits',
    'v3',
    reftable(0, (L) => BigInt(L.refblocks[0]! + 1)),
    E('ECORRUPT'),
  );
  add(
    'refcount table entry unaligned',
    'v3',
    reftable(0, (L) => BigInt(L.refblocks[0]! + 512)),
    E('ECORRUPT'),
  );
  add(
    'refcount table entry at 2^55',
    'v3',
    reftable(0, () => 1n << 55n),
    E('ECORRUPT', 'EOVERFLOW'),
  );
  add(
    'refcount block is the header',
    'v3',
    reftable(0, () => 0n + 0n),
    E('opened'),
  );
  add(
    'refcount block is the L1 table',
    'v3',
    reftable(0, (L) => BigInt(L.l1Offset)),
  );
  add('refcount block all 0xff (refcounts at their maximum)', 'v3', (b, L) => {
    b.fill(0xff, L.refblocks[0]!, L.refblocks[0]! + L.clusterSize);
    return b;
  });
  add('refcount block all zero (every cluster looks free)', 'v3', (b, L) => {
    b.fill(0, L.refblocks[0]!, L.refblocks[0]! + L.clusterSize);
    return b;
  });
  add('64-bit refcounts of 2^63', 'small-clusters', (b, L) => {
    for (let i = 0; i < 8; i++) b.writeBigUInt64BE(TWO63, L.refblocks[0]! + i * 8);
    return b;
  });

  // Snapshot tables.
  add('one valid snapshot sharing the active L1', 'v3', snapshotTable(1, snapEntry({})), E('opened'));
  add(
    'snapshot extra data of 1025 bytes',
    'v3',
    snapshotTable(
      1,
      snapEntry({}, (t) => t.writeUInt32BE(1025, 36)),
    ),
    E('ENOTSUP'),
  );
  add(
    'snapshot extra data of 0xffffffff bytes',
    'v3',
    snapshotTable(
      1,
      snapEntry({}, (t) => t.writeUInt32BE(0xffffffff, 36)),
    ),
    E('ENOTSUP'),
  );
  add(
    'snapshot id and name of 65535 bytes past the end',
    'v3',
    snapshotTable(
      1,
      snapEntry({}, (t) => {
        t.writeUInt16BE(0xffff, 12);
        t.writeUInt16BE(0xffff, 14);
      }),
    ),
    E('ECORRUPT'),
  );
  add(
    'snapshot L1 unaligned',
    'v3',
    snapshotTable(1, (L) => snapEntry({ l1TableOffset: L.l1Offset + 8 })(L)),
    E('ECORRUPT'),
  );
  add('snapshot L1 over 32 MiB', 'v3', snapshotTable(1, snapEntry({ l1Size: 4 * MiB + 1 })), E('ENOTSUP'));
  add('snapshot L1 past the end', 'v3', snapshotTable(1, snapEntry({ l1TableOffset: 2 ** 40 })), E('ECORRUPT'));
  add(
    'snapshot L1 at 2^62',
    'v3',
    snapshotTable(1, (L) => {
      const t = snapEntry({})(L);
      t.writeBigUInt64BE(2n ** 62n, 0);
      return t;
    }),
    E('ECORRUPT', 'EOVERFLOW'),
  );
  add(
    'snapshot L1 at offset 0 (claims the header cluster), lazy refcounts',
    'v3',
    both(snapshotTable(1, snapEntry({ l1TableOffset: 0, l1Size: 1 })), u64(H.compatible, 1n)),
    E('opened', 'ECORRUPT'),
  );
  add('65536 snapshots declared, one present', 'v3', snapshotTable(65536, snapEntry({})), E('ECORRUPT'));
  add(
    '65536 minimal snapshots',
    'v3',
    snapshotTable(65536, (L) => {
      const one = encodeSnapshotTable([snapshotRecord(L, { id: '', name: '' })]);
      const entry = Buffer.concat([one, Buffer.alloc((8 - (one.length % 8)) % 8)]);
      return Buffer.concat(Array.from({ length: 65536 }, () => entry));
    }),
    E('opened'),
    8000, // QEMU's maximum: opened twice and checked, each step linear in the count
  );
  add(
    'snapshot v3 entry without disk size',
    'v3',
    snapshotTable(
      1,
      snapEntry({}, (t) => t.writeUInt32BE(0, 36)),
    ),
    E('opened', 'ECORRUPT'),
  );

  // On the snapshot image qemu-img made: its tables lied about.
  add('qemu snapshot: L1 entry of the snapshot past the end', 'snapshot', (b, L) => {
    b.writeBigUInt64BE(past(L), L.snapshotL1s[0]!.offset);
    return b;
  });
  add('qemu snapshot: active L2 shared without refcount (COPIED on a shared table)', 'snapshot', (b, L) => {
    b.writeBigUInt64BE(b.readBigUInt64BE(L.snapshotL1s[0]!.offset) | COPIED, L.l1Offset);
    return b;
  });
  add('qemu snapshot: table truncated', 'snapshot', (b, L) => b.subarray(0, L.snapshotsOffset + 20), E('ECORRUPT'));

  // Truncated files.
  add('file of 100 bytes', 'v3', (b) => b.subarray(0, 100), E('ECORRUPT'));
  add('file of 4 bytes', 'v3', (b) => b.subarray(0, 4), E('EINVAL', 'ECORRUPT'));
  add('file ending inside the L1 table', 'v3', (b, L) => b.subarray(0, L.l1Offset + 4), E('ECORRUPT'));
  add('file ending inside an L2 table', 'v3', (b, L) => b.subarray(0, L.l2Tables[0]!.offset + 100), E('opened'));
  add('file ending inside a data cluster', 'v3', (b, L) => b.subarray(0, L.l2Tables[0]!.offset + 65536 + 1000));
  add(
    'a valid image grown by 8 MiB of garbage',
    'v3',
    (b) => Buffer.concat([b, Buffer.alloc(8 * MiB, 0xa5)]),
    E('opened'),
  );
  add('valid image (control)', 'v3', (b) => b, E('opened'));
  add('valid v2 image (control)', 'v2', (b) => b, E('opened'));
  add('valid image with a backing file (control)', 'backing', (b) => b, E('opened'));
  add('valid snapshot image (control)', 'snapshot', (b) => b, E('opened'));
  return cases;
}
