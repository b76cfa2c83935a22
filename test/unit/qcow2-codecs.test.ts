import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { VdiskError } from '../../src/block/errors.js';
import {
  l1EntriesFor,
  l1Index,
  l2Index,
  makeGeometry,
  refcountBlockIndex,
  refcountTableIndex,
  subclusterIndex,
} from '../../src/format/qcow2/codec/geometry.js';
import { decodeL1, encodeL1 } from '../../src/format/qcow2/codec/l1-entry.js';
import {
  compressedSectors,
  decodeL2,
  encodeL2,
  type L2Entry,
  subclusterKind,
} from '../../src/format/qcow2/codec/l2-entry.js';
import {
  decodeReftableEntry,
  encodeReftableEntry,
  getRefcount,
  maxRefcount,
  setRefcount,
} from '../../src/format/qcow2/codec/refcount-block.js';
import {
  decodeSnapshotTable,
  encodeSnapshotTable,
  type Qcow2Snapshot,
  snapshotEntryLength,
  snapshotTableSize,
} from '../../src/format/qcow2/codec/snapshot-table.js';
import { bitsOf, readU64, readU64Approx, readU64Bits, writeU64 } from '../../src/util/u64.js';

const TWO53 = 2 ** 53;
const U64 = (1n << 64n) - 1n;

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof VdiskError) return err.code;
    throw err;
  }
  return 'ok';
}

function throwsCode(fn: () => unknown, expected: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof VdiskError, `expected VdiskError, got ${err}`);
    assert.equal(err.code, expected, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

function u64Buf(value: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(value);
  return b;
}

describe('u64', () => {
  it('round-trips every value below 2^53', () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), (v) => {
        const b = Buffer.alloc(8);
        writeU64(b, 0, v);
        assert.equal(b.readBigUInt64BE(0), BigInt(v));
        assert.equal(readU64(b, 0), v);
      }),
    );
  });

  it('refuses 2^53 and more with EOVERFLOW naming the field', () => {
    throwsCode(
      () => readU64(u64Buf(2n ** 53n), 0, 'Virtual disk size'),
      'EOVERFLOW',
      /Virtual disk size 0x20000000000000/,
    );
    throwsCode(() => readU64(u64Buf(U64), 0), 'EOVERFLOW');
    assert.equal(readU64(u64Buf(2n ** 53n - 1n), 0), TWO53 - 1);
    assert.equal(readU64Approx(u64Buf(2n ** 63n), 0), 2 ** 63);
  });

  it('refuses to write what is not a safe non-negative integer', () => {
    const b = Buffer.alloc(8);
    throwsCode(() => writeU64(b, 0, -1), 'EOVERFLOW');
    throwsCode(() => writeU64(b, 0, 1.5), 'EOVERFLOW');
    throwsCode(() => writeU64(b, 0, TWO53), 'EOVERFLOW');
  });

  it('extracts bit fields like BigInt does', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: U64 }),
        fc.integer({ min: 0, max: 63 }),
        fc.integer({ min: 1, max: 53 }),
        (v, lo, w) => {
          const hi = Math.min(63, lo + w - 1);
          const b = u64Buf(v);
          const expected = Number((v >> BigInt(lo)) & ((1n << BigInt(hi - lo + 1)) - 1n));
          assert.equal(bitsOf(b.readUInt32BE(0), b.readUInt32BE(4), lo, hi), expected);
          assert.equal(readU64Bits(b, 0, lo, hi), expected);
        },
      ),
    );
  });
});

describe('geometry', () => {
  it('derives the numbers of a 64 KiB-cluster image', () => {
    const g = makeGeometry({ version: 3, clusterBits: 16, refcountOrder: 4 });
    assert.equal(g.clusterSize, 65536);
    assert.equal(g.l2Entries, 8192);
    assert.equal(g.l2Coverage, 512 * 1024 * 1024);
    assert.equal(g.refcountBlockEntries, 32768);
    assert.equal(g.refcountBlockCoverage, 2 * 1024 ** 3);
    assert.equal(g.subclusterSize, 65536);
    assert.equal(l1EntriesFor(g, 64 * 1024 * 1024), 1);
    assert.equal(l1EntriesFor(g, 10 * 1024 ** 4), 20480);
    const off = 5 * 2 ** 29 + 7 * 65536 + 100;
    assert.equal(l1Index(g, off), 5);
    assert.equal(l2Index(g, off), 7);
    assert.equal(refcountTableIndex(g, 3 * 2 ** 31 + 65536), 3);
    assert.equal(refcountBlockIndex(g, 3 * 2 ** 31 + 65536), 1);
  });

  it('derives extended-L2 and sub-byte refcount numbers', () => {
    const g = makeGeometry({ version: 3, clusterBits: 16, refcountOrder: 0, extendedL2: true });
    assert.equal(g.l2Entries, 4096);
    assert.equal(g.l2EntrySize, 16);
    assert.equal(g.subclusterSize, 2048);
    assert.equal(subclusterIndex(g, 65536 * 3 + 2048 * 5 + 1), 5);
    assert.equal(g.refcountBlockEntries, 524288);
    throwsCode(() => makeGeometry({ version: 3, clusterBits: 13, refcountOrder: 4, extendedL2: true }), 'EINVAL');
    throwsCode(() => makeGeometry({ version: 3, clusterBits: 22, refcountOrder: 4 }), 'EINVAL');
  });
});

describe('L1 entries', () => {
  const g = makeGeometry({ version: 3, clusterBits: 16, refcountOrder: 4 });

  it('round-trips aligned offsets below 2^53', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 37 - 1 }), fc.boolean(), fc.nat(15), (cluster, copied, index) => {
        const entry = { l2Offset: cluster * 65536, copied: copied && cluster !== 0 };
        const table = Buffer.alloc(128);
        encodeL1(table, index, entry, g);
        assert.deepEqual(decodeL1(table, index, g), entry);
      }),
    );
  });

  it('rejects hostile entries', () => {
    const t = (v: bigint) => () => decodeL1(u64Buf(v), 0, g);
    for (const bit of [0, 1, 8, 56, 57, 62]) throwsCode(t((1n << BigInt(bit)) | 0x10000n), 'ECORRUPT', /reserved bits/);
    throwsCode(t(0x10200n), 'ECORRUPT', /L2 table offset 0x10200 unaligned \(L1 index: 0x0\)/);
    throwsCode(t(1n << 63n), 'ECORRUPT', /COPIED/);
    throwsCode(t(1n << 53n), 'EOVERFLOW');
    throwsCode(t((1n << 56n) - 65536n), 'EOVERFLOW');
    throwsCode(() => encodeL1(Buffer.alloc(8), 0, { l2Offset: 512, copied: false }, g), 'EINVAL');
    throwsCode(() => encodeL1(Buffer.alloc(8), 0, { l2Offset: 0, copied: true }, g), 'EINVAL');
  });
});

/** An independent reading of the spec with BigInt, to check decodeL2 against. */
function referenceL2(e: bigint, bitmap: bigint, cb: number, extended: boolean, dataFile: boolean): L2Entry | string {
  const copied = ((e >> 63n) & 1n) === 1n;
  if ((e >> 62n) & 1n) {
    if (copied) return 'ECORRUPT';
    if (extended && bitmap !== 0n) return 'ECORRUPT';
    const x = BigInt(62 - (cb - 8));
    const host = e & ((1n << x) - 1n);
    if (host >= 1n << 56n) return 'ECORRUPT';
    if (host >= 1n << 53n) return 'EOVERFLOW';
    const sectors = Number((e >> x) & ((1n << BigInt(cb - 8)) - 1n)) + 1;
    return { kind: 'compressed', host: Number(host), sectors, length: sectors * 512 - (Number(host) % 512) };
  }
  if (e & (extended ? 0x3f000000000001ffn : 0x3f000000000001fen)) return 'ECORRUPT';
  const host = e & 0x00fffffffffffe00n;
  if (host >= 1n << 53n) return 'EOVERFLOW';
  if (host % (1n << BigInt(cb)) !== 0n) return 'ECORRUPT';
  const h = Number(host);
  if (!extended) {
    if (e & 1n) return { kind: 'zero', host: h, copied };
    if (h === 0 && !(dataFile && copied)) return { kind: 'unallocated' };
    return { kind: 'data', host: h, copied };
  }
  const alloc = Number(bitmap & 0xffffffffn);
  const zero = Number(bitmap >> 32n);
  if (h === 0 && !(dataFile && copied)) return alloc ? 'ECORRUPT' : { kind: 'unallocated', sub: { alloc: 0, zero } };
  if (alloc & zero) return 'ECORRUPT';
  return { kind: 'data', host: h, copied, sub: { alloc, zero } };
}

/** Mostly well-formed 64-bit L2 words, sometimes with stray bits. */
const l2Word = fc.oneof(
  fc.bigInt({ min: 0n, max: U64 }),
  fc
    .tuple(
      fc.bigInt({ min: 0n, max: (1n << 47n) - 1n }),
      fc.constantFrom(0n, 1n << 63n, 1n << 62n),
      fc.constantFrom(0n, 0n, 0n, 1n, 1n << 9n, 1n << 57n, 1n << 54n),
      fc.nat(21),
    )
    .map(([cluster, flags, stray, shift]) => (((cluster << BigInt(shift)) & U64) | flags | stray) & U64),
);
const bitmapWord = fc.oneof(
  fc.constant(0n),
  fc.bigInt({ min: 0n, max: U64 }),
  fc.bigInt({ min: 0n, max: 0xffffffffn }),
  fc.bigInt({ min: 0n, max: 0xffffffffn }).map((v) => v << 32n),
);

describe('L2 entries', () => {
  it('decode like an independent reading of the spec', () => {
    fc.assert(
      fc.property(
        l2Word,
        bitmapWord,
        fc.integer({ min: 9, max: 21 }),
        fc.boolean(),
        fc.boolean(),
        (word, bitmap, cb, extendedWanted, dataFile) => {
          const extended = extendedWanted && cb >= 14;
          const g = makeGeometry({
            version: 3,
            clusterBits: cb,
            refcountOrder: 4,
            extendedL2: extended,
            externalDataFile: dataFile,
          });
          const table = Buffer.alloc(16);
          table.writeBigUInt64BE(word, 0);
          table.writeBigUInt64BE(bitmap, 8);
          const expected = referenceL2(word, extended ? bitmap : 0n, cb, extended, dataFile);
          if (typeof expected === 'string') {
            assert.equal(
              code(() => decodeL2(table, 0, g)),
              expected,
            );
            return;
          }
          const got = decodeL2(table, 0, g);
          assert.deepEqual(got, expected);
          // Whatever decodes encodes back to the same bytes (an unallocated entry loses stray COPIED).
          const again = Buffer.alloc(16);
          encodeL2(again, 0, got, g);
          assert.equal(again.readBigUInt64BE(0), got.kind === 'unallocated' ? 0n : word);
          if (extended) assert.equal(again.readBigUInt64BE(8), bitmap);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('round-trips every kind for every cluster size', () => {
    fc.assert(
      fc.property(fc.integer({ min: 9, max: 21 }), fc.nat(63), fc.boolean(), fc.nat(), (cb, idx, copied, seed) => {
        const g = makeGeometry({ version: 3, clusterBits: cb, refcountOrder: 4 });
        const cs = 2 ** cb;
        const host = (1 + (seed % 2 ** 20)) * cs;
        const x = 62 - (cb - 8);
        const cHost = seed % 2 ** Math.min(x, 53);
        const sectors = 1 + (seed % 2 ** (cb - 8));
        const entries: L2Entry[] = [
          { kind: 'unallocated' },
          { kind: 'zero', host: 0, copied: false },
          { kind: 'zero', host, copied },
          { kind: 'data', host, copied },
          { kind: 'compressed', host: cHost, sectors, length: sectors * 512 - (cHost % 512) },
        ];
        const table = Buffer.alloc(64 * 8);
        for (const e of entries) {
          encodeL2(table, idx, e, g);
          assert.deepEqual(decodeL2(table, idx, g), e);
        }
      }),
    );
  });

  it('round-trips extended entries with subcluster bitmaps', () => {
    const g = makeGeometry({ version: 3, clusterBits: 16, refcountOrder: 4, extendedL2: true });
    fc.assert(
      fc.property(fc.nat(0xffffffff), fc.nat(0xffffffff), fc.boolean(), fc.nat(2 ** 30), (a, z, copied, c) => {
        const alloc = a >>> 0;
        const zero = (z & ~alloc) >>> 0;
        const table = Buffer.alloc(16 * 4);
        const data: L2Entry = { kind: 'data', host: (c + 1) * 65536, copied, sub: { alloc, zero } };
        encodeL2(table, 3, data, g);
        assert.deepEqual(decodeL2(table, 3, g), data);
        const unalloc: L2Entry = { kind: 'unallocated', sub: { alloc: 0, zero: z >>> 0 } };
        encodeL2(table, 2, unalloc, g);
        assert.deepEqual(decodeL2(table, 2, g), unalloc);
        for (let sc = 0; sc < 32; sc++) {
          const k = subclusterKind(data, sc);
          assert.equal(k, (zero >>> sc) & 1 ? 'zero' : (alloc >>> sc) & 1 ? 'data' : 'unallocated');
        }
      }),
    );
  });

  it('rejects what the format cannot hold when encoding', () => {
    const v2 = makeGeometry({ version: 2, clusterBits: 16, refcountOrder: 4 });
    const ext = makeGeometry({ version: 3, clusterBits: 16, refcountOrder: 4, extendedL2: true });
    const t = Buffer.alloc(16);
    throwsCode(() => encodeL2(t, 0, { kind: 'zero', host: 0, copied: false }, v2), 'EINVAL', /version 3/);
    throwsCode(() => encodeL2(t, 0, { kind: 'zero', host: 0, copied: false }, ext), 'EINVAL');
    throwsCode(() => encodeL2(t, 0, { kind: 'data', host: 0, copied: true }, v2), 'EINVAL');
    throwsCode(() => encodeL2(t, 0, { kind: 'data', host: 512, copied: true }, v2), 'EINVAL');
    throwsCode(() => encodeL2(t, 0, { kind: 'compressed', host: 0, sectors: 0, length: 0 }, v2), 'EINVAL');
    throwsCode(() => encodeL2(t, 0, { kind: 'compressed', host: 0, sectors: 257, length: 0 }, v2), 'EINVAL');
    throwsCode(() => encodeL2(t, 0, { kind: 'compressed', host: 2 ** 54, sectors: 1, length: 0 }, v2), 'EINVAL');
    throwsCode(
      () => encodeL2(t, 0, { kind: 'data', host: 65536, copied: true, sub: { alloc: 1, zero: 1 } }, ext),
      'EINVAL',
    );
  });

  it('names the L2 index in corruption messages', () => {
    const g = makeGeometry({ version: 3, clusterBits: 16, refcountOrder: 4 });
    const t = Buffer.alloc(8 * 8);
    t.writeBigUInt64BE(0x8000000000010200n, 5 * 8);
    throwsCode(() => decodeL2(t, 5, g), 'ECORRUPT', /Cluster allocation offset 0x10200 unaligned \(L2 index: 0x5\)/);
  });

  it('computes compressed spans as QEMU does', () => {
    assert.equal(compressedSectors(0x50000, 512), 1);
    assert.equal(compressedSectors(0x50000, 513), 2);
    assert.equal(compressedSectors(0x501ff, 2), 2);
    assert.equal(compressedSectors(0x50100, 100), 1);
  });
});

describe('refcount blocks', () => {
  for (let order = 0; order <= 6; order++) {
    it(`reads back what it writes at ${2 ** order} bits, leaving neighbours alone`, () => {
      const entries = (512 * 8) / 2 ** order;
      fc.assert(
        fc.property(
          fc.array(fc.tuple(fc.nat(entries - 1), fc.integer({ min: 0, max: maxRefcount(order) })), { maxLength: 40 }),
          (writes) => {
            const block = Buffer.alloc(512);
            const model = new Map<number, number>();
            for (const [i, v] of writes) {
              setRefcount(block, i, order, v);
              model.set(i, v);
            }
            for (let i = 0; i < entries; i++) assert.equal(getRefcount(block, i, order), model.get(i) ?? 0);
          },
        ),
      );
    });
  }

  it('packs sub-byte refcounts with entry 0 in the least significant bits', () => {
    const b = Buffer.alloc(4);
    setRefcount(b, 0, 0, 1);
    setRefcount(b, 3, 0, 1);
    assert.equal(b[0], 0b1001);
    setRefcount(b, 1, 1, 3);
    assert.equal(b[0], 0b1101);
    setRefcount(b, 3, 2, 0xa);
    assert.equal(b[1], 0xa0);
    setRefcount(b, 1, 4, 0x1234);
    assert.deepEqual([...b.subarray(2)], [0x12, 0x34]);
  });

  it('refuses values beyond the width, and 64-bit refcounts of 2^53 or more', () => {
    throwsCode(() => setRefcount(Buffer.alloc(8), 0, 0, 2), 'EINVAL');
    throwsCode(() => setRefcount(Buffer.alloc(8), 0, 4, 65536), 'EINVAL');
    assert.equal(maxRefcount(5), 0xffffffff);
    assert.equal(maxRefcount(6), Number.MAX_SAFE_INTEGER);
    throwsCode(() => getRefcount(u64Buf(1n << 53n), 0, 6), 'EOVERFLOW');
    assert.equal(getRefcount(u64Buf((1n << 53n) - 1n), 0, 6), TWO53 - 1);
  });

  it('codes refcount-table entries', () => {
    const t = Buffer.alloc(16);
    encodeReftableEntry(t, 1, 0x30000, 65536);
    assert.equal(decodeReftableEntry(t, 1, 65536), 0x30000);
    assert.equal(decodeReftableEntry(t, 0, 65536), 0);
    throwsCode(() => decodeReftableEntry(u64Buf(0x30001n), 0, 65536), 'ECORRUPT', /reserved bits/);
    throwsCode(() => decodeReftableEntry(u64Buf(0x30200n), 0, 65536), 'ECORRUPT', /unaligned/);
    throwsCode(() => decodeReftableEntry(u64Buf(1n << 60n), 0, 65536), 'EOVERFLOW');
    throwsCode(() => encodeReftableEntry(t, 0, 100, 65536), 'EINVAL');
  });
});

describe('snapshot table', () => {
  const snapshot = fc.record({
    l1TableOffset: fc.nat(2 ** 30).map((c) => c * 512),
    l1Size: fc.nat(1 << 22),
    id: fc.string({ maxLength: 12 }).map((s) => s.replace(/\0/g, '')),
    name: fc.string({ maxLength: 40 }).map((s) => s.replace(/\0/g, '')),
    dateSec: fc.nat(0xffffffff),
    dateNsec: fc.nat(999_999_999),
    vmClockNs: fc.bigInt({ min: 0n, max: U64 }),
    vmStateSize: fc.maxSafeNat(),
    diskSize: fc.maxSafeNat(),
    icount: fc.option(fc.bigInt({ min: 0n, max: U64 - 1n }), { nil: undefined }),
    unknownExtra: fc.uint8Array({ maxLength: 30 }).map((a) => Buffer.from(a)),
  });

  it('round-trips what it encodes', () => {
    fc.assert(
      fc.property(fc.array(snapshot, { maxLength: 6 }), (list) => {
        const snaps: Qcow2Snapshot[] = list.map((s) => {
          const { icount, ...rest } = s;
          const out: Qcow2Snapshot = { ...rest, extraDataSize: 24 + s.unknownExtra.length };
          if (icount !== undefined) out.icount = icount;
          return out;
        });
        const buf = encodeSnapshotTable(snaps);
        assert.equal(buf.length, snapshotTableSize(snaps));
        const back = decodeSnapshotTable(buf, snaps.length, { version: 3, imageSize: 1 });
        assert.deepEqual(back.snapshots, snaps);
        assert.equal(back.size, buf.length);
        assert.deepEqual(back.incomplete, []);
      }),
    );
  });

  it('reads old entries the way QEMU does', () => {
    // One entry without extra data: 32-bit VM state size, disk size from the image.
    const b = Buffer.alloc(48);
    b.writeBigUInt64BE(0x50000n, 0);
    b.writeUInt32BE(1, 8);
    b.writeUInt16BE(1, 12);
    b.writeUInt16BE(3, 14);
    b.writeUInt32BE(1234, 32);
    b.write('1sn1', 40);
    assert.equal(snapshotEntryLength(b, 0), 44);
    const t = decodeSnapshotTable(b, 1, { version: 3, imageSize: 65536 });
    const s = t.snapshots[0]!;
    assert.equal(s.id, '1');
    assert.equal(s.name, 'sn1');
    assert.equal(s.vmStateSize, 1234);
    assert.equal(s.diskSize, 65536);
    assert.equal(s.icount, undefined);
    assert.deepEqual(t.incomplete, [0]);
    assert.deepEqual(decodeSnapshotTable(b, 1, { version: 2, imageSize: 1 }).incomplete, []);
  });

  it('refuses tables that lie or exceed QEMU limits', () => {
    const b = Buffer.alloc(64);
    b.writeUInt32BE(1025, 36);
    throwsCode(
      () => decodeSnapshotTable(b, 1, { version: 3, imageSize: 0 }),
      'ENOTSUP',
      /Too much extra metadata in snapshot table entry 0/,
    );
    const c = Buffer.alloc(64);
    c.writeUInt16BE(100, 14);
    throwsCode(() => decodeSnapshotTable(c, 1, { version: 3, imageSize: 0 }), 'ECORRUPT', /beyond the end/);
    throwsCode(() => decodeSnapshotTable(Buffer.alloc(40), 2, { version: 3, imageSize: 0 }), 'ECORRUPT');
    throwsCode(() => decodeSnapshotTable(Buffer.alloc(0), 65537, { version: 3, imageSize: 0 }), 'ENOTSUP');
    // 600 entries of ~128 KiB each pass 64 MiB.
    const big = Buffer.alloc(600 * (40 + 1024 + 65535 * 2 + 8));
    let off = 0;
    for (let i = 0; i < 600; i++) {
      big.writeUInt32BE(1024, off + 36);
      big.writeUInt16BE(65535, off + 12);
      big.writeUInt16BE(65535, off + 14);
      off = Math.ceil((off + snapshotEntryLength(big, off)) / 8) * 8;
    }
    throwsCode(() => decodeSnapshotTable(big, 600, { version: 3, imageSize: 0 }), 'ENOTSUP', /too big/);
  });
});
