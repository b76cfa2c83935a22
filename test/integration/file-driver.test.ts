import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CACHE_MODE_NAMES, type CacheModeName, cacheMode } from '../../src/block/cache-mode.js';
import { VdiskError } from '../../src/block/errors.js';
import { alignedPool } from '../../src/io/aligned.js';
import { FileDriver, type FileOpenOptions } from '../../src/io/file.js';
import { native } from '../../src/io/native.js';

const O_ACCMODE = 0o3;
const O_RDWR = 0o2;
const O_DIRECT = 0o40000;
const O_DSYNC = 0o10000;
const MiB = 1 << 20;

let dir: string;
let seq = 0;

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-file-'));
});
after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function tmpFile(size = 0, fill?: (buf: Buffer) => void): string {
  const file = path.join(dir, `img-${++seq}.img`);
  const buf = Buffer.alloc(size);
  fill?.(buf);
  fs.writeFileSync(file, buf);
  return file;
}

function open(filename: string, mode: CacheModeName, extra: Partial<FileOpenOptions> = {}): Promise<FileDriver> {
  return FileDriver.open({ filename, cache: cacheMode(mode), readOnly: false, ...extra });
}

function fdFlags(fd: number): number {
  const info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  const m = /^flags:\s+([0-7]+)$/m.exec(info);
  assert.ok(m, info);
  return Number.parseInt(m[1], 8);
}

/** Deterministic bytes that differ at every offset, so misplaced data shows. */
function pattern(length: number, seed: number): Buffer {
  const buf = Buffer.alloc(length);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    buf[i] = x >>> 24;
  }
  return buf;
}

async function readAll(d: FileDriver, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  await d.read(offset, buf);
  return buf;
}

function blocksOf(file: string): number {
  return fs.statSync(file).blocks * 512;
}

function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

describe('native helper', () => {
  it('exports the fallocate mode bits', () => {
    const n = native();
    assert.equal(n.FALLOC_FL_KEEP_SIZE, 1);
    assert.equal(n.FALLOC_FL_PUNCH_HOLE, 2);
    assert.equal(n.FALLOC_FL_ZERO_RANGE, 16);
  });

  it('fallocate, seekData and seekHole see holes and data; errors carry errno names', async () => {
    const n = native();
    const file = tmpFile();
    const fd = fs.openSync(file, 'r+');
    try {
      fs.ftruncateSync(fd, 4 * MiB);
      assert.equal(n.seekData(fd, 0), -1);
      fs.writeSync(fd, pattern(65536, 1), 0, 65536, MiB);
      assert.equal(n.seekData(fd, 0), MiB);
      assert.equal(n.seekHole(fd, MiB), MiB + 65536);
      assert.equal(n.seekHole(fd, 5 * MiB), -1); // past EOF: ENXIO
      await n.fallocate(fd, n.FALLOC_FL_PUNCH_HOLE | n.FALLOC_FL_KEEP_SIZE, MiB, 65536);
      assert.equal(n.seekData(fd, 0), -1);
      await n.fallocate(fd, 0, 4 * MiB, MiB);
      assert.equal(fs.fstatSync(fd).size, 5 * MiB);
      assert.equal(n.blockDeviceInfo(fd), null);
      await assert.rejects(n.fallocate(fd, 0x7f00, 0, 1), (err: NodeJS.ErrnoException) => {
        assert.match(String(err.code), /^E[A-Z]+$/);
        assert.equal(typeof err.errno, 'number');
        return true;
      });
    } finally {
      fs.closeSync(fd);
    }
    assert.throws(() => n.seekData(1 << 30, 0), { code: 'EBADF', errno: 9 });
    assert.throws(() => n.lock(0, 0, 1, 'bogus' as 'read'), TypeError);
  });

  it('OFD locks conflict between open file descriptions, not within one', () => {
    const n = native();
    const file = tmpFile(4096);
    const a = fs.openSync(file, 'r+');
    const b = fs.openSync(file, 'r+');
    try {
      n.lock(a, 100, 1, 'read');
      assert.equal(n.testLock(a, 100, 1, 'write'), false);
      assert.equal(n.testLock(b, 100, 1, 'write'), true);
      assert.equal(n.testLock(b, 100, 1, 'read'), false);
      n.lock(b, 100, 1, 'read');
      assert.throws(() => n.lock(b, 100, 1, 'write'), { code: 'EAGAIN' });
      n.lock(a, 100, 1, 'unlock');
      n.lock(b, 100, 1, 'write');
      assert.equal(n.testLock(a, 100, 1, 'read'), true);
    } finally {
      fs.closeSync(a);
      fs.closeSync(b);
    }
  });
});

describe('aligned pool buffers', () => {
  it('are accepted by O_DIRECT reads and writes at every size class', () => {
    const model = pattern(8 * MiB, 7);
    const file = tmpFile(8 * MiB, (b) => model.copy(b));
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_DIRECT);
    try {
      for (const size of [4096, 8192, 65536, MiB, 4 * MiB]) {
        const buf = alignedPool.acquire(size);
        assert.equal(fs.readSync(fd, buf, 0, size, 4096), size);
        assert.deepEqual(buf, model.subarray(4096, 4096 + size));
        buf.reverse();
        assert.equal(fs.writeSync(fd, buf, 0, size, 4096), size);
        buf.reverse();
        assert.equal(fs.writeSync(fd, buf, 0, size, 4096), size);
        alignedPool.release(buf);
      }
      // The control: an ordinary Buffer view at an odd address is refused.
      const odd = Buffer.alloc(8192).subarray(1, 4097);
      assert.throws(() => fs.readSync(fd, odd, 0, 4096, 0), { code: 'EINVAL' });
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('opening', () => {
  for (const name of CACHE_MODE_NAMES) {
    for (const readOnly of [false, true]) {
      it(`cache=${name} ${readOnly ? 'read-only' : 'read-write'} opens with the right flags`, async () => {
        const file = tmpFile(MiB);
        const d = await open(file, name, { readOnly });
        try {
          const flags = fdFlags(d.fd);
          const direct = name === 'none' || name === 'directsync';
          assert.equal((flags & O_DIRECT) !== 0, direct, `O_DIRECT in ${flags.toString(8)}`);
          assert.equal(flags & O_ACCMODE, readOnly ? 0 : O_RDWR);
          assert.equal(flags & O_DSYNC, 0, 'writethrough is done with FUA/flush, not O_DSYNC');
          assert.equal(d.readOnly, readOnly);
          assert.equal(d.driverName, 'file');
          assert.equal(d.length(), MiB);
          if (direct) {
            assert.ok([512, 1024, 2048, 4096].includes(d.alignment.request), String(d.alignment.request));
            assert.equal(d.alignment.memory, 4096);
          } else {
            assert.deepEqual(d.alignment, { request: 1, memory: 1 });
          }
        } finally {
          await d.close();
        }
      });
    }
  }

  it('refuses a missing file unless asked to create it', async () => {
    const file = path.join(dir, 'missing.img');
    await assert.rejects(open(file, 'writeback'), (err: VdiskError) => {
      assert.equal(err.code, 'ENOENT');
      assert.match(err.message, /Could not open '.*missing\.img': No such file or directory/);
      return true;
    });
    const d = await open(file, 'none', { create: true });
    assert.equal(d.length(), 0);
    await d.close();
    assert.equal(fs.statSync(file).size, 0);
  });

  it('refuses directories', async () => {
    await assert.rejects(open(dir, 'writeback', { readOnly: true }), { code: 'EINVAL' });
  });

  it('close is idempotent, waits for requests in flight, and later requests get ESHUTDOWN', async () => {
    const file = tmpFile(4 * MiB);
    const d = await open(file, 'writeback');
    const data = pattern(4 * MiB, 3);
    const pending = d.write(0, data);
    await Promise.all([d.close(), d.close()]);
    await pending;
    assert.deepEqual(fs.readFileSync(file), data);
    await assert.rejects(d.read(0, Buffer.alloc(1)), { code: 'ESHUTDOWN' });
    await assert.rejects(d.write(0, Buffer.alloc(1)), { code: 'ESHUTDOWN' });
    await assert.rejects(d.flush(), { code: 'ESHUTDOWN' });
    await d.close();
  });
});

describe('O_DIRECT on a filesystem without it', () => {
  /** Whether the kernel's tmpfs refuses O_DIRECT (it accepts it since Linux 6.6). */
  function tmpfsRefusesDirect(): boolean {
    const probe = `/dev/shm/vdisk-odirect-probe-${process.pid}`;
    try {
      fs.closeSync(fs.openSync(probe, fs.constants.O_CREAT | fs.constants.O_RDWR | fs.constants.O_DIRECT));
      return false;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EINVAL';
    } finally {
      fs.rmSync(probe, { force: true });
    }
  }

  async function assertRefused(file: string, opts: Partial<FileOpenOptions>, mode: CacheModeName): Promise<void> {
    await assert.rejects(open(file, mode, opts), (err: VdiskError) => {
      assert.ok(err instanceof VdiskError);
      assert.equal(err.code, 'ENOTSUP');
      assert.ok(err.message.includes(`Could not open '${file}'`), err.message);
      assert.ok(err.message.includes(`does not support O_DIRECT (cache=${mode})`), err.message);
      return true;
    });
  }

  it('tmpfs (/dev/shm) with cache=none and directsync: ENOTSUP, nothing created or changed', async (t) => {
    if (!fs.existsSync('/dev/shm')) return t.skip('no /dev/shm');
    if (!tmpfsRefusesDirect()) {
      return t.skip(`this kernel's tmpfs supports O_DIRECT (Linux ${os.release()}); see the simulated test`);
    }
    const file = `/dev/shm/vdisk-test-${process.pid}.img`;
    try {
      await assertRefused(file, { create: true }, 'none');
      assert.equal(fs.existsSync(file), false);
      fs.writeFileSync(file, pattern(8192, 5));
      await assertRefused(file, {}, 'directsync');
      assert.deepEqual(fs.readFileSync(file), pattern(8192, 5));
    } finally {
      fs.rmSync(file, { force: true });
    }
  });

  it('simulated (open refuses O_DIRECT with EINVAL after creating): ENOTSUP, nothing left behind', async () => {
    // What older tmpfs does: the file is created, then the O_DIRECT check fails.
    const openImpl = (p: string, flags: number, mode: number): Promise<number> => {
      const fd = fs.openSync(p, flags & ~fs.constants.O_DIRECT, mode);
      if (!(flags & fs.constants.O_DIRECT)) return Promise.resolve(fd);
      fs.closeSync(fd);
      return Promise.reject(Object.assign(new Error('EINVAL: invalid argument'), { code: 'EINVAL' }));
    };
    const file = path.join(dir, 'no-odirect.img');
    await assertRefused(file, { create: true, openImpl }, 'none');
    assert.equal(fs.existsSync(file), false);
    fs.writeFileSync(file, pattern(8192, 6));
    const mtime = fs.statSync(file).mtimeMs;
    await assertRefused(file, { openImpl }, 'directsync');
    assert.deepEqual(fs.readFileSync(file), pattern(8192, 6));
    assert.equal(fs.statSync(file).mtimeMs, mtime);
    const d = await open(file, 'writeback', { openImpl });
    await d.close();
  });
});

describe('reads and writes', () => {
  for (const name of CACHE_MODE_NAMES) {
    it(`cache=${name}: patterns at aligned and unaligned offsets read back, in the driver and the file`, async () => {
      const size = 10 * MiB;
      const file = tmpFile(size, (b) => pattern(size, 100).copy(b));
      const model = pattern(size, 100);
      const d = await open(file, name);
      try {
        const cases: [number, number][] = [
          [0, 4096],
          [512, 512],
          [1, 1],
          [100, 11],
          [4095, 2],
          [511, 1026],
          [65536 + 7, 65536 * 3 + 5],
          [3 * MiB + 333, 5 * MiB + 77], // crosses the 4 MiB bounce chunk
          [size - 100, 100],
        ];
        let seed = 1;
        for (const [offset, length] of cases) {
          const data = pattern(length, seed++);
          await d.write(offset, data, { fua: seed % 2 === 0 });
          data.copy(model, offset);
          assert.deepEqual(await readAll(d, offset, length), data, `read back ${offset}+${length}`);
        }
        // Reads at odd places see the model, including ones that straddle written ranges.
        for (const [offset, length] of [
          [0, size],
          [3, 5000],
          [MiB - 1, 3],
          [size - 1, 1],
        ]) {
          assert.deepEqual(await readAll(d, offset, length), model.subarray(offset, offset + length));
        }
        // A pool buffer takes the zero-copy path under O_DIRECT.
        const aligned = alignedPool.acquire(8192);
        pattern(8192, 99).copy(aligned);
        await d.write(8192, aligned);
        pattern(8192, 99).copy(model, 8192);
        aligned.fill(0);
        await d.read(8192, aligned);
        assert.deepEqual(aligned, pattern(8192, 99));
        alignedPool.release(aligned);
        await d.flush();
        assert.equal(d.length(), size);
      } finally {
        await d.close();
      }
      assert.deepEqual(fs.readFileSync(file), model);
    });
  }

  for (const name of ['writeback', 'none'] as const) {
    it(`cache=${name}: writes past EOF grow the file to the exact length; reads past EOF are zeros`, async () => {
      const file = tmpFile(1000, (b) => b.fill(0x11));
      const d = await open(file, name);
      try {
        assert.deepEqual(await readAll(d, 990, 20), Buffer.concat([Buffer.alloc(10, 0x11), Buffer.alloc(10)]));
        await d.write(1500, Buffer.alloc(100, 0x22));
        assert.equal(d.length(), 1600);
        assert.equal(fs.statSync(file).size, 1600);
        await d.write(5000, Buffer.alloc(3, 0x33));
        assert.equal(d.length(), 5003);
        assert.equal(fs.statSync(file).size, 5003);
        const expect = Buffer.alloc(5003);
        expect.fill(0x11, 0, 1000);
        expect.fill(0x22, 1500, 1600);
        expect.fill(0x33, 5000, 5003);
        assert.deepEqual(await readAll(d, 0, 5003), expect);
        assert.deepEqual(fs.readFileSync(file), expect);
      } finally {
        await d.close();
      }
    });
  }

  it('cache=none: concurrent unaligned writes into the same blocks all land (no lost read-modify-write)', async () => {
    const file = tmpFile(64 * 1024);
    const d = await open(file, 'none');
    const expect = Buffer.alloc(64 * 1024);
    try {
      // 512 eight-byte writes into 4 KiB, all in flight at once: every one shares a block.
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 512; i++) {
        const data = Buffer.alloc(8, (i % 255) + 1);
        data.copy(expect, 1000 + i * 8);
        writes.push(d.write(1000 + i * 8, data));
      }
      // Aligned writes into neighbouring whole blocks race with them too.
      for (let i = 0; i < 8; i++) {
        const data = pattern(4096, i);
        data.copy(expect, 8192 + i * 4096);
        writes.push(d.write(8192 + i * 4096, data));
      }
      await Promise.all(writes);
      assert.deepEqual(await readAll(d, 0, expect.length), expect);
    } finally {
      await d.close();
    }
    assert.deepEqual(fs.readFileSync(file), expect);
  });

  it('cache=none: concurrent overlapping unaligned writes end consistent (each byte from a covering write)', async () => {
    const size = 256 * 1024;
    const file = tmpFile(size, (b) => b.fill(0xee));
    const d = await open(file, 'none');
    const ranges: [number, number, number][] = [];
    try {
      let x = 12345;
      const rand = (n: number) => {
        x = (x * 1103515245 + 12345) >>> 0;
        return x % n;
      };
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 200; i++) {
        const offset = rand(size - 20000);
        const length = 1 + rand(10000);
        const value = (i % 254) + 1;
        ranges.push([offset, offset + length, value]);
        writes.push(d.write(offset, Buffer.alloc(length, value)));
      }
      await Promise.all(writes);
      const got = await readAll(d, 0, size);
      for (let pos = 0; pos < size; pos++) {
        const covering = ranges.filter(([s, e]) => s <= pos && pos < e).map(([, , v]) => v);
        if (covering.length === 0) assert.equal(got[pos], 0xee, `untouched byte ${pos}`);
        else assert.ok(covering.includes(got[pos]), `byte ${pos} = ${got[pos]} not from a covering write`);
      }
      // Requests queued one after another (each awaited) are strictly ordered: the last wins.
      await d.write(1000, Buffer.alloc(3000, 0x01));
      await d.write(1500, Buffer.alloc(100, 0x02));
      const tail = await readAll(d, 1000, 3000);
      assert.equal(tail[0], 0x01);
      assert.equal(tail[500], 0x02);
      assert.equal(tail[600], 0x01);
    } finally {
      await d.close();
    }
  });
});

describe('flush', () => {
  it('a failed fdatasync is sticky: every later flush and FUA write fails with EIO', async () => {
    let calls = 0;
    let failNext = false;
    const syncImpl = async () => {
      calls++;
      if (failNext) {
        failNext = false;
        throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
      }
    };
    const file = tmpFile(MiB);
    const d = await open(file, 'writeback', { syncImpl });
    try {
      await d.flush();
      await d.write(0, Buffer.alloc(512, 1), { fua: true });
      assert.equal(calls, 2);
      failNext = true;
      await assert.rejects(d.flush(), (err: VdiskError) => {
        assert.equal(err.code, 'EIO');
        assert.match(err.message, /Could not flush '.*': Input\/output error/);
        return true;
      });
      for (let i = 0; i < 3; i++) await assert.rejects(d.flush(), { code: 'EIO' });
      await assert.rejects(d.write(0, Buffer.alloc(512), { fua: true }), { code: 'EIO' });
      assert.equal(calls, 3, 'no fdatasync after the failure can be trusted, so none is made');
    } finally {
      await d.close();
    }
  });

  it('flushes that arrive while an fdatasync runs share the next one, which starts after it', async () => {
    const started: Array<() => void> = [];
    let calls = 0;
    const syncImpl = () =>
      new Promise<void>((resolve) => {
        calls++;
        started.push(resolve);
      });
    const d = await open(tmpFile(MiB), 'writeback', { syncImpl });
    try {
      const first = d.flush();
      await new Promise((r) => setImmediate(r));
      assert.equal(calls, 1);
      // Written after the first sync began: only a later sync covers it.
      await d.write(0, Buffer.alloc(512, 1));
      let laterDone = 0;
      const later = Array.from({ length: 10 }, () => d.flush().then(() => laterDone++));
      await new Promise((r) => setImmediate(r));
      assert.equal(calls, 1, 'no second fdatasync while the first runs');
      started[0]!();
      await first;
      await new Promise((r) => setImmediate(r));
      assert.equal(laterDone, 0, 'the later flushes wait for a sync that began after them');
      assert.equal(calls, 2, 'one sync serves all ten');
      started[1]!();
      await Promise.all(later);
      assert.equal(laterDone, 10);
      assert.equal(calls, 2);
    } finally {
      await d.close();
    }
  });

  it('cache=unsafe never syncs, not even for FUA; the others sync on flush', async () => {
    for (const name of CACHE_MODE_NAMES) {
      let calls = 0;
      const d = await open(tmpFile(MiB), name, { syncImpl: async () => void calls++ });
      await d.write(0, Buffer.alloc(4096, 1), { fua: true });
      await d.flush();
      await d.close();
      assert.equal(calls, name === 'unsafe' ? 0 : 2, name);
    }
  });
});

describe('truncate and preallocation', () => {
  const size = 8 * MiB;
  for (const name of ['writeback', 'none'] as const) {
    it(`cache=${name}: off grows sparse`, async () => {
      const file = tmpFile();
      const d = await open(file, name);
      try {
        await d.truncate(size, 'off');
        assert.equal(d.length(), size);
        assert.equal(fs.statSync(file).size, size);
        assert.equal(native().seekData(d.fd, 0), -1);
        assert.ok(blocksOf(file) < 64 * 1024, `blocks: ${blocksOf(file)}`);
        assert.deepEqual(await readAll(d, size - 4096, 4096), Buffer.alloc(4096));
      } finally {
        await d.close();
      }
    });

    it(`cache=${name}: falloc reserves blocks that read as zero (holes to SEEK_DATA)`, async () => {
      const file = tmpFile();
      const d = await open(file, name);
      try {
        await d.truncate(size, 'falloc');
        assert.equal(d.length(), size);
        assert.equal(fs.statSync(file).size, size);
        assert.ok(blocksOf(file) >= size, `blocks: ${blocksOf(file)}`);
        // ext4/xfs report unwritten extents as holes: "zero, not data", as qemu-img map shows.
        assert.equal(native().seekData(d.fd, 0), -1);
        const st = await d.blockStatus(0, size);
        assert.deepEqual([st.zero, st.data, st.length], [true, false, size]);
        assert.deepEqual(await readAll(d, 12345, 65536), Buffer.alloc(65536));
      } finally {
        await d.close();
      }
    });

    it(`cache=${name}: full writes zeros over the new tail only, with progress`, async () => {
      const file = tmpFile(1000, (b) => b.fill(0x44)); // an unaligned old end
      const d = await open(file, name);
      const progress: [number, number][] = [];
      try {
        await d.truncateWithProgress(size, 'full', (done, total) => progress.push([done, total]));
        assert.equal(d.length(), size);
        assert.equal(fs.statSync(file).size, size);
        assert.ok(blocksOf(file) >= size, `blocks: ${blocksOf(file)}`);
        assert.equal(native().seekData(d.fd, 0), 0);
        assert.equal(native().seekHole(d.fd, 0), size);
        const st = await d.blockStatus(0, size);
        assert.deepEqual([st.data, st.zero, st.length], [true, false, size]);
        const all = await readAll(d, 0, size);
        assert.ok(all.subarray(0, 1000).every((b) => b === 0x44));
        assert.ok(all.subarray(1000).every((b) => b === 0));
        assert.ok(progress.length >= 2);
        assert.deepEqual(progress.at(-1), [size - 1000, size - 1000]);
        for (let i = 1; i < progress.length; i++) assert.ok(progress[i][0] > progress[i - 1][0]);
      } finally {
        await d.close();
      }
    });
  }

  it('shrinks, refuses metadata, and truncate calls the progress-less path', async () => {
    const file = tmpFile(4 * MiB, (b) => pattern(4 * MiB, 8).copy(b));
    const d = await open(file, 'writeback');
    try {
      await assert.rejects(d.truncate(8 * MiB, 'metadata'), (err: VdiskError) => {
        assert.equal(err.code, 'EINVAL');
        assert.match(err.message, /metadata/);
        return true;
      });
      assert.equal(fs.statSync(file).size, 4 * MiB);
      await d.truncate(MiB + 3, 'full');
      assert.equal(d.length(), MiB + 3);
      assert.deepEqual(fs.readFileSync(file), pattern(4 * MiB, 8).subarray(0, MiB + 3));
      await d.truncate(2 * MiB, 'full');
      assert.deepEqual(
        await readAll(d, MiB, MiB),
        Buffer.concat([pattern(MiB + 3, 8).subarray(MiB), Buffer.alloc(MiB - 3)]),
      );
    } finally {
      await d.close();
    }
  });
});

describe('discard, write zeroes and block status', () => {
  for (const name of ['writeback', 'none'] as const) {
    it(`cache=${name}: discard punches a hole: blocks drop and the range reads zero`, async () => {
      const file = tmpFile(4 * MiB, (b) => pattern(4 * MiB, 9).copy(b));
      const d = await open(file, name);
      try {
        await d.flush();
        const before = blocksOf(file);
        await d.discard(MiB, 2 * MiB);
        assert.ok(before - blocksOf(file) >= 2 * MiB, `blocks ${before} -> ${blocksOf(file)}`);
        assert.deepEqual(await readAll(d, MiB, 2 * MiB), Buffer.alloc(2 * MiB));
        assert.deepEqual(await readAll(d, 0, MiB), pattern(4 * MiB, 9).subarray(0, MiB));
        assert.deepEqual(await readAll(d, 3 * MiB, MiB), pattern(4 * MiB, 9).subarray(3 * MiB));
        assert.equal(native().seekHole(d.fd, 0), MiB);
        assert.equal(d.length(), 4 * MiB);
        // An unaligned discard never destroys bytes outside its range.
        await d.discard(3 * MiB + 100, 5000);
        const model = pattern(4 * MiB, 9);
        const got = await readAll(d, 3 * MiB, MiB);
        assert.deepEqual(got.subarray(0, 100), model.subarray(3 * MiB, 3 * MiB + 100));
        assert.deepEqual(got.subarray(5100), model.subarray(3 * MiB + 5100));
      } finally {
        await d.close();
      }
    });

    it(`cache=${name}: writeZeroes reads zero, with and without unmap, aligned or not`, async () => {
      const size = 4 * MiB;
      const model = pattern(size, 10);
      const file = tmpFile(size, (b) => model.copy(b));
      const d = await open(file, name);
      try {
        await d.flush();
        const before = blocksOf(file);
        await d.writeZeroes(MiB, MiB, { mayUnmap: true });
        model.fill(0, MiB, 2 * MiB);
        assert.ok(before - blocksOf(file) >= MiB, 'mayUnmap punched');
        await d.writeZeroes(2 * MiB, MiB);
        model.fill(0, 2 * MiB, 3 * MiB);
        await d.writeZeroes(3 * MiB + 77, 70000, { noFallback: true });
        model.fill(0, 3 * MiB + 77, 3 * MiB + 77 + 70000);
        await d.writeZeroes(5, 300, { mayUnmap: true });
        model.fill(0, 5, 305);
        assert.deepEqual(await readAll(d, 0, size), model);
        assert.equal(d.length(), size);
        // Past EOF: the file grows and the new range reads zero.
        await d.writeZeroes(size - 10, 20000);
        assert.equal(d.length(), size - 10 + 20000);
        assert.equal(fs.statSync(file).size, size - 10 + 20000);
        assert.deepEqual(await readAll(d, size - 10, 20000), Buffer.alloc(20000));
      } finally {
        await d.close();
      }
      assert.deepEqual(fs.readFileSync(file).subarray(0, size - 10), model.subarray(0, size - 10));
    });
  }

  it('writeZeroes on tmpfs (no ZERO_RANGE) punches and re-reserves', async (t) => {
    if (!fs.existsSync('/dev/shm')) return t.skip('no /dev/shm');
    const file = `/dev/shm/vdisk-zero-${process.pid}.img`;
    fs.writeFileSync(file, pattern(MiB, 11));
    try {
      const d = await open(file, 'writeback');
      await d.writeZeroes(4096, 65536);
      await d.writeZeroes(128 * 1024, 65536, { mayUnmap: true });
      const got = await readAll(d, 0, MiB);
      await d.close();
      const model = pattern(MiB, 11);
      model.fill(0, 4096, 4096 + 65536);
      model.fill(0, 128 * 1024, 192 * 1024);
      assert.deepEqual(got, model);
    } finally {
      fs.rmSync(file, { force: true });
    }
  });

  it('blockStatus walks data and hole runs, and past EOF is a hole', async () => {
    const file = tmpFile();
    const d = await open(file, 'writeback');
    try {
      await d.truncate(4 * MiB, 'off');
      await d.write(0, pattern(65536, 1));
      await d.write(2 * MiB, pattern(65536, 2));
      const runs: [number, number, boolean, boolean][] = [];
      for (let off = 0; off < 4 * MiB; ) {
        const e = await d.blockStatus(off, 4 * MiB - off);
        assert.equal(e.offset, off);
        assert.equal(e.allocated, true);
        assert.equal(e.hostOffset, off);
        assert.equal(e.hostFile, file);
        runs.push([e.offset, e.length, e.data, e.zero]);
        off += e.length;
      }
      assert.deepEqual(runs, [
        [0, 65536, true, false],
        [65536, 2 * MiB - 65536, false, true],
        [2 * MiB, 65536, true, false],
        [2 * MiB + 65536, 2 * MiB - 65536, false, true],
      ]);
      const inside = await d.blockStatus(100, 10);
      assert.deepEqual([inside.offset, inside.length, inside.data, inside.zero], [100, 10, true, false]);
      const past = await d.blockStatus(5 * MiB, 4096);
      assert.deepEqual([past.length, past.zero, past.data], [4096, true, false]);
      assert.equal(await d.allocatedSize(), blocksOf(file));
    } finally {
      await d.close();
    }
  });
});

describe('image locking', () => {
  it('two vdisk writers refuse each other; the lock goes with close', async () => {
    const file = tmpFile(MiB);
    const a = await open(file, 'writeback');
    assert.equal(a.locked, true);
    await assert.rejects(open(file, 'none'), (err: VdiskError) => {
      assert.equal(err.code, 'EBUSY');
      assert.equal(err.message, `Failed to get "write" lock: Is another process using the image [${file}]?`);
      return true;
    });
    await assert.rejects(open(file, 'writeback', { readOnly: true }), { code: 'EBUSY' });
    await a.close();
    const b = await open(file, 'writeback');
    await b.close();
  });

  it('readers share with each other but keep writers out, and lock:false opts readers out', async () => {
    const file = tmpFile(MiB);
    const r1 = await open(file, 'writeback', { readOnly: true });
    const r2 = await open(file, 'none', { readOnly: true });
    await assert.rejects(open(file, 'writeback'), (err: VdiskError) => {
      assert.equal(err.code, 'EBUSY');
      assert.match(err.message, /^Failed to get "write" lock/);
      return true;
    });
    // Opting out of the lock is for readers only: an unlocked writer could lose a locked one's data.
    await assert.rejects(open(file, 'writeback', { lock: false }), (err: VdiskError) => {
      assert.equal(err.code, 'EINVAL');
      assert.match(err.message, /force-share \(-U\) can only be used with read-only images/);
      return true;
    });
    const unlocked = await open(file, 'writeback', { readOnly: true, lock: false });
    assert.equal(unlocked.locked, false);
    const byte = Buffer.alloc(1, 0xff);
    await unlocked.read(0, byte);
    assert.equal(byte[0], 0);
    await Promise.all([r1.close(), r2.close(), unlocked.close()]);
  });

  describe('against qemu-io', () => {
    const haveQemuIo = hasCommand('qemu-io');

    function qemuIo(file: string, ...cmds: string[]) {
      return spawnSync('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), file], { encoding: 'utf8' });
    }

    it('qemu-io cannot write while vdisk holds the image writable', async (t) => {
      if (!haveQemuIo) return t.skip('qemu-io not installed');
      const file = tmpFile(MiB);
      const d = await open(file, 'writeback');
      try {
        await d.write(0, Buffer.alloc(4096, 0x11));
        const r = qemuIo(file, 'write -P 0x5a 0 4k');
        assert.notEqual(r.status, 0);
        assert.match(r.stderr, /Failed to get "write" lock/);
        assert.deepEqual(fs.readFileSync(file).subarray(0, 4096), Buffer.alloc(4096, 0x11));
      } finally {
        await d.close();
      }
      // The control: with vdisk gone the same command works.
      const r = qemuIo(file, 'write -P 0x5a 0 4k');
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(fs.readFileSync(file).subarray(0, 4096), Buffer.alloc(4096, 0x5a));
    });

    it('qemu-io reads what vdisk wrote once vdisk closes; vdisk reads what qemu-io wrote', async (t) => {
      if (!haveQemuIo) return t.skip('qemu-io not installed');
      const file = tmpFile(MiB);
      const d = await open(file, 'none');
      await d.write(512, Buffer.alloc(1024, 0x66));
      await d.close();
      const r = qemuIo(file, 'read -P 0x66 512 1k', 'write -P 0x77 65536 64k');
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.doesNotMatch(r.stdout, /Pattern verification failed/);
      const d2 = await open(file, 'none', { readOnly: true });
      assert.deepEqual(await readAll(d2, 65536, 65536), Buffer.alloc(65536, 0x77));
      await d2.close();
    });

    it('vdisk refuses to open while a qemu-io process holds the image writable', async (t) => {
      if (!haveQemuIo) return t.skip('qemu-io not installed');
      const file = tmpFile(MiB);
      const child: ChildProcess = spawn(
        'qemu-io',
        ['-f', 'raw', '-c', 'write -P 0x3c 0 4k', '-c', 'sleep 30000', file],
        {
          stdio: 'ignore',
        },
      );
      try {
        // Wait until qemu-io holds its "write" permission byte (101).
        const deadline = Date.now() + 10_000;
        const probe = fs.openSync(file, 'r');
        try {
          while (!native().testLock(probe, 101, 1, 'write')) {
            assert.ok(Date.now() < deadline, 'qemu-io did not lock the image');
            await new Promise((r) => setTimeout(r, 20));
          }
        } finally {
          fs.closeSync(probe);
        }
        await assert.rejects(open(file, 'writeback'), (err: VdiskError) => {
          assert.equal(err.code, 'EBUSY');
          assert.equal(err.message, `Failed to get shared "write" lock: Is another process using the image [${file}]?`);
          return true;
        });
        // Like qemu-img without -U, a vdisk reader does not share write either.
        await assert.rejects(open(file, 'writeback', { readOnly: true }), { code: 'EBUSY' });
        // Like -U: without locks vdisk sees the data qemu-io wrote.
        while (fs.readFileSync(file)[0] !== 0x3c) {
          assert.ok(Date.now() < deadline, 'qemu-io did not write');
          await new Promise((r) => setTimeout(r, 20));
        }
        const peek = await open(file, 'writeback', { readOnly: true, lock: false });
        assert.deepEqual(await readAll(peek, 0, 4096), Buffer.alloc(4096, 0x3c));
        await peek.close();
      } finally {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill();
        await exited;
      }
      const d = await open(file, 'writeback');
      await d.close();
    });
  });
});

describe('block devices', () => {
  it('a loop device: size and logical block size from ioctls, I/O through O_DIRECT', async (t) => {
    if (process.getuid?.() !== 0 || !hasCommand('losetup')) return t.skip('needs root and losetup');
    const backing = tmpFile(8 * MiB, (b) => pattern(8 * MiB, 12).copy(b));
    let dev: string;
    try {
      dev = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' }).trim();
    } catch {
      return t.skip('losetup could not attach a loop device here');
    }
    try {
      const d = await open(dev, 'none');
      try {
        assert.equal(d.isBlockDevice, true);
        assert.equal(d.length(), 8 * MiB);
        assert.equal(d.alignment.request, 512);
        assert.equal(d.capabilities.resize, false);
        assert.deepEqual(await readAll(d, 1000, 5000), pattern(8 * MiB, 12).subarray(1000, 6000));
        await d.write(777, Buffer.alloc(100, 0x5e));
        assert.deepEqual(await readAll(d, 777, 100), Buffer.alloc(100, 0x5e));
        await d.writeZeroes(4096 + 3, 8192);
        assert.deepEqual(await readAll(d, 4096 + 3, 8192), Buffer.alloc(8192));
        const st = await d.blockStatus(0, 8 * MiB);
        assert.deepEqual([st.data, st.length], [true, 8 * MiB]);
        await assert.rejects(d.truncate(16 * MiB, 'off'), { code: 'ENOTSUP' });
        await d.flush();
      } finally {
        await d.close();
      }
    } finally {
      execFileSync('losetup', ['-d', dev]);
    }
  });
});
