/**
 * vdisk study with QEMU's engine: the same workloads through vdisk's NBD client against
 * qemu-nbd, one server per combination, each stopped afterwards; with both engines, one report
 * that keeps both and the agreement of their rankings, which `--compare` reads back; without
 * qemu-nbd, the vdisk part all the same. The rank correlation itself is checked on known orders
 * in test/unit/study-ranking.test.ts. No assertion is about which engine is faster.
 */
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { agreement } from '../../src/tools/study/agreement.js';
import { PROFILES } from '../../src/tools/study/matrix.js';
import { runStudy } from '../../src/tools/study/runner.js';
import { needTools, run, vdisk } from '../helpers/run.js';
import { studyInto } from '../helpers/study.js';
import { withTempDir } from '../helpers/tmp.js';

describe('the study engines', () => {
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

  it('with both engines, write one report that keeps both and says how far their rankings agree', async (t) => {
    if (!needTools(t, 'qemu-nbd')) return;
    await withTempDir(async (dir) => {
      const images = path.join(dir, 'images');
      await mkdir(images);
      const selection = ['--cache', 'writeback,unsafe', '--workloads', 'seq-write,rand-read'];
      const args = ['--smoke', '--size', '4M', '--dir', images];
      const { r, json, html, report: doc } = await studyInto(dir, [...args, '--engine', 'both', ...selection]);
      assert.deepEqual((await readdir(dir)).sort(), ['images', 'study.html', 'study.json'], 'one JSON, one HTML');
      assert.equal(doc.tool, 'vdisk study');
      assert.equal(doc.schema, 3);
      assert.deepEqual(
        doc.engines.map((e: { engine: string }) => e.engine),
        ['vdisk', 'qemu'],
      );
      assert.deepEqual(doc.notMeasured, []);
      const [mine, qemu] = doc.engines;
      assert.deepEqual(
        qemu.results.map((x: { id: string }) => x.id),
        mine.results.map((x: { id: string }) => x.id),
      );
      for (const e of doc.engines) {
        assert.equal(e.results.length, 14);
        for (const x of e.results) {
          assert.equal(x.status, 'ok', `${e.engine} ${x.id}`);
          assert.deepEqual(
            x.workloads.map((w: { name: string; samples: unknown[] }) => [w.name, w.samples.length]),
            [
              ['seq-write', 2],
              ['rand-read', 2],
            ],
          );
        }
        assert.ok(e.recommendation.pick, `${e.engine} recommends`);
        assert.equal(e.ranking.length, 14);
      }
      // The agreement in the file is the one computed from the two engines' measurements in it.
      assert.deepEqual(doc.agreement, agreement(mine, qemu));
      assert.deepEqual(
        doc.agreement.map((a: { what: string; n: number }) => [a.what, a.n]),
        [
          ['seq-write', 14],
          ['rand-read', 14],
          ['score', 14],
        ],
      );
      assert.match(
        r.stdout,
        /vdisk against QEMU on this storage: Spearman's ρ of the rankings of 14 combinations, ties shared \(1: the same order\): seq-write (-?\d\.\d\d|-|all tied), rand-read (-?\d\.\d\d|-|all tied), score/,
      );
      const page = await readFile(html, 'utf8');
      assert.match(page, /<title>vdisk study: vdisk and QEMU \(qemu-nbd\), /);
      assert.equal(page.match(/<figure class="wide" data-compare=/g)?.length, 2);
      assert.deepEqual(await readdir(images), []);

      // --compare on that file: the two engines against each other, the same ρ as the file's.
      const compared = await vdisk(['study', '--compare', json]);
      assert.equal(compared.code, 0, compared.stderr);
      assert.match(
        compared.stdout,
        /^vdisk \(.*study\.json, smoke, .*\) against QEMU \(qemu-nbd\) \(.*study\.json, smoke, .*\): 14 combinations in both\n/,
      );
      const seqWrite = doc.agreement[0];
      const shown = seqWrite.rho === null ? '(-|all tied)' : seqWrite.rho.toFixed(2);
      assert.match(compared.stdout, new RegExp(`\\nseq-write +${shown} `));

      const bad = await vdisk(['study', ...args, '--engine', 'kvm']);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /Invalid --engine: kvm/);
    });
  });

  it('without qemu-nbd, says so and still measures and reports vdisk', async () => {
    await withTempDir(async (dir) => {
      const images = path.join(dir, 'images');
      await mkdir(images);
      const json = path.join(dir, 'study.json');
      const args = ['study', '--smoke', '--dir', images, '--json', json, '--html', path.join(dir, 'study.html')];
      const selection = ['--formats', 'raw', '--prealloc', 'off', '--cache', 'writeback', '--workloads', 'seq-write'];
      const env = { ...process.env, PATH: path.join(dir, 'no-tools') };
      const r = await vdisk([...args, ...selection, '--engine', 'both'], { env });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        r.stderr.split('\n')[0],
        'vdisk: study: qemu-nbd is not installed (Debian: apt-get install qemu-utils); QEMU is not measured',
      );
      const doc = JSON.parse(await readFile(json, 'utf8'));
      assert.deepEqual(
        doc.engines.map((e: { engine: string }) => e.engine),
        ['vdisk'],
      );
      assert.deepEqual(doc.notMeasured, [
        { engine: 'qemu', reason: 'qemu-nbd is not installed (Debian: apt-get install qemu-utils)' },
      ]);
      assert.deepEqual(doc.agreement, []);
      assert.equal(doc.engines[0].results[0].status, 'ok');
      assert.match(
        await readFile(path.join(dir, 'study.html'), 'utf8'),
        /<p class="notice">QEMU \(qemu-nbd\) was not measured: qemu-nbd is not installed/,
      );
      // Asked for QEMU alone, that is a failure.
      const alone = await vdisk([...args, ...selection, '--engine', 'qemu'], { env });
      assert.equal(alone.code, 1);
      assert.match(alone.stderr, /qemu-nbd is not installed/);
    });
  });
});
