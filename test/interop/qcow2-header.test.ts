/**
 * Cluster 0 as vdisk encodes it must be byte-identical to what `qemu-img create -f qcow2` writes
 * for the same options; and vdisk must decode what qemu-img writes.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { decodeHeader, encodeHeaderCluster } from '../../src/format/qcow2/codec/header.js';
import { decodeHeaderExtensions, type ExtensionsToWrite } from '../../src/format/qcow2/codec/header-extensions.js';
import { type CreateLayoutOptions, planCreateLayout } from '../../src/format/qcow2/create/layout.js';

function hasQemuImg(): boolean {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const QEMU = hasQemuImg();
const SKIP = QEMU ? false : 'qemu-img is not installed: the byte-for-byte header comparison with QEMU did not run';
if (!QEMU) console.warn(`SKIPPED: ${SKIP}`);

const dir = mkdtempSync(join(tmpdir(), 'vdisk-qcow2-header-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function readPrefix(path: string, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    const n = readSync(fd, buf, 0, length, 0);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

interface Variant {
  name: string;
  /** qemu-img create arguments after `-f qcow2` and before the file name. */
  args: string[];
  size?: string;
  layout: CreateLayoutOptions;
  ext?: ExtensionsToWrite;
}

const MiB = 1024 * 1024;

const variants: Variant[] = [
  { name: 'defaults', args: [], size: '64M', layout: { size: 64 * MiB } },
  { name: 'compat=0.10', args: ['-o', 'compat=0.10'], size: '64M', layout: { size: 64 * MiB, version: 2 } },
  {
    name: 'lazy_refcounts',
    args: ['-o', 'compat=1.1,lazy_refcounts=on'],
    size: '1G',
    layout: { size: 1024 * MiB, lazyRefcounts: true },
  },
  { name: 'extended_l2', args: ['-o', 'extended_l2=on'], size: '64M', layout: { size: 64 * MiB, extendedL2: true } },
  {
    name: 'extended_l2 16k clusters',
    args: ['-o', 'extended_l2=on,cluster_size=16k'],
    size: '100M',
    layout: { size: 100 * MiB, extendedL2: true, clusterBits: 14 },
  },
  {
    name: 'refcount_bits=1',
    args: ['-o', 'refcount_bits=1'],
    size: '64M',
    layout: { size: 64 * MiB, refcountOrder: 0 },
  },
  {
    name: 'refcount_bits=64',
    args: ['-o', 'refcount_bits=64'],
    size: '64M',
    layout: { size: 64 * MiB, refcountOrder: 6 },
  },
  {
    name: 'cluster_size=512',
    args: ['-o', 'cluster_size=512'],
    size: '64M',
    layout: { size: 64 * MiB, clusterBits: 9 },
  },
  {
    name: 'cluster_size=4k',
    args: ['-o', 'cluster_size=4k'],
    size: '64M',
    layout: { size: 64 * MiB, clusterBits: 12 },
  },
  {
    name: 'cluster_size=8k',
    args: ['-o', 'cluster_size=8k'],
    size: '64M',
    layout: { size: 64 * MiB, clusterBits: 13 },
  },
  {
    name: 'cluster_size=2M',
    args: ['-o', 'cluster_size=2M'],
    size: '10G',
    layout: { size: 10 * 1024 * MiB, clusterBits: 21 },
  },
  { name: 'zstd', args: ['-o', 'compression_type=zstd'], size: '64M', layout: { size: 64 * MiB, compressionType: 1 } },
  { name: 'odd size', args: [], size: '1000000512', layout: { size: 1000000512 } },
  { name: 'empty', args: [], size: '0', layout: { size: 0 } },
  {
    name: 'backing raw',
    args: ['-b', 'base.raw', '-F', 'raw'],
    layout: { size: 10 * MiB },
    ext: { backingFile: 'base.raw', backingFormat: 'raw' },
  },
  {
    name: 'backing qcow2 with its own size',
    args: ['-b', 'base.qcow2', '-F', 'qcow2'],
    size: '20M',
    layout: { size: 20 * MiB },
    ext: { backingFile: 'base.qcow2', backingFormat: 'qcow2' },
  },
  {
    name: 'backing on compat=0.10',
    args: ['-o', 'compat=0.10', '-b', 'base.raw', '-F', 'raw'],
    layout: { size: 10 * MiB, version: 2 },
    ext: { backingFile: 'base.raw', backingFormat: 'raw' },
  },
  {
    name: 'backing with 512-byte clusters',
    args: ['-o', 'cluster_size=512', '-b', 'base.raw', '-F', 'raw'],
    layout: { size: 10 * MiB, clusterBits: 9 },
    ext: { backingFile: 'base.raw', backingFormat: 'raw' },
  },
  {
    name: 'long backing name',
    args: ['-u', '-b', `${'d'.repeat(1000)}.raw`, '-F', 'raw'],
    size: '1M',
    layout: { size: MiB },
    ext: { backingFile: `${'d'.repeat(1000)}.raw`, backingFormat: 'raw' },
  },
  {
    name: 'preallocation=metadata',
    args: ['-o', 'preallocation=metadata'],
    size: '64M',
    layout: { size: 64 * MiB, preallocation: 'metadata' },
  },
];

describe('qcow2 cluster 0 against qemu-img create', { skip: SKIP }, () => {
  if (QEMU) {
    writeFileSync(join(dir, 'base.raw'), Buffer.alloc(10 * MiB));
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '20M'], { cwd: dir });
  }

  for (const v of variants) {
    it(v.name, () => {
      const file = join(dir, `${v.name.replace(/[^a-z0-9]+/gi, '_')}.qcow2`);
      const args = ['create', '-q', '-f', 'qcow2', ...v.args, file];
      if (v.size !== undefined) args.push(v.size);
      execFileSync('qemu-img', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
      const layout = planCreateLayout(v.layout);
      const clusterSize = layout.geometry.clusterSize;
      const theirs = readPrefix(file, clusterSize);
      const ours = encodeHeaderCluster(layout.header, v.ext ?? {});
      assert.equal(ours.length, clusterSize);
      if (!ours.equals(theirs)) {
        const at = ours.findIndex((b, i) => b !== theirs[i]);
        assert.fail(
          `cluster 0 differs from byte ${at}: ours ${ours.subarray(at, at + 16).toString('hex')}, qemu ${theirs.subarray(at, at + 16).toString('hex')}`,
        );
      }
      // And vdisk reads what qemu-img wrote.
      const h = decodeHeader(theirs);
      assert.deepEqual({ ...h, backingFileOffset: 0, backingFileSize: 0 }, layout.header);
      const e = decodeHeaderExtensions(theirs, h);
      assert.equal(e.backingFile, v.ext?.backingFile);
      assert.equal(e.backingFormat, v.ext?.backingFormat);
      assert.equal(e.featureNames.length, h.version === 3 && clusterSize > 4096 ? 8 : 0);
      assert.equal(e.unknown.length, 0);
    });
  }

  it('decodes the unknown-feature message QEMU gives', () => {
    const file = join(dir, 'future.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '1M']);
    const buf = readPrefix(file, 65536);
    buf.writeUInt32BE(0x20, 76); // incompatible bit 5
    writeFileSync(file, buf);
    let qemuMessage = '';
    try {
      execFileSync('qemu-img', ['info', file], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      qemuMessage = String((err as { stderr: Buffer }).stderr);
    }
    assert.match(qemuMessage, /Unsupported qcow2 feature\(s\): Unknown incompatible feature: 20/);
    assert.throws(
      () => decodeHeader(buf),
      /^VdiskError: Unsupported qcow2 feature\(s\): Unknown incompatible feature: 20$/,
    );
  });
});
