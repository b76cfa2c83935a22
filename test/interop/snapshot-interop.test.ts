/**
 * Internal snapshots both ways, with QEMU's tools as the oracle: snapshots vdisk creates are
 * listed, read (convert -l, qemu-nbd -l), applied and deleted by qemu-img, and snapshots qemu-img
 * creates by vdisk; the same sequence run by both tools on twin images leaves the same content
 * in the image and in every snapshot; qemu-img check finds nothing after each step; and the
 * listing, errors and exit statuses of `snapshot`, `convert -l` and `serve -l` are qemu-img's
 * and qemu-nbd's.
 */
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startQemuNbd, startVdiskServe } from '../helpers/nbd-serve.js';
import { lines, vdisk } from '../helpers/run.js';
import { fileState, withTempDir } from '../helpers/tmp.js';
import { hasTool, run, runOk } from '../helpers/tools.js';

const QEMU = hasTool('qemu-img') && hasTool('qemu-io');
if (!QEMU) console.error('SKIPPED: qemu-img/qemu-io not installed; snapshot interop tests do not run');

function qemuIo(image: string, format: string, ...commands: string[]): string {
  return runOk('qemu-io', ['-f', format, ...commands.flatMap((c) => ['-c', c]), image]);
}

/** qemu-img check of an image: it must find nothing at all. */
function assertClean(image: string, step: string): void {
  const r = run('qemu-img', ['check', '-f', 'qcow2', image]);
  assert.equal(r.status, 0, `qemu-img check after ${step}: ${r.stdout}${r.stderr}`);
}

/** Reads the patterns back with qemu-io (read -P fails on any other byte). */
function assertPatterns(image: string, format: string, patterns: [number, string, string][], step: string): void {
  for (const [byte, offset, length] of patterns) {
    const r = run('qemu-io', ['-f', format, '-c', `read -P ${byte} ${offset} ${length}`, image]);
    assert.ok(!/Pattern verification failed|error/i.test(r.stdout + r.stderr), `${step}: ${r.stdout}${r.stderr}`);
    assert.equal(r.status, 0, step);
  }
}

/** The content of snapshot `name` as qemu-img convert -l sees it, in a raw file. */
function qemuSnapshotContent(dir: string, image: string, name: string): string {
  const out = join(dir, `${name}-${Math.random().toString(36).slice(2)}.raw`);
  runOk('qemu-img', ['convert', '-f', 'qcow2', '-l', name, '-O', 'raw', image, out]);
  return out;
}

function identical(a: string, b: string, fa = 'raw', fb = 'raw'): boolean {
  return run('qemu-img', ['compare', '-f', fa, '-F', fb, a, b]).status === 0;
}

/** The file's bytes with the dates of its snapshot table entries zeroed. */
async function withoutDates(image: string): Promise<Buffer> {
  const bytes = await readFile(image);
  const count = bytes.readUInt32BE(60);
  let off = Number(bytes.readBigUInt64BE(64));
  for (let i = 0; i < count; i++) {
    bytes.fill(0, off + 16, off + 24);
    const length = 40 + bytes.readUInt32BE(off + 36) + bytes.readUInt16BE(off + 12) + bytes.readUInt16BE(off + 14);
    off += Math.ceil(length / 8) * 8;
  }
  return bytes;
}

async function vdiskOk(args: string[]): Promise<string> {
  const r = await vdisk(args);
  assert.equal(r.code, 0, `vdisk ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

describe('qcow2 internal snapshots with QEMU', { skip: !QEMU && 'qemu-img not installed' }, () => {
  it('snapshots vdisk creates are listed, read, applied and deleted by qemu-img', async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, 'disk.qcow2');
      runOk('qemu-img', ['create', '-q', '-f', 'qcow2', image, '4M']);
      qemuIo(image, 'qcow2', 'write -P 0x11 0 192k', 'write -P 0x12 1M 64k');
      await vdiskOk(['snapshot', '-c', 'first', image]);
      assertClean(image, 'vdisk snapshot -c first');
      // Writes after the snapshot copy shared clusters: partial clusters, whole ones, a new table.
      qemuIo(image, 'qcow2', 'write -P 0x21 4k 4k', 'write -P 0x22 64k 64k', 'write -P 0x23 3M 64k');
      await vdiskOk(['io', '-c', 'write -P 0x24 1M 8k', image]);
      await vdiskOk(['snapshot', '-c', 'second', image]);
      assertClean(image, 'vdisk snapshot -c second');
      await vdiskOk(['io', '-c', 'write -P 0x31 0 128k', image]);
      assertClean(image, 'vdisk io after two snapshots');

      const listed = runOk('qemu-img', ['snapshot', '-l', image]);
      assert.deepEqual(
        lines(listed)
          .slice(2)
          .map((l) => l.split(/\s+/).slice(0, 2)),
        [
          ['1', 'first'],
          ['2', 'second'],
        ],
      );
      assert.equal(await vdiskOk(['snapshot', '-l', image]), listed);

      const first = qemuSnapshotContent(dir, image, 'first');
      assertPatterns(
        first,
        'raw',
        [
          [0x11, '0', '192k'],
          [0x12, '1M', '64k'],
          [0, '3M', '64k'],
        ],
        'first',
      );
      const second = qemuSnapshotContent(dir, image, 'second');
      assertPatterns(
        second,
        'raw',
        [
          [0x11, '0', '4k'],
          [0x21, '4k', '4k'],
          [0x11, '8k', '56k'],
          [0x22, '64k', '64k'],
          [0x24, '1M', '8k'],
          [0x23, '3M', '64k'],
        ],
        'second',
      );
      assertPatterns(
        image,
        'qcow2',
        [
          [0x31, '0', '128k'],
          [0x11, '128k', '64k'],
        ],
        'active',
      );

      runOk('qemu-img', ['snapshot', '-a', 'first', image]);
      assertClean(image, 'qemu-img snapshot -a first');
      assert.ok(identical(first, image, 'raw', 'qcow2'), 'the image is the first snapshot again');
      runOk('qemu-img', ['snapshot', '-d', 'second', image]);
      assertClean(image, 'qemu-img snapshot -d second');
      runOk('qemu-img', ['snapshot', '-d', 'first', image]);
      assertClean(image, 'qemu-img snapshot -d first');
      assert.equal(await vdiskOk(['snapshot', '-l', image]), '');
    });
  });

  it('snapshots qemu-img creates are applied, kept and deleted by vdisk', async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, 'disk.qcow2');
      runOk('qemu-img', ['create', '-q', '-f', 'qcow2', image, '2M']);
      qemuIo(image, 'qcow2', 'write -P 0x41 0 128k');
      runOk('qemu-img', ['snapshot', '-c', 'base', image]);
      qemuIo(image, 'qcow2', 'write -P 0x42 0 64k');
      runOk('qemu-img', ['snapshot', '-c', 'mid', image]);
      const base = qemuSnapshotContent(dir, image, 'base');
      const mid = qemuSnapshotContent(dir, image, 'mid');

      // vdisk writes into clusters the snapshots share: they must keep their content.
      await vdiskOk(['io', '-c', 'write -P 0x43 0 4k', '-c', 'write -P 0x44 64k 64k', '-c', 'write -z 96k 32k', image]);
      assertClean(image, 'vdisk writes over shared clusters');
      assert.ok(identical(base, qemuSnapshotContent(dir, image, 'base')), 'base unchanged');
      assert.ok(identical(mid, qemuSnapshotContent(dir, image, 'mid')), 'mid unchanged');

      await vdiskOk(['snapshot', '-a', 'base', image]);
      assertClean(image, 'vdisk snapshot -a base');
      assert.ok(identical(base, image, 'raw', 'qcow2'), 'the image is base again');
      await vdiskOk(['snapshot', '-a', '2', image]);
      assertClean(image, 'vdisk snapshot -a 2 (by id)');
      assert.ok(identical(mid, image, 'raw', 'qcow2'), 'the image is mid again');
      await vdiskOk(['snapshot', '-d', 'base', image]);
      assertClean(image, 'vdisk snapshot -d base');
      assert.ok(identical(mid, qemuSnapshotContent(dir, image, 'mid')), 'mid unchanged by the delete');
      await vdiskOk(['snapshot', '-d', 'mid', image]);
      assertClean(image, 'vdisk snapshot -d mid');
      assert.ok(identical(mid, image, 'raw', 'qcow2'), 'the image kept its content');
      assert.equal(runOk('qemu-img', ['snapshot', '-l', image]), '');
    });
  });

  const VARIANTS = [
    { options: 'compat=1.1', size: '4M' },
    { options: 'compat=0.10', size: '4M' },
    { options: 'cluster_size=512', size: '256k' },
    { options: 'cluster_size=4096,refcount_bits=2', size: '1M' },
    { options: 'extended_l2=on,cluster_size=16k', size: '2M' },
    { options: 'lazy_refcounts=on', size: '2M' },
  ];
  for (const v of VARIANTS) {
    it(`the same steps by qemu-img and by vdisk leave the same content (${v.options})`, async () => {
      await withTempDir(async (dir) => {
        const ours = join(dir, 'ours.qcow2');
        const theirs = join(dir, 'theirs.qcow2');
        runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', v.options, theirs, v.size]);
        qemuIo(theirs, 'qcow2', 'write -P 0x51 0 96k');
        await copyFile(theirs, ours);
        const steps: { qemu: string[][]; vdisk: string[][] }[] = [
          { qemu: [['snapshot', '-c', 'one']], vdisk: [['snapshot', '-c', 'one']] },
          { qemu: [], vdisk: [] }, // writes, below
          { qemu: [['snapshot', '-c', 'two']], vdisk: [['snapshot', '-c', 'two']] },
          { qemu: [['snapshot', '-a', 'one']], vdisk: [['snapshot', '-a', 'one']] },
          { qemu: [['snapshot', '-d', 'one']], vdisk: [['snapshot', '-d', 'one']] },
        ];
        for (const [i, step] of steps.entries()) {
          if (i === 1) {
            for (const img of [ours, theirs]) qemuIo(img, 'qcow2', 'write -P 0x52 2k 3k', 'write -P 0x53 64k 4k');
          }
          const failed = step.qemu.some((args) => run('qemu-img', [...args, theirs]).status !== 0);
          if (failed) {
            // qemu-img refused (a refcount would overflow refcount_bits): vdisk refuses too, and
            // leaves its image as it was.
            const before = await fileState(ours);
            for (const args of step.vdisk) assert.equal((await vdisk([...args, ours])).code, 1, `step ${i}`);
            assert.deepEqual(await fileState(ours), before, `step ${i}: the image is unchanged`);
            assertClean(ours, `step ${i} refused by vdisk`);
            return;
          }
          for (const args of step.vdisk) await vdiskOk([...args, ours]);
          assertClean(ours, `step ${i} by vdisk`);
          assert.ok(identical(ours, theirs, 'qcow2', 'qcow2'), `step ${i}: the images differ`);
        }
        for (const name of ['two']) {
          assert.ok(
            identical(qemuSnapshotContent(dir, ours, name), qemuSnapshotContent(dir, theirs, name)),
            `snapshot ${name} differs`,
          );
        }
        const names = (img: string) =>
          lines(runOk('qemu-img', ['snapshot', '-l', img]))
            .slice(2)
            .map((l) => l.split(/\s+/).slice(0, 2).join(' '));
        assert.deepEqual(names(ours), names(theirs));
      });
    });
  }

  for (const options of ['compat=1.1', 'compat=0.10', 'cluster_size=512', 'cluster_size=4096,refcount_bits=64']) {
    it(`create and delete leave the file qemu-img leaves, byte for byte but the dates (${options})`, async () => {
      await withTempDir(async (dir) => {
        const ours = join(dir, 'ours.qcow2');
        const theirs = join(dir, 'theirs.qcow2');
        runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, theirs, '1M']);
        qemuIo(theirs, 'qcow2', 'write -P 1 0 64k', 'write -P 2 512k 8k');
        await copyFile(theirs, ours);
        const steps = [['-c', 'snap'], ['write'], ['-c', 'two'], ['-d', 'snap'], ['-c', 'three'], ['-d', 'three']];
        for (const step of steps) {
          if (step[0] === 'write') {
            for (const img of [ours, theirs]) qemuIo(img, 'qcow2', 'write -P 3 0 4k');
            continue;
          }
          runOk('qemu-img', ['snapshot', ...step, theirs]);
          await vdiskOk(['snapshot', ...step, ours]);
          const [a, b] = await Promise.all([withoutDates(ours), withoutDates(theirs)]);
          assert.equal(a.length, b.length, `snapshot ${step.join(' ')}: the file lengths`);
          assert.ok(a.equals(b), `snapshot ${step.join(' ')}: the files differ`);
        }
      });
    });
  }

  it('apply gives the image back the size it had at the snapshot, as qemu-img does', async () => {
    await withTempDir(async (dir) => {
      const ours = join(dir, 'ours.qcow2');
      const theirs = join(dir, 'theirs.qcow2');
      runOk('qemu-img', ['create', '-q', '-f', 'qcow2', theirs, '1M']);
      qemuIo(theirs, 'qcow2', 'write -P 0x61 0 64k');
      runOk('qemu-img', ['snapshot', '-c', 'small', theirs]);
      runOk('qemu-img', ['resize', '-q', theirs, '3M']);
      qemuIo(theirs, 'qcow2', 'write -P 0x62 2M 64k', 'write -P 0x63 0 4k');
      await copyFile(theirs, ours);
      runOk('qemu-img', ['snapshot', '-a', 'small', theirs]);
      await vdiskOk(['snapshot', '-a', 'small', ours]);
      assertClean(ours, 'vdisk snapshot -a small');
      const size = (img: string) => JSON.parse(runOk('qemu-img', ['info', '--output=json', img]))['virtual-size'];
      assert.equal(size(ours), 1024 * 1024);
      assert.equal(size(ours), size(theirs));
      assert.ok(identical(ours, theirs, 'qcow2', 'qcow2'));
    });
  });

  it("listing, errors and exit statuses are qemu-img snapshot's; a failure changes nothing", async () => {
    await withTempDir(async (dir) => {
      const base = join(dir, 'base.qcow2');
      runOk('qemu-img', ['create', '-q', '-f', 'qcow2', base, '1M']);
      qemuIo(base, 'qcow2', 'write -P 1 0 64k');
      runOk('qemu-img', ['snapshot', '-c', 'dup', base]);
      runOk('qemu-img', ['snapshot', '-c', 'dup', base]);
      const raw = join(dir, 'disk.raw');
      runOk('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
      const cases: { args: string[]; file: string }[] = [
        { args: ['-l'], file: base },
        { args: ['-a', 'nope'], file: base },
        { args: ['-d', 'nope'], file: base },
        { args: ['-d', '1'], file: base }, // delete takes a name only
        { args: ['-l', '-c', 'x'], file: base },
        { args: ['-U', '-c', 'x'], file: base },
        { args: ['-l'], file: raw },
        { args: ['-c', 'x'], file: raw },
        { args: ['-a', 'x'], file: raw },
        { args: ['-d', 'x'], file: raw },
        { args: ['-c', 'dup'], file: base }, // names need not be unique
        { args: ['-d', 'dup'], file: base }, // the first of that name
      ];
      for (const c of cases) {
        const ours = join(dir, `ours${c.file.endsWith('.raw') ? '.raw' : '.qcow2'}`);
        const theirs = join(dir, `theirs${c.file.endsWith('.raw') ? '.raw' : '.qcow2'}`);
        await copyFile(c.file, ours);
        await copyFile(c.file, theirs);
        const before = await fileState(ours);
        const q = run('qemu-img', ['snapshot', ...c.args, theirs]);
        const r = await vdisk(['snapshot', ...c.args, ours]);
        const what = `snapshot ${c.args.join(' ')} ${c.file.endsWith('.raw') ? 'raw' : 'qcow2'}`;
        assert.equal(r.code, q.status, `${what}: exit status (${r.stderr})`);
        assert.equal(r.stdout, q.stdout, `${what}: output`);
        if (q.status !== 0) {
          const theirLine = lines(q.stderr)
            .filter((l) => l.startsWith('qemu-img: '))[0]!
            .replace(/^qemu-img: /, '');
          const ourLines = lines(r.stderr);
          assert.equal(ourLines.length, 1, `${what}: one line`);
          // vdisk's usage errors point at its help instead of qemu-img's; -U is named as the option.
          const ourLine = ourLines[0]!
            .replace(/^vdisk: /, '')
            .replace(/ \(see 'vdisk \w+ --help'\)$/, '')
            .replace('force-share (-U)', 'force-share=on')
            .replaceAll('ours.', 'theirs.');
          assert.equal(ourLine, theirLine, what);
          assert.deepEqual(await fileState(ours), before, `${what}: the image is unchanged`);
        } else if (c.args[0] !== '-l') {
          assertClean(ours, what);
          assert.equal(
            (await vdisk(['snapshot', '-l', ours])).stdout.replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, 'DATE'),
            runOk('qemu-img', ['snapshot', '-l', theirs]).replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, 'DATE'),
            `${what}: the list after`,
          );
        }
      }
    });
  });

  it('resize of a v2 image with snapshots is refused as qemu-img refuses it; v3 shrinks alike', async () => {
    await withTempDir(async (dir) => {
      for (const [compat, args] of [
        ['0.10', ['2M']],
        ['1.1', ['--shrink', '1M']],
      ] as const) {
        const ours = join(dir, `ours-${compat}.qcow2`);
        const theirs = join(dir, `theirs-${compat}.qcow2`);
        runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `compat=${compat}`, theirs, '2M']);
        qemuIo(theirs, 'qcow2', 'write -P 1 0 2M');
        runOk('qemu-img', ['snapshot', '-c', 's', theirs]);
        await copyFile(theirs, ours);
        const before = await fileState(ours);
        const q = run('qemu-img', ['resize', theirs, ...args]);
        const r = await vdisk(['resize', ours, ...args]);
        assert.equal(r.code, q.status, `compat=${compat}: ${r.stderr}`);
        if (q.status !== 0) {
          assert.equal(r.stderr.replace(/^vdisk: /, ''), q.stderr.replace(/^qemu-img: /, ''));
          assert.deepEqual(await fileState(ours), before);
        } else {
          assertClean(ours, `resize ${args.join(' ')}`);
          assert.ok(identical(ours, theirs, 'qcow2', 'qcow2'));
          assert.ok(identical(qemuSnapshotContent(dir, ours, 's'), qemuSnapshotContent(dir, theirs, 's')));
        }
      }
    });
  });

  it('a refcount too narrow to share a cluster fails as qemu-img fails, and changes nothing', async () => {
    await withTempDir(async (dir) => {
      const ours = join(dir, 'ours.qcow2');
      const theirs = join(dir, 'theirs.qcow2');
      runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=1', theirs, '1M']);
      qemuIo(theirs, 'qcow2', 'write -P 1 0 64k');
      await copyFile(theirs, ours);
      const before = await fileState(ours);
      const q = run('qemu-img', ['snapshot', '-c', 's', theirs]);
      const r = await vdisk(['snapshot', '-c', 's', ours]);
      assert.equal(r.code, q.status);
      assert.match(r.stderr, /^vdisk: Could not create snapshot 's': .*exceed 1\n$/);
      assert.deepEqual(await fileState(ours), before);
      assertClean(ours, 'the failed create');
    });
  });

  it('convert -l converts a snapshot as qemu-img convert -l does, in every spelling', async () => {
    await withTempDir(async (dir) => {
      const image = join(dir, 'disk.qcow2');
      runOk('qemu-img', ['create', '-q', '-f', 'qcow2', image, '1M']);
      qemuIo(image, 'qcow2', 'write -P 0x71 0 64k');
      await vdiskOk(['snapshot', '-c', 's1', image]);
      runOk('qemu-img', ['resize', '-q', image, '2M']);
      qemuIo(image, 'qcow2', 'write -P 0x72 0 64k', 'write -P 0x73 1536k 64k');
      for (const param of ['s1', '1', 'snapshot.name=s1', 'snapshot.id=1', 'snapshot.id=1,snapshot.name=s1']) {
        const theirs = join(dir, 'theirs.raw');
        const ours = join(dir, 'ours.raw');
        runOk('qemu-img', ['convert', '-l', param, '-O', 'raw', image, theirs]);
        await vdiskOk(['convert', '-l', param, '-O', 'raw', image, ours]);
        assert.deepEqual((await fileState(ours)).sha256, (await fileState(theirs)).sha256, `-l ${param}`);
      }
      const raw = join(dir, 'plain.raw');
      runOk('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
      for (const [param, source, fmt] of [
        ['nope', image, 'qcow2'],
        ['snapshot.id=1,snapshot.name=zz', image, 'qcow2'],
        ['snapshot.foo=1', image, 'qcow2'],
        ['s1', raw, 'raw'],
      ] as const) {
        const q = run('qemu-img', ['convert', '-f', fmt, '-l', param, '-O', 'raw', source, join(dir, 'q-fail.raw')]);
        const out = join(dir, 'v-fail.raw');
        const r = await vdisk(['convert', '-f', fmt, '-l', param, '-O', 'raw', source, out]);
        assert.equal(r.code, q.status, `-l ${param}: ${r.stderr}`);
        assert.equal(lines(r.stderr).length, 1, r.stderr);
        assert.equal((await fileState(out)).exists, false, 'no target left behind');
      }
    });
  });

  it('serve -l exports a snapshot read-only, as qemu-nbd -l does', async (t) => {
    if (!hasTool('qemu-nbd')) {
      t.skip('qemu-nbd not installed');
      return;
    }
    await withTempDir(async (dir) => {
      const image = join(dir, 'disk.qcow2');
      runOk('qemu-img', ['create', '-q', '-f', 'qcow2', image, '1M']);
      qemuIo(image, 'qcow2', 'write -P 0x81 0 128k');
      await vdiskOk(['snapshot', '-c', 'export-me', image]);
      qemuIo(image, 'qcow2', 'write -P 0x82 0 64k');
      const theirs = await startQemuNbd(['-f', 'qcow2', '-l', 'export-me', '-t', image], {
        socket: join(dir, 'q.sock'),
      });
      const ours = await startVdiskServe([
        '-f',
        'qcow2',
        '-l',
        'snapshot.name=export-me',
        '-t',
        '-k',
        join(dir, 'v.sock'),
        image,
      ]);
      try {
        const q = join(dir, 'q.raw');
        const v = join(dir, 'v.raw');
        runOk('qemu-img', ['convert', '-O', 'raw', theirs.uri, q]);
        runOk('qemu-img', ['convert', '-O', 'raw', ours.uri, v]);
        assert.ok(identical(q, v));
        assertPatterns(v, 'raw', [[0x81, '0', '128k']], 'the export');
        const write = run('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', ours.uri]);
        assert.match(write.stdout + write.stderr, /read-only|Permission|not permitted/i);
      } finally {
        await ours.stop();
        await theirs.stop();
      }
      assertPatterns(
        image,
        'qcow2',
        [
          [0x82, '0', '64k'],
          [0x81, '64k', '64k'],
        ],
        'the image',
      );
    });
  });
});
