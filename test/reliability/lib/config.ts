/**
 * How hard the reliability families work. `npm test` runs the bounded default (about two minutes
 * for all families on a 2-CPU machine); `npm run test:reliability -- --long` (or
 * VDISK_RELIABILITY=long) runs the long version, for hours if asked. Every count can be set on
 * its own through the environment.
 */

export type ReliabilityLevel = 'ci' | 'long';

function level(): ReliabilityLevel {
  const v = process.env.VDISK_RELIABILITY ?? '';
  return v === 'long' || process.argv.includes('--long') ? 'long' : 'ci';
}

function num(name: string, ci: number, long: number): number {
  const raw = process.env[name];
  if (raw !== undefined && raw !== '') {
    const n = Number(raw);
    if (Number.isFinite(n) && n >= 0) return n;
  }
  return level() === 'long' ? long : ci;
}

export const LEVEL: ReliabilityLevel = level();
export const LONG = LEVEL === 'long';

export const config = {
  /** Random subsets of the writes after the last completed flush, per crash window with more than 10 writes. */
  crashRandomSubsets: num('VDISK_CRASH_RANDOM', 24, 1000),
  /** Torn variants of each write in a window (512-byte and 4096-byte pieces). */
  crashTornPerWrite: num('VDISK_CRASH_TORN', 1, 2),
  /** Crash states checked per workload run at most (0: no limit). */
  crashStatesPerRun: num('VDISK_CRASH_STATES_PER_RUN', 160, 0),
  /** Unique crash states also checked with qemu-img check, per workload run. */
  crashQemuSample: num('VDISK_CRASH_QEMU_SAMPLE', 2, 40),
  /** Seeds each crash workload runs with (different completion orders and random subsets). */
  crashSeeds: num('VDISK_CRASH_SEEDS', 1, 2),
  /** Fault positions tried per fault workload (every host operation up to this many). */
  faultPositions: num('VDISK_FAULT_POSITIONS', 36, 100000),
  /** fast-check runs of the metadata mutation fuzzer, per base image. */
  fuzzRuns: num('VDISK_FUZZ_RUNS', 100, 20000),
  /** SIGKILLs of `vdisk serve` under a client's workload, over all configurations. */
  kills: num('VDISK_KILLS', 200, 4000),
  /** Hostile NBD client cases (fuzzed handshakes and requests), per phase. */
  nbdFuzzRuns: num('VDISK_NBD_FUZZ_RUNS', 150, 20000),
  /** Per-case time bound for hostile images and fuzz cases, in milliseconds. */
  caseTimeMs: num('VDISK_CASE_TIME_MS', 5000, 5000),
  /** Per-case memory bound (growth of heap + external + array buffers), in bytes. */
  caseMemoryBytes: num('VDISK_CASE_MEMORY', 160 * 1024 * 1024, 160 * 1024 * 1024),
  /** Repeat the whole long run until this many minutes have passed (0: once). */
  minutes: num('VDISK_RELIABILITY_MINUTES', 0, 0),
  /** Base seed; runs are reproducible with the same seed. */
  seed: num('VDISK_RELIABILITY_SEED', 20240601, 20240601),
};

/** A small deterministic PRNG (mulberry32), so failures reproduce from the printed seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Where reliability tests leave the images of failures for a human to look at. */
export const FAILURE_DIR = process.env.VDISK_RELIABILITY_FAILURES ?? '/tmp/vdisk-reliability-failures';
