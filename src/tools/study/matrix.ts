/**
 * What `vdisk study` measures: the matrix of format × preallocation × cache mode, the profiles
 * (how big and how long), and what each cache mode promises about a host crash.
 */
import { CACHE_MODE_NAMES, type CacheModeName } from '../../block/cache-mode.js';
import { VdiskError } from '../../block/errors.js';
import type { Preallocation } from '../../block/preallocation.js';

export const STUDY_FORMATS = ['raw', 'qcow2'] as const;
export type StudyFormat = (typeof STUDY_FORMATS)[number];

/** The preallocation modes each format has (metadata is a qcow2 mode only), in QEMU's order. */
export const PREALLOCATIONS_OF: Readonly<Record<StudyFormat, readonly Preallocation[]>> = {
  raw: ['off', 'falloc', 'full'],
  qcow2: ['off', 'metadata', 'falloc', 'full'],
};

export const ALL_PREALLOCATIONS: readonly Preallocation[] = ['off', 'metadata', 'falloc', 'full'];

export interface Combination {
  format: StudyFormat;
  prealloc: Preallocation;
  cache: CacheModeName;
  /** "qcow2/metadata/none": a stable name for files, tables and JSON. */
  id: string;
}

export interface MatrixSelection {
  formats: readonly StudyFormat[];
  preallocs: readonly Preallocation[];
  caches: readonly CacheModeName[];
}

export const FULL_SELECTION: MatrixSelection = {
  formats: STUDY_FORMATS,
  preallocs: ALL_PREALLOCATIONS,
  caches: CACHE_MODE_NAMES,
};

/**
 * Every combination of the selection that exists: format by format, preallocation by
 * preallocation, cache mode by cache mode. A preallocation a format does not have (raw with
 * metadata) is left out; a selection with no combination at all is an error.
 */
export function studyMatrix(selection: MatrixSelection): Combination[] {
  const out: Combination[] = [];
  for (const format of STUDY_FORMATS) {
    if (!selection.formats.includes(format)) continue;
    for (const prealloc of PREALLOCATIONS_OF[format]) {
      if (!selection.preallocs.includes(prealloc)) continue;
      for (const cache of CACHE_MODE_NAMES) {
        if (selection.caches.includes(cache))
          out.push({ format, prealloc, cache, id: `${format}/${prealloc}/${cache}` });
      }
    }
  }
  if (out.length === 0) {
    throw new VdiskError(
      'EINVAL',
      `No combination to study: preallocation ${selection.preallocs.join(',')} does not exist for format ${selection.formats.join(',')}`,
    );
  }
  return out;
}

/** A comma-separated list of names from a closed set ("raw,qcow2"), or "all". */
export function parseNameList<T extends string>(text: string, allowed: readonly T[], what: string): T[] {
  if (text === 'all') return [...allowed];
  const names = text.split(',').map((s) => s.trim());
  for (const name of names) {
    if (!(allowed as readonly string[]).includes(name)) {
      throw new VdiskError('EINVAL', `Unknown ${what} '${name}' (use ${allowed.join(', ')} or all)`);
    }
  }
  if (names.length === 0 || names.some((n) => n === '')) throw new VdiskError('EINVAL', `Empty ${what} list`);
  return allowed.filter((name) => names.includes(name));
}

/** How big and how long: the images, and the limits on each workload. */
export interface StudyProfile {
  name: 'quick' | 'full' | 'smoke';
  /** Virtual size of each image, in bytes. */
  size: number;
  /** A workload's repetition stops issuing requests after this many seconds (then drains and flushes). */
  workloadSeconds: number;
  /** Requests of the database workloads (4 KiB writes) in each repetition, before the time limit. */
  randomOps: number;
  /** Requests of the random reads (4 KiB) in each repetition, before the time limit. */
  readOps: number;
  /**
   * Times each workload runs on one image; its figure is the median, and the spread of the
   * repetitions is what decides ties (ties.ts). Reads and rewrites repeat over the same data;
   * first-touch writes each take a fresh share of their region, so every repetition allocates.
   */
  repeats: number;
  /**
   * Times the whole matrix is run, forwards then backwards, so that a burst of noise from other
   * work on the machine does not fall on one combination only; the report gives the medians.
   */
  rounds: number;
}

const MiB = 1024 * 1024;

export const PROFILES: Readonly<Record<StudyProfile['name'], StudyProfile>> = {
  // About two minutes for the whole matrix (35 combinations) on a 2-core machine with an SSD:
  // three 0.2 s repetitions of each workload, so that one burst of other work is outvoted.
  quick: {
    name: 'quick',
    size: 256 * MiB,
    workloadSeconds: 0.2,
    randomOps: 2048,
    readOps: 65536,
    repeats: 3,
    rounds: 1,
  },
  // Images four times larger, repetitions 3.5 times longer, and three rounds: 15 to 20 minutes.
  full: {
    name: 'full',
    size: 1024 * MiB,
    workloadSeconds: 0.7,
    randomOps: 8192,
    readOps: 262144,
    repeats: 3,
    rounds: 3,
  },
  // For tests: seconds for the whole matrix, numbers of no value.
  smoke: { name: 'smoke', size: 4 * MiB, workloadSeconds: 0.02, randomOps: 64, readOps: 64, repeats: 2, rounds: 1 },
};

/** What a host crash can do to the image, by cache mode. */
export type Safety = 'volatile' | 'flush-safe' | 'durable';

export function safetyOf(cache: CacheModeName): Safety {
  if (cache === 'unsafe') return 'volatile';
  if (cache === 'writethrough' || cache === 'directsync') return 'durable';
  return 'flush-safe';
}

export const SAFETY_TEXT: Readonly<Record<Safety, string>> = {
  volatile: 'flushes are ignored: a host crash may lose the whole image',
  'flush-safe': 'safe when the guest flushes: what a guest flush covered survives a host crash',
  durable: 'every write is durable before it completes, whether or not the guest flushes',
};
