import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VdiskError } from '../../src/block/errors.js';
import {
  AUTOCLEAR_BITMAPS,
  EXT_BITMAPS,
  EXT_CRYPTO_HEADER,
  EXT_FEATURE_TABLE,
  HEADER,
} from '../../src/format/qcow2/codec/constants.js';
import {
  decodeHeader,
  encodeHeader,
  encodeHeaderCluster,
  peekClusterBits,
  type Qcow2Header,
} from '../../src/format/qcow2/codec/header.js';
import {
  decodeHeaderExtensions,
  encodeExtension,
  encodeHeaderExtensions,
} from '../../src/format/qcow2/codec/header-extensions.js';
import { planCreateLayout } from '../../src/format/qcow2/create/layout.js';
import { refcountMetadataBlocks } from '../../src/format/qcow2/create/qemu-allocator.js';

function throwsCode(fn: () => unknown, expected: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof VdiskError, `expected VdiskError, got ${err}`);
    assert.equal(err.code, expected, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

const MiB = 1024 * 1024;

/** Cluster 0 of a fresh 64 MiB image with 64 KiB clusters, as qemu-img writes it. */
function cluster0(opts: Parameters<typeof planCreateLayout>[0] = { size: 64 * MiB }, backingFile?: string): Buffer {
  const ext = backingFile ? { backingFile, backingFormat: 'raw' } : {};
  return encodeHeaderCluster(planCreateLayout(opts).header, ext);
}

function mutate(fn: (b: Buffer) => void, base = cluster0()): Buffer {
  const b = Buffer.from(base);
  fn(b);
  return b;
}

describe('header decode', () => {
  it('decodes what it encodes', () => {
    const h = decodeHeader(cluster0());
    assert.equal(h.version, 3);
    assert.equal(h.clusterBits, 16);
    assert.equal(h.size, 64 * MiB);
    assert.equal(h.l1Size, 1);
    assert.equal(h.l1TableOffset, 0x30000);
    assert.equal(h.refcountTableOffset, 0x10000);
    assert.equal(h.refcountTableClusters, 1);
    assert.equal(h.headerLength, 112);
    assert.equal(h.refcountOrder, 4);
    assert.deepEqual(encodeHeader(h), cluster0().subarray(0, 112));
    const v2 = decodeHeader(cluster0({ size: 64 * MiB, version: 2 }));
    assert.equal(v2.headerLength, 72);
    assert.equal(v2.refcountOrder, 4);
    assert.equal(encodeHeader(v2).length, 72);
  });

  it('keeps unknown header fields', () => {
    const h = decodeHeader(cluster0());
    const withUnknown: Qcow2Header = { ...h, unknownFields: Buffer.from('ABCDEFGH') };
    const b = encodeHeaderCluster(withUnknown, {});
    const back = decodeHeader(b);
    assert.equal(back.headerLength, 120);
    assert.deepEqual(back.unknownFields, Buffer.from('ABCDEFGH'));
    assert.equal(decodeHeaderExtensions(b, back).featureNames.length, 8);
  });

  it('accepts a 104-byte v3 header (compression type absent)', () => {
    const b = mutate((x) => {
      x.writeUInt32BE(104, HEADER.headerLength);
      x.copy(x, 104, 112, 1024);
    });
    const h = decodeHeader(b);
    assert.equal(h.compressionType, 0);
    assert.equal(decodeHeaderExtensions(b, h).featureNames[0]?.name, 'dirty bit');
  });

  const cases: [string, (b: Buffer) => void, string, RegExp][] = [
    ['bad magic', (b) => b.writeUInt32BE(0x514649fa, 0), 'EINVAL', /^Image is not in qcow2 format$/],
    ['version 1', (b) => b.writeUInt32BE(1, 4), 'ENOTSUP', /^Unsupported qcow2 version 1$/],
    ['version 4', (b) => b.writeUInt32BE(4, 4), 'ENOTSUP', /^Unsupported qcow2 version 4$/],
    ['cluster bits 8', (b) => b.writeUInt32BE(8, 20), 'ECORRUPT', /Unsupported cluster size: 2\^8/],
    ['cluster bits 22', (b) => b.writeUInt32BE(22, 20), 'ENOTSUP', /Unsupported cluster size: 2\^22/],
    ['header too short', (b) => b.writeUInt32BE(96, 100), 'ECORRUPT', /qcow2 header too short/],
    ['header not 8-aligned', (b) => b.writeUInt32BE(108, 100), 'ECORRUPT', /multiple of 8/],
    ['header over cluster', (b) => b.writeUInt32BE(65544, 100), 'ECORRUPT', /exceeds cluster size/],
    ['backing offset', (b) => b.writeBigUInt64BE(65537n, 8), 'ECORRUPT', /Invalid backing file offset/],
    ['huge backing offset', (b) => b.writeBigUInt64BE(1n << 62n, 8), 'ECORRUPT', /Invalid backing file offset/],
    ['compression type 2', (b) => (b[104] = 2), 'ENOTSUP', /unknown compression type: 2/],
    ['zlib with bit', (b) => b.writeUInt32BE(8, 76), 'ECORRUPT', /must not be set/],
    ['zstd without bit', (b) => (b[104] = 1), 'ECORRUPT', /must be set/],
    [
      'unknown bit 5',
      (b) => b.writeUInt32BE(0x20, 76),
      'ENOTSUP',
      /^Unsupported qcow2 feature\(s\): Unknown incompatible feature: 20$/,
    ],
    [
      'unknown bit 63',
      (b) => b.writeUInt32BE(0x80000000, 72),
      'ENOTSUP',
      /Unknown incompatible feature: 8000000000000000/,
    ],
    ['refcount order 7', (b) => b.writeUInt32BE(7, 96), 'ECORRUPT', /may not exceed 64 bits/],
    ['AES', (b) => b.writeUInt32BE(1, 32), 'ENOTSUP', /AES/],
    ['LUKS', (b) => b.writeUInt32BE(2, 32), 'ENOTSUP', /LUKS/],
    ['crypt 3', (b) => b.writeUInt32BE(3, 32), 'ECORRUPT', /encryption method 3/],
    ['no refcount table', (b) => b.writeUInt32BE(0, 56), 'ECORRUPT', /does not contain a reference count table/],
    ['refcount table too large', (b) => b.writeUInt32BE(129, 56), 'ENOTSUP', /^Reference count table too large$/],
    [
      'refcount table unaligned',
      (b) => b.writeBigUInt64BE(0x10200n, 48),
      'ECORRUPT',
      /Reference count table offset invalid/,
    ],
    ['refcount table past 2^63', (b) => b.writeBigUInt64BE((1n << 63n) - 65536n, 48), 'ECORRUPT', /offset invalid/],
    ['refcount table past 2^53', (b) => b.writeBigUInt64BE(1n << 54n, 48), 'EOVERFLOW', /Reference count table offset/],
    ['snapshots > 65536', (b) => b.writeUInt32BE(65537, 60), 'ENOTSUP', /^Snapshot table too large$/],
    ['snapshots unaligned', (b) => b.writeBigUInt64BE(0x100n, 64), 'ECORRUPT', /Snapshot table offset invalid/],
    ['L1 too large', (b) => b.writeUInt32BE(4 * MiB + 1, 36), 'ENOTSUP', /^Active L1 table too large$/],
    ['L1 unaligned', (b) => b.writeBigUInt64BE(0x30008n, 40), 'ECORRUPT', /Active L1 table offset invalid/],
    ['size 2^53', (b) => b.writeBigUInt64BE(1n << 53n, 24), 'EOVERFLOW', /Virtual disk size/],
    ['size needs more L1', (b) => b.writeBigUInt64BE(512n * BigInt(MiB) + 1n, 24), 'ECORRUPT', /L1 table is too small/],
    ['image too big', (b) => b.writeBigUInt64BE(1n << 52n, 24), 'ECORRUPT', /L1 table is too small/],
  ];
  for (const [name, fn, expected, message] of cases) {
    it(`refuses ${name}`, () => throwsCode(() => decodeHeader(mutate(fn)), expected, message));
  }

  it('refuses extended L2 with clusters below 16 KiB, huge images and bad backing name sizes', () => {
    const small = cluster0({ size: MiB, clusterBits: 13 });
    throwsCode(() => decodeHeader(mutate((b) => b.writeUInt32BE(0x10, 76), small)), 'ECORRUPT', /subcluster size: 256/);
    const tiny = cluster0({ size: MiB, clusterBits: 9 });
    throwsCode(
      () => decodeHeader(mutate((b) => b.writeBigUInt64BE(1n << 47n, 24), tiny)),
      'ENOTSUP',
      /^Image is too big$/,
    );
    const backed = cluster0({ size: MiB }, 'base.raw');
    assert.equal(decodeHeader(backed).backingFileSize, 8);
    throwsCode(
      () => decodeHeader(mutate((b) => b.writeUInt32BE(1024, 16), backed)),
      'ECORRUPT',
      /Backing file name too long/,
    );
    const nearEnd = mutate((b) => {
      b.writeBigUInt64BE(65530n, 8);
      b.writeUInt32BE(7, 16);
    }, backed);
    throwsCode(() => decodeHeader(nearEnd), 'ECORRUPT', /Backing file name too long/);
  });

  it('names unknown features from the image feature table, as QEMU does', () => {
    const h = planCreateLayout({ size: MiB }).header;
    const table = Buffer.alloc(96);
    table[0] = 0;
    table[1] = 5;
    table.write('fancy thing', 2);
    table[48] = 0;
    table[49] = 40;
    table.write('x'.repeat(46), 50);
    const b = encodeHeaderCluster(h, { featureTable: false, unknown: encodeExtension(EXT_FEATURE_TABLE, table) });
    b.writeUInt32BE(0x100, 72);
    b.writeUInt32BE(0x20 | 0x40, 76);
    throwsCode(
      () => decodeHeader(b),
      'ENOTSUP',
      new RegExp(
        `^Unsupported qcow2 feature\\(s\\): fancy thing, ${'x'.repeat(46)}, Unknown incompatible feature: 40$`,
      ),
    );
  });

  it('relaxes what QEMU relaxes for check', () => {
    const b = mutate((x) => {
      x.writeUInt32BE(0, 56);
      x.writeBigUInt64BE(0x100n, 64);
    });
    const h = decodeHeader(b, { check: true });
    assert.equal(h.refcountTableClusters, 0);
  });

  it('peeks the cluster size from the first 24 bytes', () => {
    assert.equal(peekClusterBits(cluster0({ size: MiB, clusterBits: 21 }).subarray(0, 24)), 21);
    throwsCode(() => peekClusterBits(Buffer.alloc(24)), 'EINVAL');
    throwsCode(() => peekClusterBits(mutate((b) => b.writeUInt32BE(30, 20)).subarray(0, 24)), 'ENOTSUP');
  });

  it('refuses truncated buffers', () => {
    throwsCode(() => decodeHeader(cluster0().subarray(0, 100)), 'ECORRUPT', /truncated/);
    throwsCode(() => decodeHeader(cluster0().subarray(0, 3)), 'EINVAL');
    assert.equal(decodeHeader(cluster0({ size: MiB, version: 2 }).subarray(0, 72)).version, 2);
  });
});

describe('header extensions', () => {
  it('decodes the extensions QEMU writes, in QEMU order', () => {
    const h = decodeHeader(cluster0({ size: MiB }, 'dir/base.raw'));
    const b = cluster0({ size: MiB }, 'dir/base.raw');
    const e = decodeHeaderExtensions(b, h);
    assert.equal(e.backingFormat, 'raw');
    assert.equal(e.backingFile, 'dir/base.raw');
    assert.deepEqual(
      e.featureNames.map((f) => `${f.type}:${f.bit}:${f.name}`),
      [
        '0:0:dirty bit',
        '0:1:corrupt bit',
        '0:2:external data file',
        '0:3:compression type',
        '0:4:extended L2 entries',
        '1:0:lazy refcounts',
        '2:0:bitmaps',
        '2:1:raw external data',
      ],
    );
    // backing format at 112 (16 bytes), feature table (8 + 384), end marker (8): name at 528.
    assert.equal(h.backingFileOffset, 528);
    assert.equal(b.readUInt32BE(112), 0xe2792aca);
    assert.equal(b.readUInt32BE(128), 0x6803f857);
  });

  it('omits the feature table for v2 and for clusters of 4 KiB or less', () => {
    for (const opts of [
      { size: MiB, version: 2 as const },
      { size: MiB, clusterBits: 12 },
    ]) {
      const b = cluster0(opts);
      const h = decodeHeader(b);
      assert.deepEqual(decodeHeaderExtensions(b, h).featureNames, []);
      assert.equal(b.readUInt32BE(h.headerLength), 0);
    }
    assert.equal(
      decodeHeaderExtensions(
        cluster0({ size: MiB, clusterBits: 13 }),
        decodeHeader(cluster0({ size: MiB, clusterBits: 13 })),
      ).featureNames.length,
      8,
    );
  });

  it('keeps unknown extensions and the other known ones', () => {
    const h = planCreateLayout({ size: MiB }).header;
    const b = encodeHeaderCluster(
      { ...h, autoclearFeatures: AUTOCLEAR_BITMAPS },
      {
        dataFile: 'data.raw',
        bitmaps: { nbBitmaps: 2, directorySize: 96, directoryOffset: 0x50000 },
        unknown: encodeExtension(0x12345678, Buffer.from('hello')),
        backingFile: 'b.qcow2',
      },
    );
    const e = decodeHeaderExtensions(b, decodeHeader(b));
    assert.equal(e.dataFile, 'data.raw');
    assert.deepEqual(e.bitmaps, { nbBitmaps: 2, directorySize: 96, directoryOffset: 0x50000 });
    assert.deepEqual(e.unknown, encodeExtension(0x12345678, Buffer.from('hello')));
    assert.equal(e.backingFile, 'b.qcow2');
    // The same bitmaps extension without the autoclear bit: QEMU ignores it.
    const stale = encodeHeaderCluster(h, { bitmaps: { nbBitmaps: 2, directorySize: 96, directoryOffset: 0x50000 } });
    const s = decodeHeaderExtensions(stale, decodeHeader(stale));
    assert.equal(s.bitmaps, undefined);
    assert.equal(s.inconsistentBitmaps, true);
  });

  function withExtension(type: number, data: Buffer, autoclear = 0): Buffer {
    const h = { ...planCreateLayout({ size: MiB }).header, autoclearFeatures: autoclear };
    return encodeHeaderCluster(h, { featureTable: false, unknown: encodeExtension(type, data) });
  }

  it('refuses lying or malformed extensions', () => {
    const h = decodeHeader(cluster0());
    const lying = mutate((b) => b.writeUInt32BE(65536, 116));
    throwsCode(() => decodeHeaderExtensions(lying, h), 'ECORRUPT', /Header extension too large/);
    const past = mutate((b) => b.writeUInt32BE(65536 - 112 - 8 + 1, 116));
    throwsCode(() => decodeHeaderExtensions(past, h), 'ECORRUPT', /too large/);
    const noEnd = mutate((b) => {
      b.fill(0xff, 112);
    });
    throwsCode(() => decodeHeaderExtensions(noEnd, h), 'ECORRUPT', /too large/);
    const fmt = withExtension(0xe2792aca, Buffer.from('a-very-long-format'));
    throwsCode(() => decodeHeaderExtensions(fmt, decodeHeader(fmt)), 'ECORRUPT', /Backing format/);
    const bm = (d: Buffer) => withExtension(EXT_BITMAPS, d, AUTOCLEAR_BITMAPS);
    const good = Buffer.alloc(24);
    good.writeUInt32BE(1, 0);
    good.writeBigUInt64BE(0x10000n, 16);
    assert.equal(decodeHeaderExtensions(bm(good), decodeHeader(bm(good))).bitmaps?.nbBitmaps, 1);
    const cases: [Buffer, string, RegExp][] = [
      [Buffer.alloc(16), 'ECORRUPT', /invalid extension length/],
      [mutate((d) => d.writeUInt32BE(1, 4), good), 'ECORRUPT', /reserved/],
      [mutate((d) => d.writeUInt32BE(0, 0), good), 'ECORRUPT', /zero bitmaps/],
      [mutate((d) => d.writeUInt32BE(65536, 0), good), 'ENOTSUP', /65536 bitmaps/],
      [mutate((d) => d.writeBigUInt64BE(0x10200n, 16), good), 'ECORRUPT', /directory offset/],
      [mutate((d) => d.writeBigUInt64BE(1n << 40n, 8), good), 'ENOTSUP', /directory size/],
    ];
    for (const [data, expected, message] of cases) {
      const b = bm(data);
      throwsCode(() => decodeHeaderExtensions(b, decodeHeader(b)), expected, message);
    }
    const fde = withExtension(EXT_CRYPTO_HEADER, Buffer.alloc(16));
    throwsCode(() => decodeHeaderExtensions(fde, decodeHeader(fde)), 'ECORRUPT', /only expected with LUKS/);
  });

  it('refuses to encode what does not fit in cluster 0', () => {
    const h = planCreateLayout({ size: MiB, clusterBits: 9 }).header;
    assert.equal(
      encodeHeaderCluster(h, { backingFile: 'x'.repeat(512 - 112 - 8), backingFormat: undefined }).length,
      512,
    );
    throwsCode(
      () => encodeHeaderCluster(h, { backingFile: 'x'.repeat(512 - 112 - 7) }),
      'EINVAL',
      /more than the cluster size/,
    );
    throwsCode(
      () =>
        encodeHeaderExtensions(
          { backingFile: 'x'.repeat(1024) },
          { version: 3, clusterSize: 65536, headerLength: 112 },
        ),
      'EINVAL',
      /too long/,
    );
    throwsCode(
      () =>
        encodeHeaderExtensions(
          { backingFormat: 'x'.repeat(16) },
          { version: 3, clusterSize: 65536, headerLength: 112 },
        ),
      'EINVAL',
    );
  });
});

describe('create layout (as observed with qemu-img 7.2)', () => {
  it('64 MiB, 64 KiB clusters: reftable 0x10000, refblock 0x20000, L1 0x30000, 196,616 bytes', () => {
    const l = planCreateLayout({ size: 64 * MiB });
    assert.equal(l.header.refcountTableOffset, 0x10000);
    assert.deepEqual(l.refcountTable.slice(0, 2), [0x20000, 0]);
    assert.equal(l.refcountTable.length, 8192);
    assert.equal(l.header.l1TableOffset, 0x30000);
    assert.deepEqual(l.allocated, [{ offset: 0, length: 4 * 65536 }]);
    assert.equal(l.fileLength, 196616);
  });

  it('an empty image has no L1 table', () => {
    const l = planCreateLayout({ size: 0 });
    assert.equal(l.header.l1Size, 0);
    assert.equal(l.header.l1TableOffset, 0);
    assert.equal(l.fileLength, 196608);
  });

  it('1 GiB with 512-byte clusters: refblocks 1 and 2 land after the L1 table', () => {
    const l = planCreateLayout({ size: 1024 * MiB, clusterBits: 9 });
    assert.equal(l.header.l1TableOffset, 0x600);
    assert.equal(l.header.l1Size, 32768);
    assert.deepEqual(l.refcountTable.slice(0, 4), [0x400, 0x40600, 0x40800, 0]);
    assert.equal(l.fileLength, 264704);
  });

  it('100 GiB with 512-byte clusters: the refcount table moves and grows to 5 clusters', () => {
    const l = planCreateLayout({ size: 100 * 1024 * MiB, clusterBits: 9 });
    assert.equal(l.header.refcountTableOffset, 0x1920200);
    assert.equal(l.header.refcountTableClusters, 5);
    assert.equal(l.fileLength, 26348544);
    assert.deepEqual(l.allocated[0], { offset: 0, length: 512 });
  });

  it('metadata preallocation interleaves each L2 table with its data', () => {
    const l = planCreateLayout({ size: 1024 * MiB, preallocation: 'metadata' });
    assert.deepEqual(l.l2Tables, [
      { l1Index: 0, offset: 0x40000 },
      { l1Index: 1, offset: 0x20050000 },
    ]);
    assert.deepEqual(l.dataRuns, [
      { guestOffset: 0, hostOffset: 0x50000, length: 512 * MiB },
      { guestOffset: 512 * MiB, hostOffset: 0x20060000, length: 512 * MiB },
    ]);
    assert.equal(l.fileLength, 0x40060000);
    // A partial last cluster is zero-filled to its end.
    assert.equal(planCreateLayout({ size: 512, preallocation: 'metadata' }).fileLength, 0x60000);
  });

  it('falloc puts a new refcount table at the end and the first L2 table in cluster 1', () => {
    const l = planCreateLayout({ size: 64 * MiB, preallocation: 'falloc' });
    assert.equal(l.header.refcountTableOffset, 0x40000);
    assert.deepEqual(l.l2Tables, [{ l1Index: 0, offset: 0x10000 }]);
    assert.deepEqual(l.dataRuns, [{ guestOffset: 0, hostOffset: 0x50000, length: 64 * MiB }]);
    assert.deepEqual(l.preallocatedData, { offset: 0x50000, length: 64 * MiB });
    assert.equal(l.fileLength, 0x4050000);
  });

  it('refuses what qemu-img refuses', () => {
    throwsCode(() => planCreateLayout({ size: 1000 }), 'EINVAL', /multiple of 512/);
    throwsCode(
      () => planCreateLayout({ size: 128 * 1024 ** 3 + 512, clusterBits: 9 }),
      'EINVAL',
      /too large for file format/,
    );
    throwsCode(() => planCreateLayout({ size: MiB, version: 2, lazyRefcounts: true }), 'EINVAL');
    throwsCode(() => planCreateLayout({ size: MiB, version: 2, refcountOrder: 5 }), 'EINVAL');
    throwsCode(() => planCreateLayout({ size: MiB, version: 2, extendedL2: true }), 'EINVAL');
    throwsCode(() => planCreateLayout({ size: MiB, clusterBits: 13, extendedL2: true }), 'EINVAL', /at least 16384/);
    throwsCode(() => planCreateLayout({ size: MiB, clusterBits: 22 }), 'EINVAL', /between 512 and 2048k/);
    throwsCode(() => planCreateLayout({ size: MiB, refcountOrder: 7 }), 'EINVAL', /64 bits/);
    throwsCode(() => planCreateLayout({ size: MiB, compressionType: 2 }), 'EINVAL');
    throwsCode(
      () => planCreateLayout({ size: MiB, hasBackingFile: true, preallocation: 'metadata' }),
      'EINVAL',
      /extended_l2/,
    );
    assert.ok(planCreateLayout({ size: MiB, hasBackingFile: true, preallocation: 'metadata', extendedL2: true }));
  });

  it('sizes refcount metadata like qcow2_refcount_metadata_size', () => {
    assert.deepEqual(refcountMetadataBlocks(4, 65536, 4, false), { blocks: 1, tableClusters: 1 });
    assert.deepEqual(refcountMetadataBlocks(32768, 65536, 4, false), { blocks: 2, tableClusters: 1 });
  });
});
