/**
 * IoSession's qemu-io commands beyond read and write, on an image in memory (the interop tests
 * compare them with qemu-io): requests left in flight and drained, vectored requests, alloc,
 * -d ignore, and open/close through the session's opener.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BlockBackend } from '../../src/block/backend.js';
import { cacheMode } from '../../src/block/cache-mode.js';
import type { IoOpenRequest } from '../../src/cli/io/open-options.js';
import { IoSession } from '../../src/cli/io/session.js';
import { RawDriver } from '../../src/format/raw/driver.js';
import { MemoryDriver } from '../../src/io/memory.js';

const MiB = 1 << 20;

function memoryImage(): BlockBackend {
  return new BlockBackend(new RawDriver(new MemoryDriver({ length: MiB })), { writeCache: true });
}

function session(backend?: BlockBackend, opener?: (name: string, r: IoOpenRequest) => Promise<BlockBackend>) {
  const log = { out: '', err: '' };
  const s = new IoSession({
    backend,
    format: 'raw',
    out: (t) => (log.out += t),
    err: (t) => (log.err += t),
    opener: opener && (async (name, r) => ({ backend: await opener(name, r), format: 'raw', probedRaw: false })),
  });
  return { s, log };
}

const reports = (text: string) =>
  text
    .replace(/; .* ops\/sec\)/g, '; T')
    .split('\n')
    .filter(Boolean);

describe('io session: vectored and asynchronous requests', () => {
  it('aio_write stays in flight until aio_flush; readv checks the whole vector', async () => {
    const backend = memoryImage();
    const { s, log } = session(backend);
    assert.equal(await s.run('aio_write -P 0x21 0 4k 4k'), true);
    assert.equal(await s.run('aio_write -P 0x22 8k 512'), true);
    assert.equal(await s.run('aio_flush'), true);
    assert.deepEqual(reports(log.out).sort(), [
      '512 bytes, 1 ops; T',
      '8 KiB, 1 ops; T',
      'wrote 512/512 bytes at offset 8192',
      'wrote 8192/8192 bytes at offset 0',
    ]);
    log.out = '';
    assert.equal(await s.run('readv -P 0x21 0 1k 3k 4k'), true);
    assert.deepEqual(reports(log.out), ['read 8192/8192 bytes at offset 0', '8 KiB, 1 ops; T']);
    log.out = '';
    assert.equal(await s.run('readv -P 0x21 4k 4k 512'), false);
    assert.match(log.out, /^Pattern verification failed at offset 4096, 4608 bytes\n/);
    assert.deepEqual((await backend.read(8192, 512)).equals(Buffer.alloc(512, 0x22)), true);
    await s.finish();
    assert.ok(backend.closed);
  });

  it('an aio failure is reported when it completes, and the command still succeeded', async () => {
    const { s, log } = session(memoryImage());
    assert.equal(await s.run('aio_read 2M 4k'), true);
    await s.run('aio_flush');
    assert.match(log.err, /^readv failed: Request past the end of the image/);
    assert.equal(s.failures, 0);
    await s.finish();
  });

  it('alloc counts what this layer holds, up to the end', async () => {
    const backend = memoryImage();
    const { s, log } = session(backend);
    await s.run('alloc 0 16k');
    await s.run('alloc 1023k 4k');
    await s.run('alloc 2M');
    assert.deepEqual(log.out.split('\n').filter(Boolean), [
      '16384/16384 bytes allocated at offset 0 bytes',
      '1024/1024 bytes allocated at offset 1023 KiB',
      '0/0 bytes allocated at offset 2 MiB',
    ]);
    await s.finish();
  });
});

describe('io session: open and close', () => {
  it('commands need an open image; open takes the cache, discard and format options', async () => {
    const requests: IoOpenRequest[] = [];
    const images: BlockBackend[] = [];
    const { s, log } = session(undefined, async (_name, r) => {
      requests.push(r);
      images.push(memoryImage());
      return images[images.length - 1]!;
    });
    assert.equal(await s.run('read 0 1'), false);
    assert.equal(log.err, "no file open, try 'help open'\n");
    assert.equal(await s.run('open -n -d ignore -f raw a.img'), true);
    assert.equal(requests[0]!.cache, cacheMode('none'));
    assert.equal(requests[0]!.unmap, false);
    assert.equal(requests[0]!.format, 'raw');
    log.err = '';
    assert.equal(await s.run('open a.img'), false);
    assert.equal(log.err, "vdisk: file open already, try 'help close'\n");
    // -d ignore: the discard is reported and frees nothing.
    await s.run('write -P 0x5 0 4k');
    await s.run('discard 0 4k');
    assert.ok((await images[0]!.read(0, 4096)).equals(Buffer.alloc(4096, 5)));
    assert.equal(await s.run('close'), true);
    assert.ok(images[0]!.closed);
    assert.equal(await s.run('close'), false);
    log.err = '';
    assert.equal(await s.run('open -d bogus b.img'), false);
    assert.equal(log.err, 'vdisk: Invalid discard option: bogus\n');
    assert.equal(await s.run('open -t none -i native -o driver=raw b.img'), true);
    assert.equal(requests[1]!.aio, 'native');
    await s.finish();
    assert.ok(images[1]!.closed);
  });
});
