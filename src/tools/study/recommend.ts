/**
 * The recommendation: speed weighed against what a host crash can do to the image.
 *
 * - The pick is the best-scoring combination among the cache modes that are safe when the guest
 *   flushes (none, writeback): every modern guest OS and database flushes when it needs data to
 *   be durable. Between none and writeback within 10% of each other, none is preferred: it keeps
 *   the guest's data out of the host page cache (no double caching, no host memory pressure,
 *   speed that does not depend on what else the host caches).
 * - For guests that do not flush, or data that must survive a host crash write by write: the
 *   best of writethrough and directsync, with what it costs on writes.
 * - unsafe: how much faster it is, and that a host crash may lose the whole image.
 * - Preallocation for the picked format and cache mode: first-touch and steady-state speed,
 *   creation time and space on disk of each mode, and the cheapest mode within 10% of the best
 *   first-touch speed.
 */
import type { CacheModeName } from '../../block/cache-mode.js';
import type { Preallocation } from '../../block/preallocation.js';
import { SAFETY_TEXT, type StudyFormat } from './matrix.js';
import { formatNumber, type Ranked, rankResults } from './rank.js';
import type { StudyRun } from './results.js';
import { isTie } from './ties.js';

export interface Pick {
  id: string;
  format: StudyFormat;
  prealloc: Preallocation;
  cache: CacheModeName;
  score: number;
}

export interface PreallocationAdvice {
  prealloc: Preallocation;
  /** First-touch write score as a fraction of the best mode's, for the same format and cache. */
  firstTouch: number | null;
  steady: number | null;
  createSeconds: number | null;
  allocatedAfterCreate: number | null;
}

export interface Recommendation {
  /** Best flush-safe combination; null when none ran. */
  pick: Pick | null;
  /** Flush-safe combinations whose score ties with the pick's (within the measured spread). */
  tiedWithPick: string[];
  /** Best flush-safe combination of each format. */
  perFormat: Partial<Record<StudyFormat, Pick>>;
  /** Best combination where every write is durable, and its write score relative to the pick. */
  durable: (Pick & { writeRatio: number | null }) | null;
  /** Best unsafe combination, and its write score relative to the pick. */
  unsafe: (Pick & { writeRatio: number | null }) | null;
  preallocation: PreallocationAdvice[];
  /** Cheapest preallocation within 10% of the best first-touch speed, for the pick's format and cache. */
  preallocationPick: Preallocation | null;
  /** The recommendation as text, one paragraph a line. */
  text: string[];
}

const CLOSE = 0.9;

function pickOf(r: Ranked | undefined): Pick | null {
  if (!r || r.score === null) return null;
  const { id, format, prealloc, cache } = r.result;
  return { id, format, prealloc, cache, score: r.score };
}

function describe(p: Pick): string {
  return `${p.format} with preallocation=${p.prealloc} and cache=${p.cache}`;
}

function percent(ratio: number | null): string {
  return ratio === null ? '?' : `${Math.round(ratio * 100)}%`;
}

function times(ratio: number | null): string {
  return ratio === null ? '?' : `${formatNumber(ratio)}×`;
}

function bytesText(bytes: number | null): string {
  if (bytes === null) return '?';
  if (bytes < 1024 * 1024) return `${formatNumber(bytes / 1024)} KiB`;
  if (bytes < 1024 * 1024 * 1024) return `${formatNumber(bytes / 1024 / 1024)} MiB`;
  return `${formatNumber(bytes / 1024 / 1024 / 1024)} GiB`;
}

/** The flush-safe pick: best score, but none over writeback when they are within 10%. */
function choose(flushSafe: readonly Ranked[]): Ranked | undefined {
  const top = flushSafe[0];
  if (top?.result.cache !== 'writeback') return top;
  const none = flushSafe.find((r) => r.result.cache === 'none' && r.result.format === top.result.format);
  return none && none.score! >= top.score! * CLOSE ? none : top;
}

/** An NBD export has no alternatives to rank: the recommendation says so and what to compare. */
function serverNote(run: StudyRun): Recommendation {
  return {
    pick: null,
    tiedWithPick: [],
    perFormat: {},
    durable: null,
    unsafe: null,
    preallocation: [],
    preallocationPick: null,
    text: [
      `One NBD export (${run.server?.uri ?? '?'}) measured with its server's own settings: there is nothing to rank. ` +
        'Run the study again with the server set up another way, or run `vdisk study` on the storage behind it, ' +
        'and compare the figures.',
    ],
  };
}

export function recommend(run: StudyRun): Recommendation {
  if (run.engine === 'nbd') return serverNote(run);
  const ranked = rankResults(run).filter((r) => r.score !== null);
  const flushSafe = ranked.filter((r) => r.result.safety === 'flush-safe');
  const chosen = choose(flushSafe);
  const pick = pickOf(chosen);
  const perFormat: Recommendation['perFormat'] = {};
  for (const format of run.selection.formats) {
    const p = pickOf(choose(flushSafe.filter((r) => r.result.format === format)));
    if (p) perFormat[format] = p;
  }
  const durableRanked = ranked.filter((r) => r.result.safety === 'durable')[0];
  const unsafeRanked = ranked.filter((r) => r.result.safety === 'volatile')[0];
  const ratio = (r: Ranked | undefined) =>
    r && chosen && r.writes !== null && chosen.writes ? r.writes / chosen.writes : null;
  const tiedWithPick = flushSafe.filter((r) => chosen && r !== chosen && tiesWith(chosen, r)).map((r) => r.result.id);
  const durable = pickOf(durableRanked);
  const unsafe = pickOf(unsafeRanked);

  const preallocation: PreallocationAdvice[] = [];
  let preallocationPick: Preallocation | null = null;
  if (chosen) {
    const same = ranked.filter(
      (r) => r.result.format === chosen.result.format && r.result.cache === chosen.result.cache,
    );
    const bestFirst = Math.max(...same.map((r) => r.firstTouch ?? 0));
    const bestSteady = Math.max(...same.map((r) => r.steady ?? 0));
    for (const r of same.sort((a, b) => order(a.result.prealloc) - order(b.result.prealloc))) {
      preallocation.push({
        prealloc: r.result.prealloc,
        firstTouch: r.firstTouch !== null && bestFirst > 0 ? r.firstTouch / bestFirst : null,
        steady: r.steady !== null && bestSteady > 0 ? r.steady / bestSteady : null,
        createSeconds: r.result.create?.seconds ?? null,
        allocatedAfterCreate: r.result.create?.allocatedBytes ?? null,
      });
    }
    // Cheapest in space, then in creation time, among the modes close to the best first-touch speed.
    const close = preallocation
      .filter((a) => a.firstTouch !== null && a.firstTouch >= CLOSE)
      .sort(
        (a, b) =>
          (a.allocatedAfterCreate ?? 0) - (b.allocatedAfterCreate ?? 0) ||
          (a.createSeconds ?? 0) - (b.createSeconds ?? 0),
      );
    preallocationPick = close[0]?.prealloc ?? null;
  }

  const text: string[] = [];
  if (pick && chosen) {
    const top = ranked[0]!;
    text.push(
      `Recommended: ${describe(pick)} (score ${formatNumber(pick.score)}; the fastest overall, ${top.result.id}, ` +
        `scores ${formatNumber(top.score!)}). cache=${pick.cache} is ${SAFETY_TEXT['flush-safe']}; ` +
        `modern guest OSes and databases flush when they need data on disk.`,
    );
    if (tiedWithPick.length > 0) {
      text.push(
        `Tied with it (within the spread of the repeated measurements, and as safe): ${tiedWithPick.join(', ')}. ` +
          'Which of them comes first is not a stable result here; choose among them for other reasons.',
      );
    }
    const formats = Object.values(perFormat);
    if (formats.length > 1) {
      text.push(
        `Per format: ${formats.map((p) => `${p.format} ${p.prealloc}/${p.cache} (score ${formatNumber(p.score)})`).join(', ')}. ` +
          'qcow2 costs what its mapping costs and gives snapshots, backing files and thin provisioning.',
      );
    }
    if (preallocation.length > 1) {
      const rows = preallocation.map(
        (a) =>
          `${a.prealloc}: first writes ${percent(a.firstTouch)}, rewrites ${percent(a.steady)}, ` +
          `created in ${a.createSeconds === null ? '?' : `${formatNumber(a.createSeconds)} s`}, ` +
          `${bytesText(a.allocatedAfterCreate)} on disk when new`,
      );
      text.push(
        `Preallocation (${pick.format}, cache=${pick.cache}; speeds relative to the best mode): ${rows.join('; ')}.` +
          (preallocationPick
            ? ` Cheapest within 10% of the best first-write speed: preallocation=${preallocationPick}.`
            : ''),
      );
    }
  } else {
    text.push(
      'No combination with cache=none or cache=writeback ran, so there is no recommendation for flushing guests.',
    );
  }
  if (durable) {
    text.push(
      `If the guest does not flush, or every write must survive a host crash: ${describe(durable)} ` +
        `(${SAFETY_TEXT.durable}); its writes run at ${percent(ratio(durableRanked))} of the recommendation's speed.`,
    );
  }
  if (unsafe) {
    text.push(
      `cache=unsafe (${describe(unsafe)}) writes ${times(ratio(unsafeRanked))} as fast as the recommendation, but it ` +
        'ignores flushes, so a host crash may lose the whole image: use it only for throwaway guests and images you can rebuild.',
    );
  }
  return {
    pick,
    tiedWithPick,
    perFormat,
    durable: durable ? { ...durable, writeRatio: ratio(durableRanked) } : null,
    unsafe: unsafe ? { ...unsafe, writeRatio: ratio(unsafeRanked) } : null,
    preallocation,
    preallocationPick,
    text,
  };
}

/** True when two combinations' scores are within each other's measured spread. */
function tiesWith(a: Ranked, b: Ranked): boolean {
  if (!a.scoreSpread || !b.scoreSpread) return false;
  return a.scoreSpread.median >= b.scoreSpread.median
    ? isTie(a.scoreSpread, b.scoreSpread)
    : isTie(b.scoreSpread, a.scoreSpread);
}

function order(p: Preallocation): number {
  return ['off', 'metadata', 'falloc', 'full'].indexOf(p);
}
