/**
 * docs/remote.md's walk-through, run as written: every `sh` block of the page, in order, as one
 * bash script (stopping at the first failing command) in an empty directory, with `vdisk` on the
 * PATH. What the commands check themselves (qemu-io's pattern reads, qemu-img check and
 * compare) fails the script; the test then looks at what they printed.
 */
import assert from 'node:assert/strict';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { needTools, run, VDISK_MAIN } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';

const DOC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../docs/remote.md');

/** The page's `sh` blocks, in order. */
export function shellBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
}

describe('docs/remote.md', () => {
  it('runs as written: a remote base, a local overlay served to clients, converted back', {
    timeout: 180_000,
  }, async (t) => {
    if (!needTools(t, 'qemu-img', 'qemu-io', 'qemu-nbd', 'nbdkit', 'nbdinfo')) return;
    const blocks = shellBlocks(await readFile(DOC, 'utf8'));
    assert.ok(blocks.length >= 5, 'the walk-through has its steps');
    await withTempDir(async (dir) => {
      const bin = path.join(dir, 'bin');
      const work = path.join(dir, 'work');
      await run('mkdir', [bin, work]);
      await writeFile(path.join(bin, 'vdisk'), `#!/bin/sh\nexec "${process.execPath}" "${VDISK_MAIN}" "$@"\n`);
      await chmod(path.join(bin, 'vdisk'), 0o755);
      // Servers left running by a failed step are stopped whatever happens.
      const cleanup = `trap 'for f in *.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done; kill $(jobs -p) 2>/dev/null; true' EXIT\n`;
      const failed = `trap 'echo "vdisk walk-through: exit $? at: $BASH_COMMAND" >&2' ERR\n`;
      const script = `set -euo pipefail\n${cleanup}${failed}${blocks.join('\n')}`;
      const r = await run('bash', ['-c', script], {
        cwd: work,
        env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
      });
      assert.equal(r.code, 0, `the walk-through failed:\n${r.stderr}\n${r.stdout}`);
      const out = r.stdout;
      // Step 1: info of the export, as qemu-img prints it.
      assert.match(out, /^image: nbd\+unix:\/\/\?socket=.*golden\.sock\nfile format: raw\nvirtual size: 64 MiB/m);
      // Step 2: the overlay is clean, and its own megabyte is at depth 0 over the remote base.
      assert.equal(out.match(/No errors were found on the image\./g)?.length, 2, 'overlay and the qcow2 in the export');
      assert.match(out, /^0x100000\s+0x100000\s+0x\w+\s+.*overlay\.qcow2$/m);
      assert.match(out, /^backing file: nbd\+unix:\/\/\/\?socket=.*golden\.sock$/m);
      // Step 3: nbdinfo saw the export, qemu-io read both layers without a mismatch.
      assert.match(out, /export-size: 67108864/);
      assert.doesNotMatch(out, /Pattern verification failed/);
      assert.equal(out.match(/^read \d+\/\d+ bytes/gm)?.length, 4);
      // Steps 4 and 5: identical wherever it was converted to.
      assert.equal(out.match(/^Images are identical\.$/gm)?.length, 3);
    });
  });
});
