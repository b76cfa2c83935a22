/**
 * The study's workloads, modelled on what guests do to their disks. Each is a pure, seeded
 * generator of requests (read, write, flush) over one region of the image, so the same run
 * produces the same requests for every combination; execute.ts issues them with the workload's
 * queue depth and times them. A flush step is a barrier, as in a guest: the requests before it
 * complete, then the flush is issued.
 *
 * The image is cut into three regions, so that first-touch writes (allocation: a hole in the
 * host file, a qcow2 cluster without a mapping) and steady-state writes (rewriting data that is
 * already there) are measured apart:
 *
 *     [ install 40% ][ sequential 30% ][ database 30% ]
 *
 * - install     first touch of the install region: the OS-install-like stream.
 * - seq-write   first touch of the sequential region, 1 MiB at a time.
 * - seq-read    reads back what seq-write wrote, 1 MiB at a time, cold: the image's pages are
 *               dropped from the host page cache before each repetition (image-workloads.ts).
 * - seq-read-warm  the same right after, warm: what the host page cache holds is read from RAM.
 * - rand-read   4 KiB reads at random places of what seq-write wrote, cold.
 * - rand-read-warm the same with the written data read into the host page cache first.
 * - db-write    first touch of the database region: 4 KiB random writes, a flush per group.
 * - db-rewrite  the same pattern over the (written) sequential region: steady-state cost.
 *
 * A workload runs several times on one image (the profile's repeats), and each repetition is a
 * `Part`: the first-touch writes give each part its own share of their region (seq-write goes on
 * where the last part stopped, so what it wrote stays one run from the region's start); the
 * reads and the rewrite go over the same written data every time, with a different seed.
 */
import type { StudyProfile } from './matrix.js';

export const WORKLOAD_NAMES = [
  'install',
  'seq-write',
  'seq-read',
  'seq-read-warm',
  'rand-read',
  'rand-read-warm',
  'db-write',
  'db-rewrite',
] as const;
export type WorkloadName = (typeof WORKLOAD_NAMES)[number];

export type Step = { op: 'read' | 'write'; offset: number; length: number } | { op: 'flush' };

export interface Region {
  start: number;
  length: number;
}

export interface Layout {
  install: Region;
  seq: Region;
  db: Region;
}

/** Which repetition of a workload this is: `index` of `of`. */
export interface Part {
  index: number;
  of: number;
}

export const WHOLE: Part = { index: 0, of: 1 };

/** The share of a region that a part of a first-touch workload writes, in whole 64 KiB slots. */
export function partOf(region: Region, part: Part): Region {
  const slots = Math.floor(region.length / SLOT);
  const from = Math.floor((slots * part.index) / part.of);
  const to = Math.floor((slots * (part.index + 1)) / part.of);
  return { start: region.start + from * SLOT, length: (to - from) * SLOT };
}

/** What earlier workloads of the same image left behind for later ones. */
export interface ImageState {
  /** Bytes of the sequential region written from its start (by seq-write or the untimed fill). */
  seqWritten: number;
}

export interface Workload {
  name: WorkloadName;
  /** Without the page-cache state: workloadTitle() adds it where it holds. */
  title: string;
  /** What a guest does that this models; shown in help, reports and docs. */
  description: string;
  writes: boolean;
  /** first-touch: writes to space never written before; steady: to data already there. */
  phase: 'first-touch' | 'steady' | 'read';
  queueDepth: number;
  /**
   * Reads only: cold reads start with the image's pages dropped from the host page cache (what a
   * guest waits for at the storage), warm ones with the data read into it first (what a host
   * cache gives a guest re-reading). Warm reads are reported, not scored: a guest caches its own.
   */
  pageCache?: 'cold' | 'warm';
  /** The figure that ranks it: MiB/s for large requests, IOPS for 4 KiB ones. */
  metric: 'MiB/s' | 'IOPS';
  steps(layout: Layout, state: ImageState, profile: StudyProfile, random: () => number, part: Part): Iterable<Step>;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const BLOCK = 4 * KiB;
/** The database workloads write one 4 KiB block in each 64 KiB slot (a qcow2 cluster by default). */
const SLOT = 64 * KiB;
/** Writes in flight between two flushes of the database workloads (a group commit). */
const DB_GROUP = 8;

/** Cuts the image into the three regions, each a whole number of 64 KiB slots. */
export function studyLayout(size: number): Layout {
  const slots = Math.floor(size / SLOT);
  const installSlots = Math.floor(slots * 0.4);
  const seqSlots = Math.floor(slots * 0.3);
  const dbSlots = slots - installSlots - seqSlots;
  return {
    install: { start: 0, length: installSlots * SLOT },
    seq: { start: installSlots * SLOT, length: seqSlots * SLOT },
    db: { start: (installSlots + seqSlots) * SLOT, length: dbSlots * SLOT },
  };
}

/** mulberry32: a small seeded generator, so every combination gets the same requests. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function logUniform(random: () => number, low: number, high: number): number {
  return Math.exp(Math.log(low) + random() * (Math.log(high) - Math.log(low)));
}

/** A file size as an installer writes them: most small, some medium, a few large; whole 4 KiB blocks. */
function installFileSize(random: () => number): number {
  const r = random();
  const bytes =
    r < 0.6
      ? logUniform(random, 4 * KiB, 64 * KiB)
      : r < 0.9
        ? logUniform(random, 64 * KiB, MiB)
        : logUniform(random, MiB, 8 * MiB);
  return Math.ceil(bytes / BLOCK) * BLOCK;
}

/** Largest request of the install stream (a guest's max_sectors_kb is often 256 or 512). */
const INSTALL_REQUEST = 256 * KiB;
/** Data between two journal commits of the install stream's guest filesystem. */
const INSTALL_COMMIT = 4 * MiB;
const INSTALL_JOURNAL_RECORD = 16 * KiB;

function* installSteps(region: Region, random: () => number): Iterable<Step> {
  // The guest filesystem's journal sits at the start of the region; files follow it.
  const journalLength = Math.max(BLOCK, Math.min(MiB, Math.floor(region.length / 8 / BLOCK) * BLOCK));
  const end = region.start + region.length;
  let journalAt = 0;
  let cursor = region.start + journalLength;
  let sinceCommit = 0;
  const commit = function* (): Iterable<Step> {
    const length = Math.min(INSTALL_JOURNAL_RECORD, journalLength);
    if (journalAt + length > journalLength) journalAt = 0;
    yield { op: 'write', offset: region.start + journalAt, length };
    journalAt += length;
    yield { op: 'flush' };
    sinceCommit = 0;
  };
  while (cursor < end) {
    // Now and then the allocator leaves a few blocks free between two files.
    if (random() < 0.2) cursor += BLOCK * Math.floor(random() * 4);
    let left = Math.min(installFileSize(random), end - cursor);
    while (left > 0) {
      const length = Math.min(INSTALL_REQUEST, left);
      yield { op: 'write', offset: cursor, length };
      cursor += length;
      left -= length;
      sinceCommit += length;
      if (sinceCommit >= INSTALL_COMMIT) yield* commit();
    }
  }
  if (sinceCommit > 0) yield* commit();
}

function* sequential(op: 'read' | 'write', start: number, length: number): Iterable<Step> {
  for (let at = 0; at < length; at += MiB) yield { op, offset: start + at, length: Math.min(MiB, length - at) };
}

/**
 * Passes over the written data until the time limit: one pass of page-cached data takes a few
 * milliseconds, too short to rank anything by.
 */
const READ_PASSES = 64;

function* sequentialPasses(start: number, length: number): Iterable<Step> {
  for (let pass = 0; pass < READ_PASSES; pass++) yield* sequential('read', start, length);
}

/** The part of the sequential region that a repetition of seq-write writes: on from what is written. */
function sequentialWritePart(seq: Region, state: ImageState, part: Part): Iterable<Step> {
  return sequential('write', seq.start + state.seqWritten, Math.max(0, partEnd(seq, part) - state.seqWritten));
}

/** Where a part's share of a region ends, relative to the region's start. */
function partEnd(region: Region, part: Part): number {
  const share = partOf(region, part);
  return share.start + share.length - region.start;
}

/** Slots of a range in random order (Fisher–Yates), at most `count` of them. */
function shuffledSlots(start: number, length: number, count: number, random: () => number): number[] {
  const slots = Array.from({ length: Math.floor(length / SLOT) }, (_, i) => start + i * SLOT);
  const n = Math.min(count, slots.length);
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(random() * (slots.length - i));
    [slots[i], slots[j]] = [slots[j]!, slots[i]!];
  }
  return slots.slice(0, n);
}

/** One 4 KiB write at a random place of each slot, a flush after every group. */
function* databaseSteps(start: number, length: number, count: number, random: () => number): Iterable<Step> {
  const slots = shuffledSlots(start, length, count, random);
  let inGroup = 0;
  for (const slot of slots) {
    yield { op: 'write', offset: slot + BLOCK * Math.floor(random() * (SLOT / BLOCK)), length: BLOCK };
    if (++inGroup === DB_GROUP) {
      yield { op: 'flush' };
      inGroup = 0;
    }
  }
  if (inGroup > 0) yield { op: 'flush' };
}

function* randomReads(start: number, length: number, count: number, random: () => number): Iterable<Step> {
  const blocks = Math.floor(length / BLOCK);
  if (blocks === 0) return;
  for (let i = 0; i < count; i++)
    yield { op: 'read', offset: start + BLOCK * Math.floor(random() * blocks), length: BLOCK };
}

export const WORKLOADS: readonly Workload[] = [
  {
    name: 'install',
    title: 'OS install',
    description:
      'An OS installer unpacking files: mostly sequential writes of files of mixed sizes (60% 4-64 KiB, ' +
      '30% 64 KiB-1 MiB, 10% 1-8 MiB) in requests of up to 256 KiB, a few blocks skipped now and then; ' +
      'every 4 MiB the guest filesystem commits its journal (a 16 KiB journal write, then a flush). ' +
      '4 requests in flight; first touch.',
    writes: true,
    phase: 'first-touch',
    queueDepth: 4,
    metric: 'MiB/s',
    steps: (layout, _state, _profile, random, part) => installSteps(partOf(layout.install, part), random),
  },
  {
    name: 'seq-write',
    title: 'Sequential write 1 MiB',
    description: 'A large file copied into the guest: 1 MiB sequential writes, 8 in flight; first touch.',
    writes: true,
    phase: 'first-touch',
    queueDepth: 8,
    metric: 'MiB/s',
    steps: (layout, state, _profile, _random, part) => sequentialWritePart(layout.seq, state, part),
  },
  {
    name: 'seq-read',
    title: 'Sequential read 1 MiB',
    description:
      'Reading the large file back after a reboot: 1 MiB sequential reads of the written data, 8 in flight, ' +
      "pass after pass until the time limit, the image's pages dropped from the host page cache first.",
    writes: false,
    phase: 'read',
    pageCache: 'cold',
    queueDepth: 8,
    metric: 'MiB/s',
    steps: (layout, state) => sequentialPasses(layout.seq.start, state.seqWritten),
  },
  {
    name: 'seq-read-warm',
    title: 'Sequential read 1 MiB',
    description:
      'The same reads again at once: what the host page cache kept (cache modes without O_DIRECT) is read from ' +
      'RAM. Reported, not scored.',
    writes: false,
    phase: 'read',
    pageCache: 'warm',
    queueDepth: 8,
    metric: 'MiB/s',
    steps: (layout, state) => sequentialPasses(layout.seq.start, state.seqWritten),
  },
  {
    name: 'rand-read',
    title: 'Random read 4 KiB',
    description:
      'A database or package index looked up: 4 KiB reads at random places of written data, 32 in flight, ' +
      "the image's pages dropped from the host page cache first.",
    writes: false,
    phase: 'read',
    pageCache: 'cold',
    queueDepth: 32,
    metric: 'IOPS',
    steps: (layout, state, profile, random) => randomReads(layout.seq.start, state.seqWritten, profile.readOps, random),
  },
  {
    name: 'rand-read-warm',
    title: 'Random read 4 KiB',
    description:
      'The same lookups with the written data read into the host page cache first (untimed). Reported, not scored.',
    writes: false,
    phase: 'read',
    pageCache: 'warm',
    queueDepth: 32,
    metric: 'IOPS',
    steps: (layout, state, profile, random) => randomReads(layout.seq.start, state.seqWritten, profile.readOps, random),
  },
  {
    name: 'db-write',
    title: 'Database write 4 KiB, first touch',
    description:
      'A database filling a new table file: 4 KiB writes, each to a 64 KiB slot never written before, ' +
      'in random order; groups of 8 in flight, each group followed by a flush (a commit).',
    writes: true,
    phase: 'first-touch',
    queueDepth: DB_GROUP,
    metric: 'IOPS',
    steps: (layout, _state, profile, random, part) => {
      const share = partOf(layout.db, part);
      return databaseSteps(share.start, share.length, Math.ceil(profile.randomOps / part.of), random);
    },
  },
  {
    name: 'db-rewrite',
    title: 'Database rewrite 4 KiB, steady state',
    description:
      'The same database pattern over data already written (the sequential region): what a running ' +
      'database costs once its space is allocated.',
    writes: true,
    phase: 'steady',
    queueDepth: DB_GROUP,
    metric: 'IOPS',
    steps: (layout, state, profile, random) =>
      databaseSteps(layout.seq.start, state.seqWritten, profile.randomOps, random),
  },
];

/** The title with the read's page-cache state when it holds: "Random read 4 KiB, cold". */
export function workloadTitle(name: WorkloadName, evictedReads = true): string {
  const w = workload(name);
  const state = w.pageCache === 'cold' && !evictedReads ? undefined : w.pageCache;
  return state ? `${w.title}, ${state}` : w.title;
}

export function workload(name: WorkloadName): Workload {
  return WORKLOADS.find((w) => w.name === name)!;
}

/** Workloads that read or rewrite what seq-write writes. */
export function needsSequentialData(name: WorkloadName): boolean {
  return workload(name).phase === 'read' || name === 'db-rewrite';
}

/** The workloads a score is made of: all but the warm reads. */
export const RANKED_WORKLOADS: readonly WorkloadName[] = WORKLOADS.filter((w) => w.pageCache !== 'warm').map(
  (w) => w.name,
);

/** One pass over the written sequential data, untimed: what puts it into the host page cache. */
export function sequentialReadPass(layout: Layout, state: ImageState): Iterable<Step> {
  return sequential('read', layout.seq.start, state.seqWritten);
}
