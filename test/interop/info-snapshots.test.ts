/**
 * info shows internal snapshots as qemu-img info does: the "snapshots" array of the JSON and the
 * "Snapshot list:" table of the human output, byte for byte, for images qemu-img made, v3 and
 * v2 (whose format-specific part differs).
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { hasCommand, run, vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';

const haveQemu = hasCommand('qemu-img');

describe('info of images with snapshots', { skip: !haveQemu && 'qemu-img not installed' }, () => {
  for (const compat of ['1.1', '0.10']) {
    it(`prints what qemu-img info prints (compat=${compat})`, async () => {
      await withTempDir(async (dir) => {
        const file = path.join(dir, 'sn.qcow2');
        assert.equal(
          (await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `compat=${compat}`, file, '1M'])).code,
          0,
        );
        for (const name of ['first', 'a-much-longer-snapshot-name']) {
          assert.equal((await run('qemu-img', ['snapshot', '-c', name, file])).code, 0);
        }
        for (const output of ['json', 'human']) {
          const theirs = await run('qemu-img', ['info', `--output=${output}`, file]);
          const ours = await vdisk(['info', `--output=${output}`, file]);
          assert.equal(ours.code, 0, ours.stderr);
          assert.equal(ours.stdout, theirs.stdout, `info --output=${output}`);
        }
      });
    });
  }
});
