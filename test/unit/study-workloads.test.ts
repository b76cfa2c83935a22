/** The study's pure parts: the layout, the workloads' request streams, percentiles and scores. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { percentiles } from '../../src/tools/study/execute.js';
import { PROFILES, parseNameList, studyMatrix } from '../../src/tools/study/matrix.js';
import { rankResults, score } from '../../src/tools/study/rank.js';
import type { CombinationResult } from '../../src/tools/study/runner.js';
import {
  type Part,
  partOf,
  type Step,
  seededRandom,
  studyLayout,
  WHOLE,
  WORKLOADS,
  workload,
} from '../../src/tools/study/workloads.js';
import { combinationOf } from '../helpers/study.js';

type Io = Exclude<Step, { op: 'flush' }>;
const io = (steps: readonly Step[], op?: 'read' | 'write'): Io[] =>
  steps.filter((s): s is Io => s.op !== 'flush' && (op === undefined || s.op === op));

const KiB = 1024;
const MiB = 1024 * KiB;

function stepsOf(name: (typeof WORKLOADS)[number]['name'], size = 256 * MiB, seqWritten?: number): Step[] {
  const layout = studyLayout(size);
  return [
    ...workload(name).steps(
      layout,
      { seqWritten: seqWritten ?? layout.seq.length },
      PROFILES.quick,
      seededRandom(7),
      WHOLE,
    ),
  ];
}

describe('study layout', () => {
  it('cuts the image into three adjacent regions of whole 64 KiB slots', () => {
    for (const size of [4 * MiB, 256 * MiB, 1000 * MiB + 12345]) {
      const l = studyLayout(size);
      assert.equal(l.install.start, 0);
      assert.equal(l.seq.start, l.install.length);
      assert.equal(l.db.start, l.seq.start + l.seq.length);
      assert.ok(l.db.start + l.db.length <= size);
      for (const r of [l.install, l.seq, l.db]) assert.equal(r.length % (64 * KiB), 0);
    }
  });
});

describe('study workloads', () => {
  it('are the same requests every time', () => {
    for (const w of WORKLOADS) assert.deepEqual(stepsOf(w.name), stepsOf(w.name), w.name);
  });

  it('install: mostly sequential writes inside its region, a journal commit (write, flush) every 4 MiB', () => {
    const layout = studyLayout(256 * MiB);
    const steps = stepsOf('install');
    const writes = io(steps, 'write');
    for (const s of writes) {
      assert.ok(
        s.offset >= layout.install.start && s.offset + s.length <= layout.install.start + layout.install.length,
      );
      assert.ok(s.length <= 256 * KiB && s.length % (4 * KiB) === 0);
    }
    const flushes = steps.filter((s) => s.op === 'flush').length;
    const bytes = writes.reduce((n, s) => n + s.length, 0);
    assert.ok(Math.abs(flushes - bytes / (4 * MiB)) <= 2, `${flushes} flushes for ${bytes} bytes`);
    assert.equal(steps.at(-1)?.op, 'flush');
    // It covers most of its region, front to back.
    assert.ok(bytes > layout.install.length * 0.8);
    let backwards = 0;
    for (let i = 1; i < writes.length; i++) if (writes[i]!.offset < writes[i - 1]!.offset) backwards++;
    assert.ok(backwards <= flushes + 1, 'only the journal writes go back');
  });

  it('db-write: one 4 KiB write in each fresh 64 KiB slot, a flush after every 8', () => {
    const layout = studyLayout(256 * MiB);
    const steps = stepsOf('db-write');
    const writes = io(steps, 'write');
    assert.equal(writes.length, Math.min(PROFILES.quick.randomOps, layout.db.length / (64 * KiB)));
    const slots = new Set(writes.map((s) => Math.floor(s.offset / (64 * KiB))));
    assert.equal(slots.size, writes.length, 'every write touches a slot of its own');
    for (const s of writes) {
      assert.equal(s.length, 4 * KiB);
      assert.ok(s.offset >= layout.db.start && s.offset < layout.db.start + layout.db.length);
    }
    for (let i = 0; i < steps.length; i += 9) {
      assert.deepEqual(
        steps.slice(i, i + 9).map((s) => s.op),
        [...Array(Math.min(8, steps.length - i - 1)).fill('write'), 'flush'],
      );
    }
  });

  it('the reads and the rewrite stay inside what seq-write wrote', () => {
    const layout = studyLayout(256 * MiB);
    const written = 10 * MiB;
    for (const name of ['seq-read', 'rand-read', 'db-rewrite'] as const) {
      const steps = io(stepsOf(name, 256 * MiB, written));
      assert.ok(steps.length > 0, name);
      for (const s of steps) {
        assert.ok(s.offset >= layout.seq.start && s.offset + s.length <= layout.seq.start + written, name);
      }
    }
    // seq-read goes over the written data pass after pass (the time limit ends it), 1 MiB at a time.
    const reads = io(stepsOf('seq-read', 256 * MiB, written));
    assert.equal(reads.length % 10, 0);
    assert.ok(reads.length >= 20, 'more than one pass');
    assert.deepEqual(
      reads.slice(0, 12).map((s) => (s.offset - layout.seq.start) / MiB),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1],
    );
  });
});

describe('study workloads, repeated', () => {
  const layout = studyLayout(256 * MiB);
  const parts = [0, 1, 2].map((index) => ({ index, of: 3 }));
  const partSteps = (name: (typeof WORKLOADS)[number]['name'], part: Part, seqWritten = 0) => [
    ...workload(name).steps(layout, { seqWritten }, PROFILES.quick, seededRandom(7), part),
  ];

  it('cuts a region into adjacent shares of whole 64 KiB slots', () => {
    const shares = parts.map((part) => partOf(layout.db, part));
    assert.equal(shares[0]!.start, layout.db.start);
    for (let i = 1; i < 3; i++) assert.equal(shares[i]!.start, shares[i - 1]!.start + shares[i - 1]!.length);
    assert.equal(shares[2]!.start + shares[2]!.length, layout.db.start + layout.db.length);
    for (const share of shares) assert.equal(share.length % (64 * KiB), 0);
    assert.deepEqual(partOf(layout.db, WHOLE), layout.db);
  });

  it('first-touch writes: each repetition writes only its own share, so each one allocates', () => {
    for (const [name, region] of [
      ['install', layout.install],
      ['db-write', layout.db],
    ] as const) {
      const touched = parts.map((part) => {
        const share = partOf(region, part);
        const writes = io(partSteps(name, part), 'write');
        assert.ok(writes.length > 0, `${name} ${part.index}`);
        for (const s of writes) assert.ok(s.offset >= share.start && s.offset + s.length <= share.start + share.length);
        return new Set(writes.map((s) => Math.floor(s.offset / (64 * KiB))));
      });
      for (const slot of touched[0]!) assert.ok(!touched[1]!.has(slot) && !touched[2]!.has(slot), name);
    }
  });

  it('seq-write goes on where the last repetition stopped, up to the end of its share', () => {
    const shareEnd = (i: number) => partOf(layout.seq, parts[i]!).start + partOf(layout.seq, parts[i]!).length;
    // The first repetition was cut short after 5 MiB: the second starts there.
    const second = io(partSteps('seq-write', parts[1]!, 5 * MiB));
    assert.equal(second[0]!.offset, layout.seq.start + 5 * MiB);
    assert.equal(second.at(-1)!.offset + second.at(-1)!.length, shareEnd(1));
    for (let i = 1; i < second.length; i++)
      assert.equal(second[i]!.offset, second[i - 1]!.offset + second[i - 1]!.length);
    // Nothing left of a share already written.
    assert.deepEqual(partSteps('seq-write', parts[0]!, shareEnd(0) - layout.seq.start), []);
  });

  it('reads and rewrites: the same written data each time, other places with another seed', () => {
    const written = 10 * MiB;
    const a = io([
      ...workload('rand-read').steps(layout, { seqWritten: written }, PROFILES.quick, seededRandom(1), parts[0]!),
    ]);
    const b = io([
      ...workload('rand-read').steps(layout, { seqWritten: written }, PROFILES.quick, seededRandom(2), parts[1]!),
    ]);
    assert.equal(a.length, PROFILES.quick.readOps);
    assert.notDeepEqual(a.slice(0, 10), b.slice(0, 10));
    for (const s of [...a, ...b])
      assert.ok(s.offset >= layout.seq.start && s.offset + s.length <= layout.seq.start + written);
    const rewrite = io(partSteps('db-rewrite', parts[2]!, written));
    assert.equal(rewrite.length, Math.min(PROFILES.quick.randomOps, written / (64 * KiB)));
  });
});

describe('study statistics', () => {
  it('percentiles by nearest rank', () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i);
    assert.deepEqual(percentiles(values), { p50: 50, p95: 95, p99: 99, max: 100, mean: 50.5 });
    assert.deepEqual(percentiles([]), { p50: 0, p95: 0, p99: 0, max: 0, mean: 0 });
    assert.deepEqual(percentiles([3]), { p50: 3, p95: 3, p99: 3, max: 3, mean: 3 });
  });

  it('scores are geometric means of fractions of the best; combinations that did not run come last', () => {
    const result = (id: string, status: CombinationResult['status'], a: number, b: number) =>
      combinationOf(id, { 'seq-write': [a], 'rand-read': [b] }, status);
    const results = [
      result('raw/off/none', 'unsupported', 0, 0),
      result('raw/off/writeback', 'ok', 100, 1000),
      result('raw/off/unsafe', 'ok', 400, 250),
    ];
    const ranked = rankResults({ results });
    assert.deepEqual(
      ranked.map((r) => [r.result.id, r.rank]),
      [
        ['raw/off/writeback', 1],
        ['raw/off/unsafe', 2],
        ['raw/off/none', null],
      ],
    );
    // writeback: sqrt(100/400 * 1000/1000) = 0.5; unsafe: sqrt(1 * 0.25) = 0.5 — a tie kept in order.
    assert.ok(Math.abs(ranked[0]!.score! - 0.5) < 1e-12);
    assert.ok(Math.abs(ranked[1]!.score! - 0.5) < 1e-12);
    assert.ok(Math.abs(ranked[0]!.writes! - 0.25) < 1e-12);
    const best = new Map([['seq-write', 400] as const]);
    assert.equal(score(results[1]!, best, ['seq-write']), 0.25);
  });
});

describe('study matrix', () => {
  it('has 35 combinations, metadata for qcow2 only', () => {
    const all = studyMatrix({
      formats: ['raw', 'qcow2'],
      preallocs: ['off', 'metadata', 'falloc', 'full'],
      caches: ['none', 'writethrough', 'writeback', 'directsync', 'unsafe'],
    });
    assert.equal(all.length, 35);
    assert.ok(!all.some((c) => c.format === 'raw' && c.prealloc === 'metadata'));
    assert.deepEqual(parseNameList('qcow2,raw', ['raw', 'qcow2'], 'format'), ['raw', 'qcow2']);
  });
});
