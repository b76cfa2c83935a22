/**
 * Images whose refcounts deny the image's own tables: for each structure (header, L1, L2,
 * refcount table, refcount block, snapshot table, snapshot L1, an L2 table only a snapshot
 * names, bitmap directory) the cluster that holds it is given refcount 0 and made the lowest
 * free cluster (for bitmaps: the directory, a bitmap table and a cluster of bitmap data), and then every metadata write path runs against the image (new L2 table,
 * copy-on-write of a snapshot's L2 table and data, compressed write, discard, write-zeroes, L1
 * growth). Each must end with the write refused, the image marked corrupt, and every other byte
 * of the file unchanged: an allocator that trusted the refcount would write the new cluster over
 * the table. (A path that needs no new cluster on an image succeeds, and leaves the table alone.)
 */
import assert from 'node:assert/strict';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { decodeHeader } from '../../src/format/qcow2/codec/header.js';
import { decodeHeaderExtensions } from '../../src/format/qcow2/codec/header-extensions.js';
import { isVdiskError, openImage } from '../../src/index.js';
import { hasCommand, run, vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';
import { layoutOf } from './lib/corpus.js';

const MiB = 1024 * 1024;
const SIZE = 512 * MiB;
const INCOMPATIBLE_FEATURES = 72;
const AUTOCLEAR_FEATURES = 88;
const CORRUPT_BIT = 2;
const haveQemu = hasCommand('qemu-img') && hasCommand('qemu-io');

interface Target {
  what: string;
  /** Host offset of a cluster the structure uses. */
  offset: number;
}

interface Base {
  name: string;
  file: string;
  bytes: Buffer;
  clusterSize: number;
  targets: Target[];
  /** Header bytes that vdisk's first write may change apart from the corrupt bit. */
  mayChange: [number, number][];
  /** Write paths that need no new cluster on this image: they succeed and leave the denied table alone. */
  allocateNothing: string[];
}

/** The refcount-block entry of host cluster `cluster` (16-bit refcounts, as qemu-img makes them). */
function refcountSlot(bytes: Buffer, cluster: number): number {
  const L = layoutOf(bytes);
  const perBlock = L.clusterSize / 2;
  const block = Number(bytes.readBigUInt64BE(L.reftableOffset + Math.floor(cluster / perBlock) * 8));
  assert.ok(block !== 0, `no refcount block covers cluster ${cluster}`);
  return block + (cluster % perBlock) * 2;
}

/** Gives `cluster` refcount 0 and every other free cluster below it refcount 1 (a leak). */
function deny(bytes: Buffer, cluster: number): void {
  for (let c = 0; c < cluster; c++) {
    const slot = refcountSlot(bytes, c);
    if (bytes.readUInt16BE(slot) === 0) bytes.writeUInt16BE(1, slot);
  }
  bytes.writeUInt16BE(0, refcountSlot(bytes, cluster));
}

/**
 * `plain`: data and an internal snapshot, every table shared; `bitmap`: the same with a
 * persistent bitmap; `snapshot-l2`: a write after the snapshot copied L2 table 0, so the
 * snapshot's L2 table is named by the snapshot's L1 table alone.
 */
type BaseKind = 'plain' | 'bitmap' | 'snapshot-l2';

async function makeBase(dir: string, clusterSize: number, kind: BaseKind): Promise<Base> {
  const bitmap = kind === 'bitmap';
  const name = `${clusterSize / 1024}k${kind === 'plain' ? '' : `-${kind}`}`;
  const file = path.join(dir, `${name}.qcow2`);
  const ok = async (cmd: string, args: string[]) => {
    const r = await run(cmd, args);
    assert.equal(r.code, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
  };
  await ok('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${clusterSize}`, file, String(SIZE)]);
  await ok('qemu-io', ['-c', 'write -P 0x11 0 256k', '-c', 'write -P 0x22 8M 64k', file]);
  if (bitmap) {
    await ok('qemu-img', ['bitmap', '--add', file, 'b0']);
    // A write that QEMU records, so the bitmap has a cluster of data as well as its table.
    await ok('qemu-io', ['-c', 'write -P 0x44 12M 4k', file]);
  }
  await ok('qemu-img', ['snapshot', '-c', 's1', file]);
  if (kind === 'snapshot-l2') await ok('qemu-io', ['-c', 'write -P 0x33 128k 4k', file]);
  const bytes = await readFile(file);
  const L = layoutOf(bytes);
  const cs = L.clusterSize;
  const h = decodeHeader(bytes.subarray(0, cs));
  const targets: Target[] = [];
  if (bitmap) {
    const ext = decodeHeaderExtensions(bytes.subarray(0, cs), h);
    assert.ok(ext.bitmaps, 'qemu-img bitmap --add made no bitmaps extension');
    const dir = ext.bitmaps.directoryOffset;
    const table = Number(bytes.readBigUInt64BE(dir));
    const data = Number(bytes.readBigUInt64BE(table) & 0x00fffffffffffe00n);
    assert.ok(data !== 0, 'the bitmap has no data cluster');
    targets.push(
      { what: 'bitmap directory', offset: dir },
      { what: 'bitmap table', offset: table },
      { what: 'bitmap data', offset: data },
    );
  } else if (kind === 'snapshot-l2') {
    const snapshotL1 = L.snapshotL1s[0]!.offset;
    const l2 = Number(bytes.readBigUInt64BE(snapshotL1) & 0x00fffffffffffe00n);
    assert.notEqual(l2, L.l2Tables[0]!.offset, 'the write after the snapshot did not copy L2 table 0');
    targets.push({ what: "a snapshot's own L2 table", offset: l2 });
  } else {
    targets.push(
      { what: 'header', offset: 0 },
      { what: 'L1 table', offset: L.l1Offset },
      { what: 'L2 table', offset: L.l2Tables[0]!.offset },
      { what: 'refcount table', offset: L.reftableOffset },
      { what: 'refcount block', offset: L.refblocks[0]! },
      { what: 'snapshot table', offset: L.snapshotsOffset },
      { what: 'snapshot L1', offset: L.snapshotL1s[0]!.offset },
    );
  }
  // Before the first write vdisk marks the bitmaps in use, as QEMU does on a writable open: the
  // flags of the directory entry change, and the autoclear bit goes off and on around that.
  const mayChange: [number, number][] = [];
  if (bitmap) {
    const dirOffset = targets[0]!.offset;
    mayChange.push([AUTOCLEAR_FEATURES, AUTOCLEAR_FEATURES + 8], [dirOffset + 12, dirOffset + 16]);
  }
  // With L2 table 0 already the image's own, discarding or zeroing data shared with the
  // snapshot changes entries and refcounts in place: no cluster to allocate.
  const allocateNothing = kind === 'snapshot-l2' ? [DISCARD, WRITE_ZEROES] : [];
  return { name, file, bytes, clusterSize: cs, targets, mayChange, allocateNothing };
}

const DISCARD = 'discard of snapshot data';
const WRITE_ZEROES = 'write-zeroes over snapshot data';

interface WritePath {
  name: string;
  run(image: Awaited<ReturnType<typeof openImage>>, clusterSize: number): Promise<void>;
}

const PATHS: WritePath[] = [
  { name: 'write needing a new L2 table', run: (img) => img.write(SIZE - 65536, Buffer.alloc(4096, 0x55)) },
  { name: 'write over snapshot data (L2 and cluster copied)', run: (img) => img.write(4096, Buffer.alloc(4096, 0x55)) },
  { name: 'compressed write', run: (img, cs) => img.writeCompressed(8 * MiB, Buffer.alloc(cs, 0x66)) },
  { name: DISCARD, run: (img, cs) => img.discard(0, 2 * cs) },
  { name: WRITE_ZEROES, run: (img, cs) => img.writeZeroes(0, 2 * cs, { mayUnmap: true }) },
  {
    // The largest size whose L1 table still fits one cluster: the new table takes one cluster.
    name: 'resize growing the L1 table',
    run: (img, cs) => img.truncate((cs / 8) * (cs / 8) * cs, 'off'),
  },
];

/** Byte ranges where `a` and `b` differ, outside `allowed`. */
function differences(a: Buffer, b: Buffer, allowed: [number, number][]): string[] {
  const out: string[] = [];
  if (a.length !== b.length) out.push(`length ${a.length} -> ${b.length}`);
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n && out.length < 4; i++) {
    if (a[i] === b[i] || allowed.some(([s, e]) => i >= s && i < e)) continue;
    let j = i;
    while (j < n && a[j] !== b[j]) j++;
    out.push(`bytes 0x${i.toString(16)}..0x${j.toString(16)}`);
    i = j;
  }
  return out;
}

describe('images whose refcounts deny their own tables', {
  skip: !haveQemu && 'qemu-img/qemu-io not installed',
}, () => {
  it('every metadata write path refuses, marks the image corrupt and changes nothing else', async (t) => {
    await withTempDir(async (dir) => {
      const bases: Base[] = [];
      for (const cs of [65536, 4096]) {
        for (const kind of ['plain', 'bitmap', 'snapshot-l2'] as const) bases.push(await makeBase(dir, cs, kind));
      }
      const problems: string[] = [];
      let cases = 0;
      for (const base of bases) {
        const variants: { what: string; bytes: Buffer; cluster?: number }[] = base.targets.map((target) => {
          const bytes = Buffer.from(base.bytes);
          const cluster = Math.floor(target.offset / base.clusterSize);
          deny(bytes, cluster);
          return { what: target.what, bytes, cluster };
        });
        if (base.name.endsWith('k')) {
          // The red team's case: refcount-table entry 0 zeroed, so the header's range has no block.
          const bytes = Buffer.from(base.bytes);
          bytes.fill(0, layoutOf(bytes).reftableOffset, layoutOf(bytes).reftableOffset + 8);
          variants.push({ what: 'refcount-table entry 0', bytes });
        }
        for (const variant of variants) {
          for (const p of PATHS) {
            cases++;
            const label = `${base.name}: ${variant.what} denied: ${p.name}`;
            const file = path.join(dir, 'case.qcow2');
            await writeFile(file, variant.bytes);
            const image = await openImage(file, { format: 'qcow2', cache: 'writeback' });
            let error: unknown;
            try {
              await p.run(image, base.clusterSize);
              await image.flush();
            } catch (err) {
              error = err;
            }
            await image.close().catch(() => {});
            const after = await readFile(file);
            if (base.allocateNothing.includes(p.name) && variant.cluster !== undefined) {
              const at = variant.cluster * base.clusterSize;
              const table = (b: Buffer) => b.subarray(at, at + base.clusterSize);
              if (error !== undefined) problems.push(`${label}: failed: ${String(error)}`);
              if (!table(variant.bytes).equals(table(after))) problems.push(`${label}: the denied table changed`);
              continue;
            }
            if (!isVdiskError(error) || error.code !== 'EIO') {
              problems.push(`${label}: expected EIO, got ${error === undefined ? 'success' : String(error)}`);
            }
            const flags = after.readUInt32BE(INCOMPATIBLE_FEATURES + 4);
            if (!(flags & CORRUPT_BIT)) problems.push(`${label}: the image is not marked corrupt`);
            const allowed: [number, number][] = [[INCOMPATIBLE_FEATURES, INCOMPATIBLE_FEATURES + 8], ...base.mayChange];
            const changed = differences(variant.bytes, after, allowed);
            if (changed.length > 0) problems.push(`${label}: changed ${changed.join(', ')}`);
          }
        }
      }
      t.diagnostic(`${cases} cases`);
      console.log(`[reliability] denied tables: ${cases} cases, ${problems.length} problems`);
      assert.deepEqual(problems, [], problems.join('\n'));
    });
  });

  it('the red team case through the CLI: the write fails, the header survives, qemu-img sees a corrupt image', async () => {
    await withTempDir(async (dir) => {
      const file = path.join(dir, 'img.qcow2');
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', file, '64M']);
      await run('qemu-io', ['-c', 'write -P 0x11 0 256k', file]);
      const bytes = await readFile(file);
      const reftable = layoutOf(bytes).reftableOffset;
      bytes.fill(0, reftable, reftable + 8);
      await writeFile(file, bytes);
      const before = path.join(dir, 'before.qcow2');
      await copyFile(file, before);
      const r = await vdisk(['io', '-f', 'qcow2', '-c', 'write -P 0x41 1M 64k', file]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /write failed: .*holds header/);
      const after = await readFile(file);
      assert.deepEqual(
        differences(await readFile(before), after, [[INCOMPATIBLE_FEATURES, INCOMPATIBLE_FEATURES + 8]]),
        [],
      );
      const info = JSON.parse((await run('qemu-img', ['info', '--output=json', file])).stdout);
      assert.equal(info['format-specific'].data.corrupt, true);
      const read = await run('qemu-io', ['-r', '-c', 'read -P 0x11 0 256k', file]);
      assert.equal(read.code, 0, read.stdout + read.stderr);
      assert.doesNotMatch(read.stdout, /Pattern verification failed/);
      // Read-write opens are refused until the image is repaired.
      const again = await vdisk(['io', '-f', 'qcow2', '-c', 'write 0 4k', file]);
      assert.notEqual(again.code, 0);
      assert.match(again.stderr, /marked corrupt/);
    });
  });
});
