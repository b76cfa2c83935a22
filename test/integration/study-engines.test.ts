/**
 * vdisk study with QEMU's engine: the same workloads through vdisk's NBD client against
 * qemu-nbd, one server per combination, each stopped afterwards; with both engines, one report
 * per engine and the agreement of their rankings. The rank correlation itself is checked on
 * known orders. No assertion is about which engine is faster.
 */
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { spearman } from '../../src/tools/study/agreement.js';
import { PROFILES } from '../../src/tools/study/matrix.js';
import { runStudy } from '../../src/tools/study/runner.js';
import { needTools, run, vdisk } from '../helpers/run.js';
import { withTempDir } from '../helpers/tmp.js';

describe('the study engines', () => {
  it("compute Spearman's rho on known orders, ties and all", () => {
    assert.equal(spearman([1, 2, 3, 4], [10, 20, 30, 40]), 1);
    assert.equal(spearman([1, 2, 3, 4], [40, 30, 20, 10]), -1);
    // Ranks 1 2 3 4 5 against 1 2 3.5 5 3.5: 8 / sqrt(10 × 9.5).
    assert.equal(spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]), 8 / Math.sqrt(95));
    assert.equal(spearman([1, 1, 1], [1, 2, 3]), null);
    assert.equal(spearman([1, 2], [1, 2]), null);
  });

  it('measure QEMU through qemu-nbd, leaving no server and no image behind', async (t) => {
    if (!needTools(t, 'qemu-nbd')) return;
    await withTempDir(async (dir) => {
      const study = await runStudy({
        profile: PROFILES.smoke,
        engine: 'qemu',
        size: 4 * 1024 * 1024,
        selection: { formats: ['raw', 'qcow2'], caches: ['writeback', 'unsafe'], preallocs: ['off'] },
        workloads: ['seq-write', 'rand-read'],
        dir,
      });
      assert.equal(study.engine, 'qemu');
      assert.deepEqual(
        study.results.map((r) => [r.id, r.status, r.workloads.map((w) => w.name)]),
        [
          ['raw/off/writeback', 'ok', ['seq-write', 'rand-read']],
          ['raw/off/unsafe', 'ok', ['seq-write', 'rand-read']],
          ['qcow2/off/writeback', 'ok', ['seq-write', 'rand-read']],
          ['qcow2/off/unsafe', 'ok', ['seq-write', 'rand-read']],
        ],
      );
      for (const r of study.results) for (const w of r.workloads) assert.ok(w.bytes > 0 && w.ops > 0, r.id);
      assert.deepEqual(await readdir(dir), []);
      const servers = await run('pgrep', ['-f', `qemu-nbd .*${dir}`]);
      assert.equal(servers.stdout, '', 'every qemu-nbd was stopped');
    });
  });

  it('with both engines, write one report each and say how far their rankings agree', async (t) => {
    if (!needTools(t, 'qemu-nbd')) return;
    await withTempDir(async (dir) => {
      const images = path.join(dir, 'images');
      await mkdir(images);
      const json = path.join(dir, 'study.json');
      const args = [
        'study',
        '--smoke',
        '--size',
        '4M',
        '--dir',
        images,
        '--json',
        json,
        '--html',
        path.join(dir, 'study.html'),
      ];
      const r = await vdisk([
        ...args,
        '--engine',
        'both',
        '--cache',
        'writeback,unsafe',
        '--workloads',
        'seq-write,rand-read',
      ]);
      assert.equal(r.code, 0, r.stderr);
      const vdiskReport = JSON.parse(await readFile(path.join(dir, 'study-vdisk.json'), 'utf8'));
      const qemuReport = JSON.parse(await readFile(path.join(dir, 'study-qemu.json'), 'utf8'));
      assert.deepEqual([vdiskReport.engine, qemuReport.engine], ['vdisk', 'qemu']);
      assert.deepEqual(
        qemuReport.results.map((x: { id: string }) => x.id),
        vdiskReport.results.map((x: { id: string }) => x.id),
      );
      assert.match(await readFile(path.join(dir, 'study-qemu.html'), 'utf8'), /vdisk study of QEMU \(qemu-nbd\)/);
      assert.match(
        r.stdout,
        /vdisk against QEMU on this storage: Spearman's ρ .* seq-write (-?\d\.\d\d|-), rand-read (-?\d\.\d\d|-), score/,
      );
      assert.deepEqual(await readdir(images), []);
      const bad = await vdisk([...args, '--engine', 'kvm']);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /Invalid --engine: kvm/);
    });
  });
});
