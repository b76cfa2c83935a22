/**
 * Cold and warm reads on a real image: the page cache is dropped before each cold repetition and
 * never before a warm one (which runs once), and a warm figure, however fast, does not move a
 * combination's score.
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { openImage } from '../../src/engine/open.js';
import { runImageWorkloads } from '../../src/tools/study/image-workloads.js';
import { PROFILES } from '../../src/tools/study/matrix.js';
import { rankResults } from '../../src/tools/study/rank.js';
import { combinationOf } from '../helpers/study.js';
import { withTempDir } from '../helpers/tmp.js';

describe('cold and warm reads', () => {
  it('drop the page cache before each cold repetition only, and leave warm reads out of the score', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'image.raw');
      await writeFile(file, Buffer.alloc(4 * 1024 * 1024));
      const backend = await openImage(file, { format: 'raw', cache: 'writeback' });
      const events: string[] = [];
      try {
        await runImageWorkloads(
          backend,
          {
            profile: PROFILES.smoke,
            workloads: ['seq-read', 'seq-read-warm', 'rand-read', 'rand-read-warm'],
            size: backend.length,
            evict: async () => {
              events.push('evict');
            },
          },
          (w) => events.push(`${w.name}×${w.samples.length}`),
        );
      } finally {
        await backend.close();
      }
      const cold = PROFILES.smoke.repeats;
      assert.deepEqual(events, [
        ...Array(cold).fill('evict'),
        `seq-read×${cold}`,
        'seq-read-warm×1',
        ...Array(cold).fill('evict'),
        `rand-read×${cold}`,
        'rand-read-warm×1',
      ]);
    });
    const fast = combinationOf('raw/off/none', { 'seq-read': [100], 'seq-read-warm': [100] });
    const cached = combinationOf('raw/off/writeback', { 'seq-read': [100], 'seq-read-warm': [10000] });
    const ranked = rankResults({ results: [fast, cached] });
    assert.deepEqual(
      ranked.map((r) => r.score),
      [1, 1],
      'the warm figure does not decide the order',
    );
  });
});
