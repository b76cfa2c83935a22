import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BlockBackend } from '../../src/block/backend.js';
import { parseCacheMode } from '../../src/block/cache-mode.js';
import type { BlockDriver } from '../../src/block/driver.js';
import { VdiskError } from '../../src/block/errors.js';
import { RawDriver } from '../../src/format/raw/driver.js';
import { MemoryDriver } from '../../src/io/memory.js';

function pattern(length: number, seed: number): Buffer {
  const buf = Buffer.alloc(length);
  for (let i = 0; i < length; i++) buf[i] = (i * 31 + seed) & 0xff;
  return buf;
}

/** A memory driver that counts what reaches it, to see what the backend adds. */
class CountingDriver extends MemoryDriver {
  flushes = 0;
  fuaWrites = 0;
  override async flush(): Promise<void> {
    this.flushes++;
  }
  override async write(offset: number, buf: Buffer, flags?: { fua?: boolean }): Promise<void> {
    if (flags?.fua) this.fuaWrites++;
    await super.write(offset, buf);
  }
}

async function rejectsWith(promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => err instanceof VdiskError && err.code === code);
}

describe('BlockBackend', () => {
  it('reads back what was written, through raw over memory', async () => {
    const backend = new BlockBackend(new RawDriver(new MemoryDriver({ length: 1 << 20 })), { writeCache: true });
    const data = pattern(70_000, 7);
    await backend.write(12_345, data);
    assert.deepEqual(await backend.read(12_345, data.length), data);
    assert.deepEqual(await backend.read(0, 12_345), Buffer.alloc(12_345));
    assert.equal(backend.counters.writes, 1);
    assert.equal(backend.counters.bytesWritten, 70_000);
  });

  it('refuses requests past the end, negative or fractional offsets, and changes nothing', async () => {
    const memory = new MemoryDriver({ length: 4096 });
    const backend = new BlockBackend(memory, { writeCache: true });
    await rejectsWith(backend.write(4095, Buffer.alloc(2, 1)), 'EINVAL');
    await rejectsWith(backend.read(-1, 1), 'EINVAL');
    await rejectsWith(backend.read(0.5, 1), 'EINVAL');
    await rejectsWith(backend.writeZeroes(0, 4097), 'EINVAL');
    assert.deepEqual(await backend.read(0, 4096), Buffer.alloc(4096));
    assert.equal(memory.length(), 4096);
  });

  it('refuses writes, zeroes, discards and resizes when read-only', async () => {
    const memory = new MemoryDriver({ length: 4096 });
    await memory.write(0, Buffer.alloc(4096, 0xaa));
    const backend = new BlockBackend(memory, { writeCache: true, readOnly: true });
    await rejectsWith(backend.write(0, Buffer.alloc(1)), 'EROFS');
    await rejectsWith(backend.writeZeroes(0, 4096), 'EROFS');
    await rejectsWith(backend.discard(0, 4096), 'EROFS');
    await rejectsWith(backend.truncate(8192), 'EROFS');
    assert.deepEqual(await backend.read(0, 4096), Buffer.alloc(4096, 0xaa));
  });

  it('makes every write durable when the write cache is off (writethrough, directsync)', async () => {
    for (const mode of ['writethrough', 'directsync', 'writeback', 'none', 'unsafe']) {
      const driver = new CountingDriver({ length: 8192 });
      const backend = new BlockBackend(driver, { writeCache: parseCacheMode(mode).writeCache });
      await backend.write(0, Buffer.alloc(512, 1));
      await backend.write(512, Buffer.alloc(512, 2), { fua: true });
      const expectedFua = parseCacheMode(mode).writeCache ? 1 : 2;
      assert.equal(driver.fuaWrites, expectedFua, `FUA writes in ${mode}`);
    }
  });

  it('emulates FUA with a flush when the driver has no native FUA', async () => {
    const driver = new CountingDriver({ length: 8192 });
    (driver as { capabilities: BlockDriver['capabilities'] }).capabilities = {
      ...driver.capabilities,
      fua: false,
    };
    const backend = new BlockBackend(driver, { writeCache: false });
    await backend.write(0, Buffer.alloc(512, 1));
    await backend.writeZeroes(0, 512);
    assert.equal(driver.fuaWrites, 0);
    assert.equal(driver.flushes, 2);
  });

  it('close waits for requests in flight, is idempotent, and refuses later requests', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let closedDuringWrite = false;
    let closed = false;
    class SlowDriver extends MemoryDriver {
      override async write(offset: number, buf: Buffer): Promise<void> {
        await gate;
        closedDuringWrite = closed;
        await super.write(offset, buf);
      }
      override async close(): Promise<void> {
        closed = true;
      }
    }
    const slow = new SlowDriver({ length: 4096 });
    const backend = new BlockBackend(slow, { writeCache: true });
    const write = backend.write(0, Buffer.alloc(16, 9));
    assert.equal(backend.inFlight, 1);
    const close1 = backend.close();
    const close2 = backend.close();
    assert.equal(close1, close2);
    await rejectsWith(backend.read(0, 1), 'ESHUTDOWN');
    release();
    await write;
    await close1;
    assert.equal(closedDuringWrite, false);
    assert.equal(closed, true);
    const back = Buffer.alloc(16);
    await slow.read(0, back);
    assert.deepEqual(back, Buffer.alloc(16, 9));
  });
});

describe('MemoryDriver', () => {
  it('reports written chunks as data and the rest as holes', async () => {
    const memory = new MemoryDriver({ length: 1 << 20 });
    await memory.write(65536, Buffer.alloc(10, 1));
    const first = await memory.blockStatus(0, 1 << 20);
    assert.deepEqual([first.offset, first.length, first.data, first.zero], [0, 65536, false, true]);
    const second = await memory.blockStatus(65536, 1 << 20);
    assert.deepEqual([second.length, second.data], [65536, true]);
    await memory.discard(65536, 65536);
    assert.equal((await memory.blockStatus(0, 1 << 20)).length, 1 << 20);
  });
});

describe('RawDriver window', () => {
  it('maps guest offsets into the child through offset and size', async () => {
    const memory = new MemoryDriver({ length: 8192 });
    const raw = new RawDriver(memory, { offset: 1024, size: 2048 });
    assert.equal(raw.length(), 2048);
    assert.equal(raw.capabilities.resize, false);
    await raw.write(0, Buffer.alloc(2048, 5));
    const whole = Buffer.alloc(8192);
    await memory.read(0, whole);
    assert.deepEqual(whole.subarray(1024, 3072), Buffer.alloc(2048, 5));
    assert.deepEqual(whole.subarray(0, 1024), Buffer.alloc(1024));
    assert.throws(() => new RawDriver(memory, { offset: 8000, size: 1000 }), VdiskError);
  });
});
