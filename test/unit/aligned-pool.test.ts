import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VdiskError } from '../../src/block/errors.js';
import { AlignedPool, BUFFER_ALIGNMENT } from '../../src/io/aligned.js';

describe('AlignedPool', () => {
  it('hands out buffers of the asked size at 4096-aligned offsets of its slabs', () => {
    const pool = new AlignedPool();
    for (const size of [0, 1, 512, 4095, 4096, 4097, 65536, 100_000, 4 << 20]) {
      const buf = pool.acquire(size);
      assert.equal(buf.length, size);
      assert.equal(buf.byteOffset % BUFFER_ALIGNMENT, 0);
      assert.ok(pool.owns(buf));
      pool.release(buf);
    }
    assert.equal(pool.stats().inUse, 0);
  });

  it('reuses released buffers: steady state creates no new slabs', () => {
    const pool = new AlignedPool();
    const first = Array.from({ length: 32 }, () => pool.acquire(8192));
    for (const b of first) pool.release(b);
    const before = pool.stats();
    for (let round = 0; round < 1000; round++) {
      const bufs = Array.from({ length: 32 }, () => pool.acquire(5000 + round));
      for (const b of bufs) pool.release(b);
    }
    assert.deepEqual(pool.stats(), before);
  });

  it('gives distinct, non-overlapping buffers while they are held', () => {
    const pool = new AlignedPool();
    const bufs = Array.from({ length: 600 }, (_, i) => pool.acquire(i % 2 ? 4096 : 3000));
    for (const [i, b] of bufs.entries()) b.fill(i & 0xff);
    for (const [i, b] of bufs.entries())
      assert.ok(
        b.every((x) => x === (i & 0xff)),
        `buffer ${i} was overwritten`,
      );
    for (const b of bufs) pool.release(b);
  });

  it('keeps the number of WebAssembly memories logarithmic in the peak demand', () => {
    const pool = new AlignedPool();
    const held = Array.from({ length: 2000 }, () => pool.acquire(4096));
    assert.ok(pool.stats().memories <= 6, `memories: ${pool.stats().memories}`);
    for (const b of held) pool.release(b);
  });

  it('refuses double release, foreign buffers and misaligned views', () => {
    const pool = new AlignedPool();
    const buf = pool.acquire(4096);
    assert.ok(!pool.owns(buf.subarray(1)));
    assert.throws(() => pool.release(Buffer.alloc(4096)), VdiskError);
    assert.throws(() => pool.release(buf.subarray(512)), VdiskError);
    pool.release(buf);
    assert.throws(() => pool.release(buf), VdiskError);
  });

  it('fails cleanly when its memory bound is reached', () => {
    const pool = new AlignedPool(1);
    const held = [pool.acquire(1 << 20)];
    assert.throws(() => held.push(pool.acquire(1 << 20), pool.acquire(1 << 20)), { code: 'ENOSPC' });
    assert.throws(() => pool.acquire(-1), { code: 'EINVAL' });
  });
});
