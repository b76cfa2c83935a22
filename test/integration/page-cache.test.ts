/**
 * Dropping an image's pages from the host page cache (what the study does before a cold read):
 * after evictFromPageCache, reading the file's first page without waiting (preadv2 RWF_NOWAIT)
 * finds nothing cached, where a moment before it found the bytes; written data survives it.
 */
import assert from 'node:assert/strict';
import { open, readFile, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { native } from '../../src/io/native.js';
import { evictFromPageCache } from '../../src/io/page-cache.js';
import { withTempDir } from '../helpers/tmp.js';

/** tmpfs keeps files in the page cache itself: nothing there can be dropped. */
const TMPFS_MAGIC = 0x01021994;

async function cachedBytes(file: string): Promise<number> {
  const handle = await open(file, 'r');
  try {
    return native().readCached(handle.fd, Buffer.alloc(4096), 0, 4096, 0);
  } finally {
    await handle.close();
  }
}

describe('evicting a file from the page cache', () => {
  it('leaves no page to read without waiting, and the data as it was', async (t) => {
    await withTempDir(async (dir) => {
      if ((await statfs(dir)).type === TMPFS_MAGIC) {
        t.skip(`${dir} is on tmpfs, whose pages cannot be dropped`);
        return;
      }
      const file = path.join(dir, 'image.raw');
      const data = Buffer.alloc(4 * 1024 * 1024, 0x5a);
      await writeFile(file, data); // dirty pages: written out by the eviction first
      await readFile(file);
      assert.equal(await cachedBytes(file), 4096, 'cached after a read');
      await evictFromPageCache(file);
      assert.equal(await cachedBytes(file), -1, 'not cached after the eviction');
      assert.deepEqual(await readFile(file), data);
    });
  });

  it('says which file it could not evict', async () => {
    await assert.rejects(
      evictFromPageCache('/nonexistent/image.raw'),
      /Could not drop '\/nonexistent\/image\.raw' from the page cache/,
    );
  });
});
