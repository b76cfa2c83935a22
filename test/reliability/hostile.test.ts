/**
 * Hostile images: a corpus generated here (lib/corpus.ts) covering every limit of
 * reference/qcow2.md and every attack of reference/semantics.md. Each image is opened
 * read-write and read-only, read, written and checked (lib/exercise.ts): a clear VdiskError or
 * correct behaviour, never a read outside the file, within a time and memory bound measured per
 * case. Backing names go through the real open policy on real files, and a raw image holding a
 * qcow2 header is served as raw without opening the file the header names.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ERROR_CODES, VdiskError } from '../../src/block/errors.js';
import { openImage } from '../../src/engine/open.js';
import { encodeHeaderCluster } from '../../src/format/qcow2/codec/header.js';
import { createImage } from '../../src/tools/create.js';
import { withTempDir } from '../helpers/tmp.js';
import { config, LEVEL } from './lib/config.js';
import { baseImages, hostileCases, snapshotRecord } from './lib/corpus.js';
import { exercise } from './lib/exercise.js';
import { measured } from './lib/measure.js';

const MiB = 1024 * 1024;

describe(`hostile images (${LEVEL})`, () => {
  it('the generated corpus: a clear error or correct behaviour, in bounds, in time and memory', async (t) => {
    const bases = new Map((await baseImages()).map((b) => [b.name, b]));
    const problems: string[] = [];
    const outcomes = new Map<string, number>();
    let ran = 0;
    let skipped = 0;
    const times: { name: string; ms: number }[] = [];
    let maxPeak = 0;
    let maxAlloc = 0;
    for (const c of hostileCases()) {
      const base = bases.get(c.base);
      if (!base) {
        skipped++;
        continue;
      }
      const bytes = Buffer.from(base.bytes);
      const mutated = c.mutate(bytes, { ...base.layout }) ?? bytes;
      const r = await exercise(mutated, { backing: base.backing, timeBoundMs: c.timeBoundMs });
      ran++;
      outcomes.set(r.outcome, (outcomes.get(r.outcome) ?? 0) + 1);
      times.push({ name: `${c.base}: ${c.name}`, ms: r.ms });
      maxPeak = Math.max(maxPeak, r.peakBytes);
      maxAlloc = Math.max(maxAlloc, r.largestAlloc);
      for (const p of r.problems) problems.push(`${c.base}: ${c.name}: ${p}`);
      if (c.expect && !c.expect.includes(r.outcome)) {
        problems.push(
          `${c.base}: ${c.name}: read-write open gave ${r.outcome}${r.message ? ` (${r.message})` : ''}, expected ${c.expect.join(' or ')}`,
        );
      }
    }
    times.sort((a, b) => b.ms - a.ms);
    const median = times[Math.floor(times.length / 2)]?.ms ?? 0;
    const slowest = times
      .slice(0, 3)
      .map((x) => `${x.name} ${Math.round(x.ms)} ms`)
      .join('; ');
    t.diagnostic(
      `hostile corpus: ${ran} images (${skipped} skipped: base image not available), read-write open outcomes ` +
        `${JSON.stringify(Object.fromEntries(outcomes))}; median ${median.toFixed(1)} ms, slowest: ${slowest}; ` +
        `peak memory growth ${(maxPeak / MiB).toFixed(1)} MiB, largest buffer ${(maxAlloc / MiB).toFixed(1)} MiB`,
    );
    console.log(
      `[reliability] hostile images: ${ran} cases, median ${median.toFixed(1)} ms, slowest ${Math.round(times[0]?.ms ?? 0)} ms, ` +
        `peak ${(maxPeak / MiB).toFixed(1)} MiB`,
    );
    assert.deepEqual(problems, [], problems.join('\n'));
  });
});

/** Every path the process opens while `fn` runs (the file driver opens through fs.open). */
async function pathsOpened<T>(fn: () => Promise<T>): Promise<{ value?: T; error?: unknown; paths: string[] }> {
  const paths: string[] = [];
  const original = fs.open;
  // biome-ignore lint/suspicious/noExplicitAny: spying on fs.open
  (fs as any).open = (p: fs.PathLike, ...rest: unknown[]) => {
    paths.push(String(p));
    // biome-ignore lint/suspicious/noExplicitAny: forwarding every overload
    return (original as any)(p, ...rest);
  };
  try {
    return { value: await fn(), paths };
  } catch (error) {
    return { error, paths };
  } finally {
    fs.open = original;
  }
}

function isClear(err: unknown, code?: string): boolean {
  return (
    err instanceof VdiskError &&
    (ERROR_CODES as readonly string[]).includes(err.code) &&
    !err.message.includes('\n') &&
    (code === undefined || err.code === code)
  );
}

/** A qcow2 image (64 KiB clusters) naming `backing` with `format`. */
async function qcow2Naming(file: string, backing: string, format?: string): Promise<void> {
  await createImage({ filename: file, format: 'qcow2', size: MiB });
  const bytes = await readFile(file);
  const h = (await import('../../src/format/qcow2/codec/header.js')).decodeHeader(bytes.subarray(0, 65536));
  const cluster0 = encodeHeaderCluster(h, { backingFile: backing, backingFormat: format });
  cluster0.copy(bytes, 0);
  await writeFile(file, bytes);
}

describe('hostile images: backing names through the open policy (real files)', () => {
  const cases: { name: string; make: (dir: string) => Promise<string>; code?: string; opens?: boolean }[] = [
    {
      name: 'json: pseudo-name',
      make: async (dir) => {
        const f = path.join(dir, 'top.qcow2');
        await qcow2Naming(f, 'json:{"driver":"file","filename":"/etc/shadow"}');
        return f;
      },
      code: 'ENOTSUP',
    },
    {
      name: '1023-byte name that does not exist',
      make: async (dir) => {
        const f = path.join(dir, 'top.qcow2');
        await qcow2Naming(f, 'n'.repeat(1023));
        return f;
      },
    },
    {
      name: '.. to an existing raw file (opens, read-only, relative to the image)',
      make: async (dir) => {
        await mkdir(path.join(dir, 'sub'));
        await writeFile(path.join(dir, 'base.raw'), Buffer.alloc(MiB, 0x42));
        const f = path.join(dir, 'sub', 'top.qcow2');
        await qcow2Naming(f, '../base.raw', 'raw');
        return f;
      },
      opens: true,
    },
    {
      name: '.. far above the root',
      make: async (dir) => {
        const f = path.join(dir, 'top.qcow2');
        await qcow2Naming(f, '../'.repeat(40) + 'no-such-file', 'raw');
        return f;
      },
      code: 'ENOENT',
    },
    {
      name: 'the image names itself',
      make: async (dir) => {
        const f = path.join(dir, 'top.qcow2');
        await qcow2Naming(f, 'top.qcow2', 'qcow2');
        return f;
      },
      code: 'ECORRUPT',
    },
    {
      name: 'a loop of two images (and a symlink)',
      make: async (dir) => {
        const a = path.join(dir, 'a.qcow2');
        await qcow2Naming(a, 'b.qcow2', 'qcow2');
        await qcow2Naming(path.join(dir, 'b.qcow2'), 'link-to-a', 'qcow2');
        await symlink(a, path.join(dir, 'link-to-a'));
        return a;
      },
      code: 'ECORRUPT',
    },
    {
      name: 'a chain of 40 images',
      make: async (dir) => {
        for (let i = 0; i < 40; i++) await qcow2Naming(path.join(dir, `c${i}.qcow2`), `c${i + 1}.qcow2`, 'qcow2');
        await createImage({ filename: path.join(dir, 'c40.qcow2'), format: 'qcow2', size: MiB });
        return path.join(dir, 'c0.qcow2');
      },
      code: 'ECORRUPT',
    },
    {
      name: 'a directory as backing file',
      make: async (dir) => {
        await mkdir(path.join(dir, 'd'));
        const f = path.join(dir, 'top.qcow2');
        await qcow2Naming(f, 'd', 'raw');
        return f;
      },
    },
    {
      name: 'backing format vmdk',
      make: async (dir) => {
        await writeFile(path.join(dir, 'base.vmdk'), Buffer.alloc(MiB));
        const f = path.join(dir, 'top.qcow2');
        await qcow2Naming(f, 'base.vmdk', 'vmdk');
        return f;
      },
      code: 'ENOTSUP',
    },
  ];
  for (const c of cases) {
    it(c.name, async (t) => {
      await withTempDir(async (dir) => {
        const file = await c.make(dir);
        const m = await measured(
          () => pathsOpened(() => openImage(file, { format: 'qcow2', readOnly: false })),
          config.caseTimeMs,
        );
        t.diagnostic(`${Math.round(m.ms)} ms, peak memory growth ${(m.peakBytes / MiB).toFixed(1)} MiB`);
        assert.ok(!m.timedOut && m.ms <= config.caseTimeMs, `took ${m.ms} ms`);
        assert.ok(m.peakBytes <= config.caseMemoryBytes);
        const { value: backend, error, paths } = m.value!;
        assert.ok(!paths.some((p) => p.includes('shadow')), `opened ${paths.join(', ')}`);
        if (c.opens) {
          assert.ok(backend, String(error));
          const data = await backend.read(0, 4096);
          assert.ok(data.equals(Buffer.alloc(4096, 0x42)));
          await backend.close();
        } else {
          assert.ok(!backend, 'the image must not open');
          assert.ok(isClear(error, c.code), `expected a clear ${c.code ?? 'VdiskError'}, got ${error}`);
        }
      });
    });
  }
});

describe('hostile images: a raw image holding a qcow2 header is served as raw', () => {
  for (const backing of ['canary.raw', '/etc/shadow']) {
    it(`the header names ${backing}: format raw reads the header bytes and never opens ${backing}`, async () => {
      await withTempDir(async (dir) => {
        await writeFile(path.join(dir, 'canary.raw'), Buffer.alloc(MiB, 0x77));
        const q = path.join(dir, 'made.qcow2');
        await qcow2Naming(q, backing, 'raw');
        // A guest wrote a qcow2 header (naming a backing file) into the first sectors of its raw disk.
        const header = (await readFile(q)).subarray(0, 65536);
        const rawFile = path.join(dir, 'guest.raw');
        const content = Buffer.alloc(4 * MiB);
        header.copy(content);
        await writeFile(rawFile, content);

        const {
          value: backend,
          error,
          paths,
        } = await pathsOpened(async () => {
          const b = await openImage(rawFile, { format: 'raw', readOnly: false });
          const head = await b.read(0, 65536);
          const tail = await b.read(4 * MiB - 4096, 4096);
          // The guest rewrites its header: still raw afterwards.
          await b.write(0, header.subarray(0, 4096));
          await b.close();
          const again = await openImage(rawFile, { format: 'raw', readOnly: true, forceShare: true });
          const head2 = await again.read(0, 4096);
          await again.close();
          return { head, tail, head2, length: b.length };
        });
        assert.ifError(error);
        assert.equal(backend!.length, 4 * MiB);
        assert.ok(backend!.head.equals(header), 'the header is guest data');
        assert.ok(backend!.tail.equals(Buffer.alloc(4096)));
        assert.ok(backend!.head2.equals(header.subarray(0, 4096)));
        assert.deepEqual([...new Set(paths)], [rawFile], `opened: ${paths.join(', ')}`);

        // Control: probing (what the user did not ask for here) does follow the header.
        if (backing === 'canary.raw') {
          const probed = await pathsOpened(() =>
            openImage(rawFile, { format: 'probe', readOnly: true, forceShare: true }),
          );
          assert.ok(
            probed.paths.some((p) => p.endsWith('canary.raw')),
            `the spy sees backing opens: ${probed.paths.join(', ')}`,
          );
          await probed.value?.close();
        }
      });
    });
  }
});

describe('hostile images: regressions (found by the mutation fuzzer)', () => {
  it('metadata-writer.ts: marking an image corrupt does not recurse when the header write overlaps too', async () => {
    // A snapshot whose L1 table is at offset 0 claims the header cluster. With lazy refcounts the
    // first write sets the dirty bit: a header write the overlap check refuses, so the image is
    // marked corrupt: another header write, refused again... Before the fix this recursed until
    // the stack overflowed (hidden by a catch); now the overlap is reported once and the write
    // fails with EIO.
    const { BlockBackend } = await import('../../src/block/backend.js');
    const { cacheMode } = await import('../../src/block/cache-mode.js');
    const { formatDefinition } = await import('../../src/engine/formats.js');
    const { encodeSnapshotTable } = await import('../../src/format/qcow2/codec/snapshot-table.js');
    const { FlatDriver } = await import('./lib/flat-driver.js');
    const base = (await baseImages()).find((b) => b.name === 'v3')!;
    const L = base.layout;
    const table = encodeSnapshotTable([snapshotRecord(L, { l1TableOffset: 0, l1Size: 1, name: 'at-zero' })]);
    const at = Math.ceil(base.bytes.length / L.clusterSize) * L.clusterSize;
    const bytes = Buffer.concat([base.bytes, Buffer.alloc(at - base.bytes.length), table, Buffer.alloc(L.clusterSize)]);
    bytes.writeUInt32BE(1, 60);
    bytes.writeBigUInt64BE(BigInt(at), 64);
    bytes.writeBigUInt64BE(1n, 80); // lazy refcounts
    const image = await formatDefinition('qcow2').open(new FlatDriver(bytes), {
      filename: 'x.qcow2',
      cache: cacheMode('writeback'),
      readOnly: false,
    });
    // Counts nested overlap checks of the image's metadata writer (the one instance in use).
    const { MetadataWriter } = await import('../../src/format/qcow2/image/metadata-writer.js');
    let depth = 0;
    let maxDepth = 0;
    const check = MetadataWriter.prototype.check;
    MetadataWriter.prototype.check = async function (this: InstanceType<typeof MetadataWriter>, ...args) {
      depth++;
      maxDepth = Math.max(maxDepth, depth);
      try {
        return await check.apply(this, args);
      } finally {
        depth--;
      }
    };
    try {
      const backend = new BlockBackend(image, { writeCache: true });
      await assert.rejects(backend.write(0, Buffer.alloc(4096, 1)), (err: unknown) => isClear(err, 'EIO'));
    } finally {
      MetadataWriter.prototype.check = check;
    }
    assert.ok(maxDepth <= 2, `overlap checks nested ${maxDepth} deep`);
  });
});
