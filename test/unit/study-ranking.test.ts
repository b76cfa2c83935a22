/**
 * The study's ranking on fixed data: spreads of samples, ties within the measured spread, ranks
 * shared by a tie group, Spearman's ρ with and without ties, the agreement of two studies, and
 * the pairing and printing of `vdisk study --compare`.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { agreement, spearman } from '../../src/tools/study/agreement.js';
import { comparisonText, tiedRhoText } from '../../src/tools/study/agreement-text.js';
import { pairRuns } from '../../src/tools/study/compare-files.js';
import { EXTRA_REPEATS, NOISY, tooNoisy } from '../../src/tools/study/image-workloads.js';
import { rankResults, rankText, scoreSpread } from '../../src/tools/study/rank.js';
import type { StudyReport } from '../../src/tools/study/report-json.js';
import {
  isTie,
  pearson,
  rankWithTies,
  type Spread,
  spreadOf,
  TIE_FLOOR,
  tiedSpearman,
} from '../../src/tools/study/ties.js';
import type { WorkloadName } from '../../src/tools/study/workloads.js';
import { combinationOf, measurementOf } from '../helpers/study.js';

const point = (v: number): Spread => ({ median: v, low: v, high: v });
const range = (median: number, low: number, high: number): Spread => ({ median, low, high });

const measurement = measurementOf;
const cell = (id: string, workloads: Partial<Record<WorkloadName, number[]>>) => combinationOf(id, workloads);

describe('spreads and ties', () => {
  it('a spread is the median and the range, without the extremes from five samples on', () => {
    assert.deepEqual(spreadOf([3, 1, 2]), { median: 2, low: 1, high: 3 });
    assert.deepEqual(spreadOf([10, 1, 4, 3, 2]), { median: 3, low: 2, high: 4 });
    assert.deepEqual(spreadOf([5]), { median: 5, low: 5, high: 5 });
    assert.deepEqual(spreadOf([]), { median: 0, low: 0, high: 0 });
  });

  it('two figures tie when their ranges overlap or they are within the floor', () => {
    assert.equal(TIE_FLOOR, 0.05);
    assert.equal(isTie(range(100, 90, 110), range(85, 80, 91)), true, 'ranges overlap');
    assert.equal(isTie(range(100, 95, 105), range(85, 80, 90)), false, 'ranges apart, 15% apart');
    assert.equal(isTie(point(100), point(96)), true, 'within 5%');
    assert.equal(isTie(point(100), point(94)), false, '6% apart, no spread measured');
  });

  it('ties are pairwise: a rank is the range of places between the clearly better and the ties', () => {
    // 100 ties 96 (4%) but not 92 (8%); 96 ties 92 (4.2%) but not 88 (8.3%); 92 ties 88; 50 ties nothing.
    const values = [point(92), point(100), point(50), point(96), point(88)];
    const ranks = rankWithTies(values);
    assert.deepEqual(
      ranks.map((r) => [r.position, r.best, r.worst, r.meanRank, r.ties]),
      [
        [3, 2, 4, 3, 2],
        [1, 1, 2, 1.5, 1],
        [5, 5, 5, 5, 0],
        [2, 1, 3, 2, 2],
        [4, 3, 4, 3.5, 1],
      ],
    );
    // A wide range ties even far apart; what no range reaches is ordered.
    const wide = rankWithTies([range(100, 40, 120), point(60), point(30)]);
    assert.deepEqual(
      wide.map((r) => rankText(r)),
      ['1–2', '1–2', '3'],
    );
    assert.deepEqual(
      rankWithTies([point(10), point(10), point(1)]).map((r) => [r.position, rankText(r)]),
      [
        [1, '1–2'],
        [2, '1–2'],
        [3, '3'],
      ],
      'equal medians keep their order and tie',
    );
    assert.equal(rankText(null), '-');
    assert.equal(rankText(ranks[0]!), '2–4');
    assert.equal(rankText(ranks[2]!), '5');
  });
});

describe('repetitions', () => {
  it('reads and rewrites are repeated while their samples disagree by more than a quarter, twice at most', () => {
    const samples = (...values: number[]) => values.map(measurement);
    assert.equal(NOISY, 0.25);
    assert.equal(EXTRA_REPEATS, 2);
    assert.equal(tooNoisy('rand-read', samples(100, 110, 120), 3), false, '20% apart');
    assert.equal(tooNoisy('rand-read', samples(100, 110, 130), 3), true, '30% apart');
    assert.equal(tooNoisy('seq-read', samples(100, 110, 130, 90), 3), true);
    // Five samples: the range leaves out the extremes, and five is the most.
    assert.equal(tooNoisy('seq-read', samples(100, 110, 130, 90, 105), 3), false);
    assert.equal(tooNoisy('seq-read', samples(1, 110, 1000, 90, 105), 3), false, 'no more than two extra');
    assert.equal(tooNoisy('seq-read', samples(100, 200), 2), false, 'profiles of fewer than three repetitions');
    assert.equal(tooNoisy('seq-read', samples(0, 0, 0), 3), true, 'nothing measured yet');
  });
});

describe("Spearman's ρ", () => {
  it('is Pearson’s correlation of the ranks, exact ties sharing their mean rank', () => {
    assert.equal(spearman([1, 2, 3, 4], [10, 20, 30, 40]), 1);
    assert.equal(spearman([1, 2, 3, 4], [40, 30, 20, 10]), -1);
    // Ranks 1 2 3 4 5 against 1 2 3.5 5 3.5: 8 / sqrt(10 × 9.5).
    assert.equal(spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]), 8 / Math.sqrt(95));
    assert.equal(spearman([1, 1, 1], [1, 2, 3]), null, 'no spread');
    assert.equal(spearman([1, 2], [1, 2]), null, 'too few');
    assert.equal(pearson([1, 2, 3], [2, 4, 6]), 1);
  });

  it('with ties, noise among tied combinations no longer counts, while clear orders do', () => {
    // Two clusters far apart; inside each, the two runs order the members the other way round.
    const first = [point(100), point(99), point(98), point(10), point(9.9), point(9.8)];
    const second = [point(98), point(99), point(100), point(9.8), point(9.9), point(10)];
    const strict = spearman(
      first.map((s) => s.median),
      second.map((s) => s.median),
    )!;
    // Σd² = 16 over six: 1 − 6·16 / (6·35) = 19/35.
    assert.ok(Math.abs(strict - 19 / 35) < 1e-12, `strict ρ ${strict}`);
    assert.equal(tiedSpearman(first, second), 1);
    // The clusters reversed is a reversed ranking, ties or not.
    const reversed = [point(10), point(9.9), point(9.8), point(100), point(99), point(98)];
    assert.equal(tiedSpearman(first, reversed), -1);
    // Everything tied: no order to compare.
    assert.equal(tiedSpearman([point(1), point(1.01), point(1.02)], [point(1), point(2), point(3)]), null);
  });
});

describe('rankings and agreement of studies', () => {
  const runA = {
    workloads: ['seq-write', 'rand-read'] as WorkloadName[],
    results: [
      cell('raw/off/none', { 'seq-write': [100, 101, 99], 'rand-read': [1000, 990, 1010] }),
      cell('raw/off/writeback', { 'seq-write': [200, 190, 210], 'rand-read': [5000, 4000, 6000] }),
      cell('raw/off/unsafe', { 'seq-write': [400, 380, 420], 'rand-read': [5100, 5000, 5200] }),
      cell('qcow2/off/none', { 'seq-write': [50, 49, 51], 'rand-read': [980, 970, 990] }),
    ],
  };
  // A second run: the same but writeback and unsafe swapped on reads (within their spread).
  const runB = {
    workloads: runA.workloads,
    results: [
      cell('raw/off/none', { 'seq-write': [102, 100, 104], 'rand-read': [1001, 995, 1005] }),
      cell('raw/off/writeback', { 'seq-write': [210, 200, 220], 'rand-read': [5200, 4100, 6100] }),
      cell('raw/off/unsafe', { 'seq-write': [390, 385, 395], 'rand-read': [5050, 5000, 5100] }),
      cell('qcow2/off/none', { 'seq-write': [52, 50, 53], 'rand-read': [990, 985, 995] }),
    ],
  };

  it('the score’s spread is the spread of the repetitions’ scores', () => {
    const best = new Map<WorkloadName, number>([
      ['seq-write', 400],
      ['rand-read', 5100],
    ]);
    const s = scoreSpread(runA.results[1]!, best)!;
    // Repetition j's score: sqrt(seq-write_j / 400 × rand-read_j / 5100).
    const draws = [
      [200, 5000],
      [190, 4000],
      [210, 6000],
    ].map(([w, r]) => Math.sqrt((w! / 400) * (r! / 5100)));
    assert.ok(Math.abs(s.median - Math.sqrt((200 / 400) * (5000 / 5100))) < 1e-12);
    assert.ok(Math.abs(s.low - Math.min(...draws)) < 1e-12);
    assert.ok(Math.abs(s.high - Math.max(...draws)) < 1e-12);
  });

  it('a ranking shows ties where scores are within each other’s spread', () => {
    const ranked = rankResults(runA);
    assert.deepEqual(
      ranked.map((r) => [r.result.id, r.rank, rankText(r.tie)]),
      [
        ['raw/off/unsafe', 1, '1'],
        ['raw/off/writeback', 2, '2'],
        ['raw/off/none', 3, '3'],
        ['qcow2/off/none', 4, '4'],
      ],
    );
  });

  it('ρ per workload and for the score, with ties and strict', () => {
    const rows = agreement(runA, runB);
    assert.deepEqual(
      rows.map((r) => [r.what, r.n]),
      [
        ['seq-write', 4],
        ['rand-read', 4],
        ['score', 4],
      ],
    );
    const read = rows.find((r) => r.what === 'rand-read')!;
    // Strict: writeback and unsafe swap places (ranks 1 2 3 4 against 2 1 3 4 → 0.8).
    assert.ok(Math.abs(read.strictRho! - 0.8) < 1e-12, String(read.strictRho));
    // With ties, they tie in both runs, and so do the two O_DIRECT cells.
    assert.equal(read.rho, 1);
    assert.equal(rows.find((r) => r.what === 'seq-write')!.rho, 1);
    assert.equal(tiedRhoText({ what: 'score', rho: null, strictRho: 0.5, n: 4 }), 'all tied');
    assert.equal(tiedRhoText({ what: 'score', rho: null, strictRho: null, n: 2 }), '-');
  });

  it('--compare pairs runs by engine, or one file’s two engines, and prints a verdict against 0.9', () => {
    const report = (engine: StudyReport['engine'], run: typeof runA) =>
      ({
        tool: 'vdisk study',
        engine,
        startedAt: '2026-12-01T10:00:00.000Z',
        profile: { name: 'quick' },
        ...run,
      }) as unknown as StudyReport;
    const both = { tool: 'vdisk study', engines: [report('vdisk', runA), report('qemu', runB)] } as never;
    const single = report('vdisk', runB);
    assert.deepEqual(
      pairRuns([{ file: 'both.json', doc: both }]).map(([a, b]) => [a.report.engine, b.report.engine]),
      [['vdisk', 'qemu']],
    );
    assert.deepEqual(
      pairRuns([
        { file: 'both.json', doc: both },
        { file: 'one.json', doc: single },
      ]).map(([a, b]) => [a.file, a.report.engine, b.file, b.report.engine]),
      [['both.json', 'vdisk', 'one.json', 'vdisk']],
    );
    assert.throws(() => pairRuns([{ file: 'one.json', doc: single }]), /holds one study: give a second file/);
    const [a, b] = pairRuns([
      { file: 'a.json', doc: report('vdisk', runA) },
      { file: 'b.json', doc: single },
    ])[0]!;
    const text = comparisonText({ a, b, agreement: agreement(a.report, b.report) });
    assert.equal(
      text,
      [
        'vdisk (a.json, quick, 2026-12-01 10:00 UTC) against vdisk (b.json, quick, 2026-12-01 10:00 UTC): 4 combinations in both',
        'workload   ρ with ties  ρ strict',
        'seq-write         1.00      1.00',
        'rand-read         1.00      0.80',
        'score             1.00      1.00',
        'ρ ≥ 0.9 (with ties): seq-write, rand-read, score',
        '',
      ].join('\n'),
    );
  });
});
