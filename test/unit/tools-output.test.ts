import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BlockBackend } from '../../src/block/backend.js';
import { hexDump, IoSession } from '../../src/cli/io/session.js';
import { formatInfoHuman, formatInfoJson } from '../../src/cli/render/info.js';
import { formatMapHuman, formatMapJson } from '../../src/cli/render/map.js';
import { dumpQobject, qdictOrder, toQemuJson } from '../../src/cli/render/qemu-json.js';
import { RawDriver } from '../../src/format/raw/driver.js';
import { MemoryDriver } from '../../src/io/memory.js';
import type { ImageInfo } from '../../src/tools/info.js';
import { mapImage } from '../../src/tools/map.js';

describe('QEMU QDict order and JSON text', () => {
  it('orders keys as qemu-img info prints them', () => {
    assert.deepEqual(qdictOrder(['filename', 'format', 'dirty-flag', 'actual-size', 'virtual-size']), [
      'virtual-size',
      'filename',
      'format',
      'actual-size',
      'dirty-flag',
    ]);
    assert.deepEqual(
      qdictOrder(['compat', 'extended-l2', 'lazy-refcounts', 'corrupt', 'refcount-bits', 'compression-type']),
      ['compat', 'compression-type', 'lazy-refcounts', 'refcount-bits', 'corrupt', 'extended-l2'],
    );
  });

  it('prints info JSON and human text byte for byte', () => {
    const info: ImageInfo = {
      virtualSize: 1048576,
      filename: 'q.qcow2',
      clusterSize: 65536,
      format: 'qcow2',
      actualSize: 200704,
      snapshots: [],
      formatSpecific: {
        type: 'qcow2',
        data: {
          compat: '1.1',
          'compression-type': 'zlib',
          'lazy-refcounts': false,
          'refcount-bits': 16,
          corrupt: false,
          'extended-l2': false,
        },
      },
      dirty: false,
    };
    // qemu-img 7.2 info --output=json of a fresh 1M qcow2.
    assert.equal(
      formatInfoJson(info),
      `{
    "virtual-size": 1048576,
    "filename": "q.qcow2",
    "cluster-size": 65536,
    "format": "qcow2",
    "actual-size": 200704,
    "format-specific": {
        "type": "qcow2",
        "data": {
            "compat": "1.1",
            "compression-type": "zlib",
            "lazy-refcounts": false,
            "refcount-bits": 16,
            "corrupt": false,
            "extended-l2": false
        }
    },
    "dirty-flag": false
}
`,
    );
    assert.equal(
      formatInfoHuman(info),
      `image: q.qcow2
file format: qcow2
virtual size: 1 MiB (1048576 bytes)
disk size: 196 KiB
cluster_size: 65536
Format specific information:
    compat: 1.1
    compression type: zlib
    lazy refcounts: false
    refcount bits: 16
    corrupt: false
    extended l2: false
`,
    );
  });

  it('escapes strings and closes empty containers as QEMU', () => {
    assert.equal(toQemuJson({ filename: 'a"b\\c/é\n' }), '{\n    "filename": "a\\"b\\\\c/\\u00E9\\n"\n}');
    assert.equal(toQemuJson({}), '{\n}');
    assert.equal(dumpQobject({ bitmaps: [{ name: 'b0' }] }, 1), '    bitmaps:\n        [0]:\n            name: b0\n');
  });
});

describe('map on a memory image', () => {
  it('merges equal neighbours and prints qemu-img layouts', async () => {
    const file = new MemoryDriver({ length: 1 << 20, name: 'mem.img' });
    const backend = new BlockBackend(new RawDriver(file), { writeCache: true });
    await backend.write(0, Buffer.alloc(128 * 1024, 1)); // two 64 KiB chunks: two extents, one entry
    await backend.write(512 * 1024, Buffer.alloc(4096, 2));
    const entries = await mapImage(backend);
    assert.deepEqual(
      entries.map((e) => [e.start, e.length, e.data]),
      [
        [0, 131072, true],
        [131072, 393216, false],
        [524288, 65536, true],
        [589824, 458752, false],
      ],
    );
    assert.equal(
      formatMapJson(entries).split('\n')[0],
      '[{ "start": 0, "length": 131072, "depth": 0, "present": true, "zero": false, "data": true, "offset": 0},',
    );
    assert.equal(
      formatMapHuman(entries),
      'Offset          Length          Mapped to       File\n' +
        '0               0x20000         0               mem.img\n' +
        '0x80000         0x10000         0x80000         mem.img\n',
    );
    assert.deepEqual(await mapImage(backend, { start: 2 << 20 }), [
      { start: 2 << 20, length: 0, depth: 0, present: false, zero: false, data: false },
    ]);
    await backend.close();
  });
});

describe('io session', () => {
  it('prints qemu-io lines and counts failures', async () => {
    const file = new MemoryDriver({ length: 1 << 20 });
    const backend = new BlockBackend(new RawDriver(file), { writeCache: false });
    let out = '';
    let err = '';
    const session = new IoSession({ backend, format: 'raw', out: (t) => (out += t), err: (t) => (err += t) });
    assert.equal(await session.run('write -P 0xab 0 4k'), true);
    assert.match(out, /^wrote 4096\/4096 bytes at offset 0\n4 KiB, 1 ops; 00\.\d\d sec \(.* ops\/sec\)\n$/);
    out = '';
    assert.equal(await session.run('read -P 0xcd 0 4k'), false);
    assert.match(out, /^Pattern verification failed at offset 0, 4096 bytes\nread 4096\/4096/);
    assert.equal(await session.run('read 1M 1'), false);
    assert.match(
      err,
      /^read failed: Request past the end of the image: offset 1048576 \+ length 1 > image length 1048576\n$/,
    );
    err = '';
    assert.equal(await session.run('nonsense'), false);
    assert.equal(err, 'command "nonsense" not found\n');
    err = '';
    assert.equal(await session.run('read -x 0 1'), false);
    assert.equal(err, "read: invalid option -- 'x' (usage: read [-Cqv] [-P pattern [-s off] [-l len]] off len)\n");
    out = '';
    await session.run('length');
    assert.equal(out, '1 MiB\n');
    assert.equal(session.failures, 4);
    await backend.close();
  });

  it('dumps like qemu-io read -v', () => {
    const buf = Buffer.from('Hello, World! 0123456789abcdefXYZ\n\x01\xff', 'latin1');
    assert.equal(
      hexDump(buf, 3),
      '00000003:  48 65 6c 6c 6f 2c 20 57 6f 72 6c 64 21 20 30 31  Hello..World..01\n' +
        '00000013:  32 33 34 35 36 37 38 39 61 62 63 64 65 66 58 59  23456789abcdefXY\n' +
        '00000023:  5a 0a 01 ff  Z...\n',
    );
  });
});
