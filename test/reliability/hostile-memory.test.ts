/**
 * Memory stays bounded by the image's own size when cluster 0 and the snapshot table are as big
 * as QEMU allows: 2 MiB of empty header extensions (262,130 of them), 65,536 snapshots, and a
 * snapshot table of exactly 64 MiB. Past QEMU's limits (65,537 snapshots, a table over 64 MiB,
 * over 1 KiB of extra data in an entry) the image is refused with QEMU's message.
 *
 * Each image is opened by a child process that reports its peak resident memory, compared with
 * the same open of a plain image: the bounds are wide (they catch a cost per extension or per
 * snapshot, or a copy of the whole table, not noise). Measured figures are in
 * docs/reliability.md.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { decodeHeader } from '../../src/format/qcow2/codec/header.js';
import { encodeSnapshotTable, type Qcow2Snapshot } from '../../src/format/qcow2/codec/snapshot-table.js';
import { createImage, isVdiskError, openImage } from '../../src/index.js';
import { withTempDir } from '../helpers/tmp.js';
import { measured } from './lib/measure.js';
import { sharedL2Image } from './lib/shared-l2-image.js';

const MiB = 1024 * 1024;
const INDEX = pathToFileURL(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/index.js')).href;
const VDISK = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/vdisk.cjs');
const NB_SNAPSHOTS = 60;
const SNAPSHOTS_OFFSET = 64;

/** Peak resident memory (bytes) of a fresh Node process that opens `file` read-only and lists it. */
function openInChild(file: string): Promise<{ maxRss: number; error?: string }> {
  const script = `
    const { openImage } = await import(${JSON.stringify(INDEX)});
    let error;
    try {
      const image = await openImage(${JSON.stringify(file)}, { format: 'qcow2', readOnly: true });
      image.describe();
      await image.close();
    } catch (err) { error = err.message; }
    console.log(JSON.stringify({ maxRss: process.resourceUsage().maxRSS * 1024, error }));`;
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], { env }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(JSON.parse(stdout.trim()));
    });
  });
}

/** The smallest peak of three runs: a bound on what opening needs, without another process's noise. */
async function peak(file: string): Promise<number> {
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 3; i++) {
    const r = await openInChild(file);
    assert.equal(r.error, undefined, r.error);
    best = Math.min(best, r.maxRss);
  }
  return best;
}

/** Peak resident memory of a running process (VmHWM), in bytes. */
function vmHwm(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmHWM:\s+(\d+) kB$/m);
  assert.ok(line, 'VmHWM in /proc/PID/status');
  return Number(line[1]) * 1024;
}

async function plainImage(file: string, clusterSize = 65536): Promise<void> {
  await createImage({ filename: file, format: 'qcow2', size: 1 << 30, options: `cluster_size=${clusterSize}` });
}

/** A 2 MiB-cluster image whose cluster 0, after the fixed header, is all empty unknown extensions. */
async function extensionsImage(file: string): Promise<number> {
  await plainImage(file, 2 * MiB);
  const bytes = await readFile(file);
  const h = decodeHeader(bytes);
  let count = 0;
  for (let off = h.headerLength; off + 8 <= 2 * MiB; off += 8, count++) {
    bytes.writeUInt32BE(0x12345678, off);
    bytes.writeUInt32BE(0, off + 4);
  }
  await writeFile(file, bytes);
  return count;
}

/**
 * An image whose snapshot table holds `count` entries, all naming the active L1 table, each
 * `entryBytes` long (8-aligned, at least 72): the table goes after the end of the file.
 */
async function snapshotsImage(file: string, count: number, entryBytes: number): Promise<number> {
  await plainImage(file);
  const bytes = await readFile(file);
  const h = decodeHeader(bytes);
  const snapshots: Qcow2Snapshot[] = [];
  for (let i = 0; i < count; i++) {
    const id = String(i + 1);
    snapshots.push({
      l1TableOffset: h.l1TableOffset,
      l1Size: h.l1Size,
      id,
      name: `snapshot-${i}`.padEnd(entryBytes - 64 - id.length, 'x'),
      dateSec: 0,
      dateNsec: 0,
      vmClockNs: 0n,
      vmStateSize: 0,
      diskSize: h.size,
      unknownExtra: Buffer.alloc(0),
      extraDataSize: 24,
    });
  }
  const table = encodeSnapshotTable(snapshots);
  const at = Math.ceil(bytes.length / 65536) * 65536;
  bytes.writeUInt32BE(count, NB_SNAPSHOTS);
  bytes.writeBigUInt64BE(BigInt(at), SNAPSHOTS_OFFSET);
  await writeFile(file, Buffer.concat([bytes, Buffer.alloc(at - bytes.length), table]));
  return table.length;
}

async function refusal(file: string): Promise<string> {
  try {
    const image = await openImage(file, { format: 'qcow2', readOnly: true });
    await image.close();
  } catch (err) {
    assert.ok(isVdiskError(err), String(err));
    return `${err.code}: ${err.message}`;
  }
  return 'opened';
}

describe('hostile images: memory bounded by what QEMU allows', () => {
  it('2 MiB of empty header extensions cost about their own size', async (t) => {
    await withTempDir(async (dir) => {
      const plain = path.join(dir, 'plain.qcow2');
      await plainImage(plain, 2 * MiB);
      const hostile = path.join(dir, 'extensions.qcow2');
      const count = await extensionsImage(hostile);
      const grew = (await peak(hostile)) - (await peak(plain));
      t.diagnostic(
        `${count} empty extensions: peak resident memory ${(grew / MiB).toFixed(1)} MiB above a plain image`,
      );
      // An object and a buffer per extension cost about 95 MiB here.
      assert.ok(grew < 32 * MiB, `opening grew by ${(grew / MiB).toFixed(1)} MiB`);
    });
  });

  it('65,536 snapshots, and a snapshot table of exactly 64 MiB: bounded, never a copy of the table', async (t) => {
    await withTempDir(async (dir) => {
      const plain = path.join(dir, 'plain.qcow2');
      await plainImage(plain);
      const base = await peak(plain);
      const many = path.join(dir, 'many.qcow2');
      await snapshotsImage(many, 65536, 80);
      const manyGrew = (await peak(many)) - base;
      const full = path.join(dir, 'full.qcow2');
      assert.equal(await snapshotsImage(full, 65536, 1024), 64 * MiB);
      const fullGrew = (await peak(full)) - base;
      t.diagnostic(
        `peak resident memory above a plain image: 65,536 snapshots ${(manyGrew / MiB).toFixed(1)} MiB, ` +
          `64 MiB table ${(fullGrew / MiB).toFixed(1)} MiB`,
      );
      assert.ok(manyGrew < 96 * MiB, `65,536 snapshots: opening grew by ${(manyGrew / MiB).toFixed(1)} MiB`);
      // The ids and names (64 MiB) must be kept; a whole copy of the table on top of them is not.
      assert.ok(fullGrew < 160 * MiB, `64 MiB table: opening grew by ${(fullGrew / MiB).toFixed(1)} MiB`);
      const m = await measured(async () => {
        const image = await openImage(full, { format: 'qcow2', readOnly: true });
        assert.equal(image.describe().snapshots.length, 65536);
        await image.close();
      }, 60_000);
      assert.equal(m.error, undefined);
      assert.ok(m.largestAlloc <= 2 * MiB, `a buffer of ${(m.largestAlloc / MiB).toFixed(1)} MiB for the table`);
    });
  });

  it("check's millions of messages wait for a slow reader instead of piling up in memory", async () => {
    await withTempDir(async (dir) => {
      // 64 L1 entries of the red team's image: 524,288 references to one cluster, 917,508 lines.
      const file = path.join(dir, 'shared-l2.qcow2');
      await sharedL2Image(file, 64);
      const child = spawn(process.execPath, [VDISK, 'check', file], { stdio: ['ignore', 'pipe', 'pipe'] });
      // Nobody reads stderr for a while: the check must block on the full pipe, not buffer.
      await new Promise((resolve) => setTimeout(resolve, 3000));
      const peakWhileBlocked = vmHwm(child.pid!);
      const lines = { err: 0, out: '' };
      child.stderr.on('data', (chunk: Buffer) => {
        for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines.err++;
      });
      child.stdout.on('data', (chunk: Buffer) => {
        lines.out += chunk.toString();
      });
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      assert.equal(code, 2, 'corruptions found');
      assert.match(lines.out, /^458755 errors were found on the image\.$/m);
      assert.equal(lines.err, 917_508, 'every message was written');
      assert.ok(
        peakWhileBlocked < 160 * MiB,
        `peak RSS ${(peakWhileBlocked / MiB).toFixed(0)} MiB while the reader waited`,
      );
    });
  });

  it("past QEMU's limits the image is refused with QEMU's message", async () => {
    await withTempDir(async (dir) => {
      const tooMany = path.join(dir, 'too-many.qcow2');
      await snapshotsImage(tooMany, 65536, 80);
      const bytes = await readFile(tooMany);
      bytes.writeUInt32BE(65537, NB_SNAPSHOTS);
      await writeFile(tooMany, bytes);
      assert.equal(await refusal(tooMany), 'ENOTSUP: Snapshot table too large');

      // One more byte of name in the last entry takes the table past 64 MiB.
      const tooBig = path.join(dir, 'too-big.qcow2');
      await snapshotsImage(tooBig, 65536, 1024);
      const big = await readFile(tooBig);
      const last = big.length - 1024;
      big.writeUInt16BE(big.readUInt16BE(last + 14) + 1, last + 14);
      await writeFile(tooBig, Buffer.concat([big, Buffer.from('x')]));
      assert.equal(await refusal(tooBig), 'ENOTSUP: Snapshot table is too big');

      const extra = path.join(dir, 'extra.qcow2');
      await snapshotsImage(extra, 2, 80);
      const e = await readFile(extra);
      const first = Number(e.readBigUInt64BE(SNAPSHOTS_OFFSET));
      e.writeUInt32BE(1025, first + 36);
      await writeFile(extra, e);
      assert.equal(await refusal(extra), 'ENOTSUP: Too much extra metadata in snapshot table entry 0');
    });
  });
});
