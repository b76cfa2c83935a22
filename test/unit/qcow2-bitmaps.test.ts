/**
 * The persistent bitmaps' pure parts: the directory and table-entry codecs (QEMU's constraints,
 * its refusal messages), and the in-memory bits of one bitmap (ranges at a granularity, runs,
 * merges across granularities, resizes, and chunks read lazily from what is stored).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  BITMAP_FLAG_AUTO,
  BITMAP_FLAG_IN_USE,
  type BitmapDirectoryEntry,
  bitmapTableSize,
  decodeBitmapDirectory,
  decodeBitmapTableEntry,
  encodeBitmapDirectory,
  encodeBitmapTableEntry,
} from '../../src/format/qcow2/codec/bitmap-directory.js';
import { DirtyBitmap, type StoredChunk } from '../../src/format/qcow2/image/dirty-bitmap.js';

const CS = 65536;
const SIZE = 64 * 1024 * 1024;

function entry(name: string, over: Partial<BitmapDirectoryEntry> = {}): BitmapDirectoryEntry {
  return { name, tableOffset: 0x30000, tableSize: 1, flags: BITMAP_FLAG_AUTO, granularityBits: 16, ...over };
}

async function runs(b: DirtyBitmap): Promise<[number, number][]> {
  const out: [number, number][] = [];
  for (let pos = 0; pos < b.size; ) {
    const r = await b.run(pos, b.size - pos);
    if (r.dirty) out.push([r.offset, r.length]);
    pos += r.length;
  }
  return out;
}

describe('bitmap directory codec', () => {
  it('round-trips entries, each padded to 8 bytes', () => {
    const entries = [
      entry('b0'),
      entry('a-longer-name', { flags: BITMAP_FLAG_IN_USE, granularityBits: 9, tableSize: 2 }),
    ];
    const dir = encodeBitmapDirectory(entries);
    assert.equal(dir.length, 32 + 40);
    assert.deepEqual(decodeBitmapDirectory(dir, 2, CS, SIZE), entries);
  });

  it("refuses what QEMU's bitmap_list_load refuses, with its messages", () => {
    const dir = encodeBitmapDirectory([entry('b0')]);
    assert.equal(decodeBitmapDirectory(dir, 2, CS, SIZE), 'Less bitmaps found than specified in header extension');
    assert.equal(decodeBitmapDirectory(dir, 0, CS, SIZE), 'More bitmaps found than specified in header extension');
    assert.equal(decodeBitmapDirectory(dir.subarray(0, 20), 1, CS, SIZE), 'Broken bitmap directory');
    const bad = (over: Partial<BitmapDirectoryEntry>) =>
      decodeBitmapDirectory(encodeBitmapDirectory([entry('b0', over)]), 1, CS, SIZE);
    const constraints = "Bitmap 'b0' doesn't satisfy the constraints";
    assert.equal(bad({ flags: 4 | BITMAP_FLAG_AUTO }), constraints);
    assert.equal(bad({ granularityBits: 8 }), constraints);
    assert.equal(bad({ granularityBits: 32 }), constraints);
    assert.equal(bad({ tableOffset: 0x30001 }), constraints);
    assert.equal(bad({ tableSize: 0 }), constraints);
    // A table too small for the image is refused unless the bitmap is in use (not stored since a resize).
    const small = (flags: number) =>
      decodeBitmapDirectory(encodeBitmapDirectory([entry('b0', { granularityBits: 9, flags })]), 1, 512, SIZE);
    assert.equal(small(BITMAP_FLAG_AUTO), constraints);
    assert.ok(Array.isArray(small(BITMAP_FLAG_IN_USE)));
    assert.equal(bad({ flags: BITMAP_FLAG_IN_USE, tableSize: 0x20000000 / CS + 1 }), constraints);
    const extra = encodeBitmapDirectory([entry('b0')]);
    extra.writeUInt32BE(8, 20);
    assert.equal(
      decodeBitmapDirectory(Buffer.concat([extra, Buffer.alloc(8)]), 1, CS, SIZE),
      'Bitmap extra data is not supported',
    );
  });

  it('decodes table entries: zeros, ones, data, and the reserved bits QEMU refuses', () => {
    const t = Buffer.alloc(8 * 5);
    encodeBitmapTableEntry(t, 0, 0);
    t.writeUInt32BE(1, 12);
    encodeBitmapTableEntry(t, 2, 0x1_0003_0000);
    t.writeUInt32BE(0x30001, 28);
    t.writeUInt32BE(0x01000000, 32);
    assert.deepEqual(decodeBitmapTableEntry(t, 0, CS), { kind: 'zeros' });
    assert.deepEqual(decodeBitmapTableEntry(t, 1, CS), { kind: 'ones' });
    assert.deepEqual(decodeBitmapTableEntry(t, 2, CS), { kind: 'data', offset: 0x1_0003_0000 });
    assert.equal(decodeBitmapTableEntry(t, 3, CS).kind, 'invalid');
    assert.equal(decodeBitmapTableEntry(t, 4, CS).kind, 'invalid');
  });

  it('sizes tables as QEMU does', () => {
    assert.equal(bitmapTableSize(SIZE, 16, CS), 1);
    assert.equal(bitmapTableSize(SIZE, 9, CS), 1);
    assert.equal(bitmapTableSize(SIZE, 9, 512), 32);
    assert.equal(bitmapTableSize(2 ** 40, 9, 512), 2 ** 19);
  });
});

describe('dirty bitmap bits', () => {
  it('sets every granule a range touches, and reports runs', async () => {
    const b = new DirtyBitmap({ name: 'b', granularityBits: 16, clusterSize: CS, size: SIZE, enabled: true });
    await b.setRange(100 * 1024, 10 * 1024);
    await b.setRange(5 * 1024 * 1024, 1);
    await b.setRange(SIZE - 1, 1);
    assert.deepEqual(await runs(b), [
      [65536, 65536],
      [5 * 1024 * 1024, 65536],
      [SIZE - 65536, 65536],
    ]);
    assert.equal(b.chunkCount, 1);
    const chunk = await b.chunk(0);
    assert.ok(chunk !== 'zeros');
    // Bit i is bit i % 8 of byte i / 8, as QEMU serialises it.
    assert.equal(chunk[0], 0b10);
    b.clear();
    assert.ok(await b.isEmpty());
  });

  it('merges a bitmap of another granularity by the bytes it covers', async () => {
    const fine = new DirtyBitmap({ name: 'f', granularityBits: 9, clusterSize: 512, size: SIZE, enabled: true });
    await fine.setRange(20 * 1024 * 1024 + 512, 512);
    await fine.setRange(30 * 1024 * 1024, 3 * 1024 * 1024);
    assert.equal(fine.chunkCount, 32);
    const coarse = new DirtyBitmap({ name: 'c', granularityBits: 21, clusterSize: CS, size: SIZE, enabled: false });
    await coarse.merge(fine);
    assert.deepEqual(await runs(coarse), [
      [20 * 1024 * 1024, 2 * 1024 * 1024],
      [30 * 1024 * 1024, 4 * 1024 * 1024],
    ]);
  });

  it('reads stored chunks only when asked, all-ones entries trimmed to the last bit', async () => {
    const asked: number[] = [];
    const base = async (i: number): Promise<StoredChunk> => {
      asked.push(i);
      return i === 0 ? 'ones' : 'zeros';
    };
    const size = 1000 * 512 + 100; // 1001 bits in one 512-byte chunk
    const b = new DirtyBitmap({ name: 'b', granularityBits: 9, clusterSize: 512, size, enabled: true, base });
    assert.deepEqual(asked, []);
    const chunk = await b.chunk(0);
    assert.ok(chunk !== 'zeros');
    assert.equal(chunk[125], 0b1);
    assert.equal(chunk[126], 0);
    assert.deepEqual(await runs(b), [[0, size]]);
  });

  it('follows a shrink and a growth: dropped bits stay dropped, new bits are clear', async () => {
    const b = new DirtyBitmap({
      name: 'b',
      granularityBits: 9,
      clusterSize: 512,
      size: 8 * 1024 * 1024,
      enabled: true,
    });
    await b.setRange(0, 8 * 1024 * 1024);
    await b.resize(1024 * 1024 + 512);
    await b.resize(8 * 1024 * 1024);
    assert.deepEqual(await runs(b), [[0, 1024 * 1024 + 512]]);
  });
});
