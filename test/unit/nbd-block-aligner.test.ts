/**
 * The client's side of NBD_INFO_BLOCK_SIZE and qemu:allocation-depth, without a server: every
 * request the aligner sends is aligned to the minimum, unaligned writes racing on one block all
 * land (none undone by another's read-modify-write), and the two contexts' runs combine.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BlockAligner } from '../../src/remote/nbd/block-aligner.js';
import { combineContexts } from '../../src/remote/nbd/extent-cache.js';

/** An export in memory that refuses unaligned requests, as nbdkit's blocksize-policy does. */
function strictExport(size: number, minimum: number) {
  const bytes = Buffer.alloc(size);
  const sent: Array<[string, number, number]> = [];
  const check = (kind: string, offset: number, length: number) => {
    sent.push([kind, offset, length]);
    if (offset % minimum !== 0 || (length % minimum !== 0 && offset + length !== size)) {
      throw new Error(`unaligned ${kind} ${offset}+${length}`);
    }
  };
  const tick = () => new Promise((resolve) => setImmediate(resolve));
  return {
    bytes,
    sent,
    ops: {
      async read(offset: number, buf: Buffer) {
        check('read', offset, buf.length);
        await tick();
        bytes.copy(buf, 0, offset, offset + buf.length);
      },
      async write(offset: number, buf: Buffer) {
        check('write', offset, buf.length);
        await tick();
        buf.copy(bytes, offset);
      },
    },
  };
}

describe('requests aligned to a server minimum block size', () => {
  it('reads and writes any range through aligned requests only', async () => {
    const size = 64 * 1024 + 1000; // a short last block
    const target = strictExport(size, 4096);
    const aligner = new BlockAligner(4096, size, target.ops);
    const model = Buffer.alloc(size);
    const cases: Array<[number, number, number]> = [
      [100, 50, 0x11],
      [4000, 200, 0x22],
      [8192, 4096, 0x33],
      [5000, 20000, 0x44],
      [size - 1500, 1500, 0x55],
      [size - 10, 10, 0x66],
    ];
    for (const [offset, length, pattern] of cases) {
      await aligner.write(offset, Buffer.alloc(length, pattern), 0);
      model.fill(pattern, offset, offset + length);
    }
    assert.deepEqual(target.bytes, model);
    for (const [offset, length] of [...cases, [1, 3] as [number, number], [0, size] as [number, number]]) {
      const got = Buffer.alloc(length);
      await aligner.read(offset, got);
      assert.deepEqual(got, model.subarray(offset, offset + length), `read ${offset}+${length}`);
    }
    assert.ok(
      target.sent.some(([kind]) => kind === 'read'),
      'partial blocks were read first',
    );
  });

  it('lets no read-modify-write undo another write to the same block', async () => {
    const target = strictExport(8192, 4096);
    const aligner = new BlockAligner(4096, 8192, target.ops);
    // 64 writes of 64 bytes, all in flight at once, over two blocks.
    await Promise.all(Array.from({ length: 64 }, (_, i) => aligner.write(i * 100, Buffer.alloc(64, i + 1), 0)));
    for (let i = 0; i < 64; i++) {
      assert.deepEqual(target.bytes.subarray(i * 100, i * 100 + 64), Buffer.alloc(64, i + 1), `write ${i}`);
    }
  });
});

describe('base:allocation and qemu:allocation-depth together', () => {
  it('split runs wherever either context changes, up to the shorter answer', () => {
    const allocation = [
      { length: 1000, flags: 0 },
      { length: 3000, flags: 3 },
    ];
    const depth = [
      { length: 500, flags: 2 },
      { length: 1500, flags: 1 },
      { length: 1000, flags: 0 },
    ];
    assert.deepEqual(combineContexts(allocation, depth), [
      { length: 500, flags: 0, depth: 2 },
      { length: 500, flags: 0, depth: 1 },
      { length: 1000, flags: 3, depth: 1 },
      { length: 1000, flags: 3, depth: 0 },
    ]);
    assert.deepEqual(combineContexts(allocation, undefined), allocation);
    assert.deepEqual(combineContexts(undefined, [{ length: 10, flags: 1 }]), [{ length: 10, flags: 0, depth: 1 }]);
  });
});
