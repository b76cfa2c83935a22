/**
 * A qcow2 image written into an NBD export (`convert -O qcow2 … nbd://…`, `create -f qcow2
 * nbd://…`), as qemu-img does for protocols that cannot create files: the export keeps its size
 * and its old bytes past the image's end. qemu-img reads the result over the same URI: info,
 * check, compare and qemu-io's pattern reads, against qemu-nbd and nbdkit (file plugin).
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { type ServerProcess, startNbdkit, startQemuNbd } from '../helpers/nbd-serve.js';
import { lines, needTools as need, runOk, vdisk, vdiskOk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';

const io = (commands: string[]) => commands.flatMap((c) => ['-c', c]);

function verified(out: string): void {
  assert.doesNotMatch(out, /Pattern verification failed|error|failed/i, out);
}

const WRITES = ['write -P 0x11 0 1M', 'write -P 0x22 3M+4k 100k', 'write -z 5M 1M', 'write -P 0x33 15M 64k'];
const READS = [
  'read -P 0x11 0 1M',
  'read -P 0 1M 2M',
  'read -P 0x22 3149824 100k',
  'read -P 0 5M 1M',
  'read -P 0x33 15M 64k',
];

/** A 64 MiB raw file full of 0xee (an export that held something before), and a 16 MiB qcow2 source. */
async function prepare(dir: string): Promise<{ exported: string; source: string }> {
  const exported = path.join(dir, 'export.raw');
  await runOk('qemu-img', ['create', '-q', '-f', 'raw', exported, '64M']);
  await runOk('qemu-io', ['-f', 'raw', ...io(['write -P 0xee 0 64M']), exported]);
  const source = path.join(dir, 'source.qcow2');
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', source, '16M']);
  await runOk('qemu-io', ['-f', 'qcow2', ...io(WRITES.map((w) => w.replace('3M+4k', '3149824'))), source]);
  return { exported, source };
}

/** What qemu-img says about the qcow2 inside the export, compared with the source and with vdisk. */
async function checkedOver(uri: string, source: string): Promise<void> {
  await runOk('qemu-img', ['check', '-f', 'qcow2', uri]);
  assert.equal((await vdisk(['check', '-f', 'qcow2', uri])).code, 0);
  await runOk('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', source, uri]);
  verified(await runOk('qemu-io', ['-f', 'qcow2', '-r', ...io(READS), uri]));
  for (const output of ['json', 'human']) {
    assert.equal(
      await vdiskOk(['info', '-f', 'qcow2', `--output=${output}`, uri]),
      await runOk('qemu-img', ['info', '-f', 'qcow2', `--output=${output}`, uri]),
    );
  }
  assert.equal(
    await vdiskOk(['map', '-f', 'qcow2', '--output=json', uri]),
    await runOk('qemu-img', ['map', '-f', 'qcow2', '--output=json', uri]),
  );
}

async function stopping(server: ServerProcess, fn: (uri: string) => Promise<void>): Promise<void> {
  try {
    await fn(server.uri);
  } finally {
    await server.stop();
  }
}

describe('a qcow2 image inside an NBD export', () => {
  it('convert -O qcow2 into qemu-nbd: qemu-img checks, compares and reads it over the same URI', async (t) => {
    if (!need(t, 'qemu-nbd', 'qemu-img', 'qemu-io')) return;
    await withTempDir(async (dir) => {
      const { exported, source } = await prepare(dir);
      const server = await startQemuNbd(['-f', 'raw', '-t', exported], { socket: path.join(dir, 's') });
      await stopping(server, async (uri) => {
        await vdiskOk(['convert', '-O', 'qcow2', source, uri]);
        await checkedOver(uri, source);
      });
      // The file behind the export is the qcow2 image now.
      await runOk('qemu-img', ['check', '-f', 'qcow2', exported]);
    });
  });

  it('convert -O qcow2 into nbdkit (file plugin), and create -f qcow2 an empty one', async (t) => {
    if (!need(t, 'nbdkit', 'qemu-img', 'qemu-io')) return;
    await withTempDir(async (dir) => {
      const { exported, source } = await prepare(dir);
      await stopping(await startNbdkit(['file', exported], path.join(dir, 'k')), async (uri) => {
        await vdiskOk(['convert', '-O', 'qcow2', source, uri]);
        await checkedOver(uri, source);
      });
      await stopping(await startNbdkit(['file', exported], path.join(dir, 'k2')), async (uri) => {
        // qemu-img's first, then vdisk's over it: the same announcement, and vdisk's is the image.
        const theirs = await runOk('qemu-img', ['create', '-f', 'qcow2', uri, '32M']);
        assert.equal(await vdiskOk(['create', '-f', 'qcow2', uri, '32M']), theirs);
        await runOk('qemu-img', ['check', '-f', 'qcow2', uri]);
        verified(await runOk('qemu-io', ['-f', 'qcow2', ...io(['write -P 0x44 1M 64k', 'read -P 0 0 1M']), uri]));
        verified(await vdiskOk(['io', '-f', 'qcow2', ...io(['read -P 0x44 1M 64k', 'read -P 0 2M 30M']), uri]));
      });
    });
  });

  it('refuses what an export cannot do, before writing anything into it', async (t) => {
    if (!need(t, 'qemu-nbd', 'qemu-img', 'qemu-io')) return;
    await withTempDir(async (dir) => {
      const { exported, source } = await prepare(dir);
      const before = await readFile(exported);
      const server = await startQemuNbd(['-f', 'raw', '-t', exported], { socket: path.join(dir, 's') });
      await stopping(server, async (uri) => {
        for (const mode of ['metadata', 'full']) {
          const r = await vdisk(['convert', '-O', 'qcow2', '-o', `preallocation=${mode}`, source, uri]);
          assert.equal(r.code, 1);
          assert.deepEqual(lines(r.stderr), [
            `vdisk: target: ${uri}: Preallocation mode '${mode}' is not supported inside an NBD export`,
          ]);
        }
      });
      assert.ok((await readFile(exported)).equals(before), 'the export was changed');
    });
  });
});
