import assert from 'node:assert/strict';
import { it } from 'node:test';
import { CACHE_MODE_NAMES, parseCacheMode } from '../../src/block/cache-mode.js';
import { VdiskError } from '../../src/block/errors.js';

it('parses the five cache modes with the semantics of QEMU', () => {
  const table = Object.fromEntries(
    CACHE_MODE_NAMES.map((name) => {
      const m = parseCacheMode(name);
      return [name, [m.direct, m.writeCache, m.noFlush]];
    }),
  );
  assert.deepEqual(table, {
    none: [true, true, false],
    writethrough: [false, false, false],
    writeback: [false, true, false],
    directsync: [true, false, false],
    unsafe: [false, true, true],
  });
  assert.equal(parseCacheMode('default').name, 'writeback');
});

it('refuses an unknown cache mode with one clear line', () => {
  assert.throws(
    () => parseCacheMode('fast'),
    (err: unknown) =>
      err instanceof VdiskError && err.code === 'EINVAL' && /Invalid cache option: fast/.test(err.message),
  );
});
