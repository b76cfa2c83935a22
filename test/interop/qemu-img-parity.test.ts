/**
 * Small differences from qemu-img that broke scripts, each compared with QEMU's tools on the
 * same input: shrinking cuts the host file as qemu-img does (byte-identical files), create
 * rounds odd sizes up, truncated images read as qemu-img reads them (and writes to them never
 * land on metadata), and check -r leaks leaves the dirty bit as qemu-img does when the repair
 * is complete.
 */
import assert from 'node:assert/strict';
import { copyFile, open, readFile, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';
import { hasTool, run, runOk } from '../helpers/tools.js';

const QEMU = hasTool('qemu-img') && hasTool('qemu-io');
if (!QEMU) console.error('SKIPPED: qemu-img/qemu-io not installed; qemu-img parity tests do not run');

function qemuIo(image: string, ...commands: string[]): void {
  runOk('qemu-io', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), image]);
}

/** Two copies of one qemu-made image: one for vdisk, one for qemu-img. */
async function twins(dir: string, options: string, size: string, io: string[]): Promise<[string, string]> {
  const ours = join(dir, 'ours.qcow2');
  const theirs = join(dir, 'theirs.qcow2');
  runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, theirs, size]);
  if (io.length) qemuIo(theirs, ...io);
  await copyFile(theirs, ours);
  return [ours, theirs];
}

async function incompatibleBits(image: string): Promise<bigint> {
  const handle = await open(image, 'r');
  try {
    const buf = Buffer.alloc(8);
    await handle.read(buf, 0, 8, 72);
    return buf.readBigUInt64BE(0);
  } finally {
    await handle.close();
  }
}

async function setIncompatibleBits(image: string, bits: bigint): Promise<void> {
  const handle = await open(image, 'r+');
  try {
    const buf = Buffer.alloc(8);
    buf.writeBigUInt64BE(bits);
    await handle.write(buf, 0, 8, 72);
  } finally {
    await handle.close();
  }
}

describe('qemu-img parity: small differences', { skip: !QEMU && 'qemu-img not installed' }, () => {
  const SHRINKS = [
    { options: 'cluster_size=65536', size: '64M', to: '16M' },
    { options: 'cluster_size=4096', size: '2G', to: '16M' },
    { options: 'preallocation=metadata', size: '64M', to: '16M' },
    { options: 'refcount_bits=64,cluster_size=4k', size: '64M', to: '12M' },
    { options: 'extended_l2=on', size: '64M', to: '12M' },
  ];
  for (const s of SHRINKS) {
    it(`resize --shrink leaves the file qemu-img leaves (${s.options})`, () =>
      withTempDir(async (dir) => {
        const io = s.options.includes('preallocation')
          ? ['write -P 1 0 1M', 'write -P 2 40M 8M']
          : ['write -P 1 0 1M', 'write -P 4 8M 1M', 'write -c -P 3 14M 64k', 'write -P 2 40M 8M'];
        const [ours, theirs] = await twins(dir, s.options, s.size, s.size === '2G' ? [...io, 'write -P 5 1G 8M'] : io);
        const r = await vdisk(['resize', '--shrink', ours, s.to]);
        assert.equal(r.code, 0, r.stderr);
        runOk('qemu-img', ['resize', '-q', '--shrink', theirs, s.to]);
        assert.equal((await stat(ours)).size, (await stat(theirs)).size, 'the same file length');
        assert.ok((await readFile(ours)).equals(await readFile(theirs)), 'byte-identical files');
        assert.equal(run('qemu-img', ['check', ours]).status, 0);
      }));
  }

  for (const format of ['qcow2', 'raw']) {
    it(`create rounds a ${format} size up to whole sectors, as qemu-img does`, () =>
      withTempDir(async (dir) => {
        for (const size of ['1', '1000', '65537']) {
          const ours = join(dir, `ours-${size}.${format}`);
          const theirs = join(dir, `theirs-${size}.${format}`);
          const r = await vdisk(['create', '-q', '-f', format, ours, size]);
          assert.equal(r.code, 0, r.stderr);
          runOk('qemu-img', ['create', '-q', '-f', format, theirs, size]);
          assert.ok((await readFile(ours)).equals(await readFile(theirs)), `size ${size}: byte-identical files`);
        }
      }));
  }

  it('reads a truncated qcow2 as qemu-img does, and writes to it never land on metadata', () =>
    withTempDir(async (dir) => {
      const whole = join(dir, 'whole.qcow2');
      runOk('qemu-img', ['create', '-q', '-f', 'qcow2', whole, '64M']);
      qemuIo(whole, 'write -P 1 0 1M', 'write -P 2 10M 1M');
      // Cut in the data, in the second L2 table, in the L1 table, in the refcount table, in cluster 0.
      for (const cut of [1_500_000, 262_144, 200_000, 150_000, 70_000, 1000]) {
        const image = join(dir, `cut-${cut}.qcow2`);
        await copyFile(whole, image);
        await truncate(image, cut);
        const expected = join(dir, 'expected.raw');
        runOk('qemu-img', ['convert', '-O', 'raw', image, expected]);
        const got = join(dir, 'got.raw');
        const converted = await vdisk(['convert', '-O', 'raw', image, got]);
        assert.equal(converted.code, 0, `cut at ${cut}: ${converted.stderr}`);
        assert.ok((await readFile(got)).equals(await readFile(expected)), `cut at ${cut}: the same bytes`);
        const map = await vdisk(['map', '--output=json', image]);
        assert.equal(map.stdout, runOk('qemu-img', ['map', '--output=json', image]), `cut at ${cut}: the same map`);

        const theirs = join(dir, `cut-${cut}-qemu.qcow2`);
        await copyFile(image, theirs);
        const head = (await readFile(image)).subarray(0, Math.min(cut, 4096));
        const ours = await vdisk(['io', '-f', 'qcow2', '-c', 'write -P 5 20M 64k', image]);
        const qemu = run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 5 20M 64k', theirs]);
        assert.equal(ours.code, qemu.status, `cut at ${cut}: the write ends as qemu-io's`);
        const after = await readFile(image);
        // The header survives (a refused write marks the image corrupt: only that bit changes).
        assert.ok(after.subarray(0, 72).equals(head.subarray(0, 72)), `cut at ${cut}: the header is intact`);
        assert.equal(run('qemu-img', ['check', image]).status, run('qemu-img', ['check', theirs]).status);
      }
    }));

  it('check -r leaks clears the dirty bit as qemu-img does once the refcounts are right', () =>
    withTempDir(async (dir) => {
      const [ours, theirs] = await twins(dir, 'lazy_refcounts=on', '8M', ['write -P 1 0 1M']);
      for (const image of [ours, theirs]) {
        // A leaked cluster past the data, and the dirty bit of an unclean close.
        const handle = await open(image, 'r+');
        const header = Buffer.alloc(56);
        await handle.read(header, 0, 56, 0);
        const reftable = Buffer.alloc(8);
        await handle.read(reftable, 0, 8, Number(header.readBigUInt64BE(48)));
        const one = Buffer.alloc(2);
        one.writeUInt16BE(1);
        await handle.write(one, 0, 2, Number(reftable.readBigUInt64BE(0)) + 2 * 40);
        await handle.truncate(41 * 65536);
        await handle.close();
        await setIncompatibleBits(image, 1n);
      }
      const r = await vdisk(['check', '-r', 'leaks', ours]);
      assert.equal(r.code, run('qemu-img', ['check', '-r', 'leaks', theirs]).status, r.stderr);
      assert.equal(await incompatibleBits(ours), 0n, 'the dirty bit is cleared');
      assert.ok((await readFile(ours)).equals(await readFile(theirs)), 'byte-identical files');
    }));

  it('check -r leaks keeps the dirty bit while references outnumber refcounts (qemu-img clears it)', () =>
    withTempDir(async (dir) => {
      const image = join(dir, 'crashed.qcow2');
      runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', image, '8M']);
      // qemu-io aborts with lazy refcounts: data is referenced, its refcounts never written.
      run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 1M', '-c', 'abort', image]);
      assert.equal(await incompatibleBits(image), 1n);
      const r = await vdisk(['check', '-r', 'leaks', image]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /refcount=0 reference=1/);
      // Kept: the next writable open repairs the refcounts before anything is allocated.
      assert.equal(await incompatibleBits(image), 1n);
      const io = await vdisk(['io', '-f', 'qcow2', '-c', 'write -P 2 4M 64k', '-c', 'read -P 1 0 1M', image]);
      assert.equal(io.code, 0, io.stderr);
      assert.equal(run('qemu-img', ['check', image]).status, 0);
    }));
});
