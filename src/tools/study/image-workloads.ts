/**
 * The workloads on one opened image, in order, each repeated as the profile says: the figures of
 * a workload are the medians of its repetitions, and every repetition is kept as a sample.
 *
 * Reads and rewrites go over data that is already there, so when their repetitions disagree by
 * more than a quarter (a burst of other work on the machine) they are repeated up to twice more:
 * the median then outvotes the burst, and the range of the middle samples (ties.ts) is what
 * decides ties. First-touch writes cannot be repeated beyond their shares of fresh space.
 *
 * Cold reads start each repetition with the image's pages dropped from the host page cache (the
 * caller's `evict`, after a flush), so they measure the storage; warm reads start with the data
 * read into it once, untimed, so they measure what the cache mode's host caching gives. Warm
 * reads are not scored, so one repetition of each does.
 */
import type { BlockBackend } from '../../block/backend.js';
import { execute, type Measurement, medianMeasurement } from './execute.js';
import type { StudyProfile } from './matrix.js';
import type { WorkloadResult } from './results.js';
import { spreadOf } from './ties.js';
import {
  type ImageState,
  needsSequentialData,
  seededRandom,
  sequentialReadPass,
  studyLayout,
  WHOLE,
  WORKLOADS,
  type WorkloadName,
  workload,
} from './workloads.js';

export interface ImageWorkloadOptions {
  profile: StudyProfile;
  workloads: readonly WorkloadName[];
  /** Bytes the layout covers, from the start of the image. */
  size: number;
  signal?: AbortSignal;
  /**
   * Drops the image's pages from the host page cache; absent where there is none to drop (an NBD
   * export: its server's cache is its own), and cold reads are then as they come.
   */
  evict?: () => Promise<void>;
}

/** Runs the selected workloads; `onWorkload` is called as each finishes all its repetitions. */
export async function runImageWorkloads(
  backend: BlockBackend,
  options: ImageWorkloadOptions,
  onWorkload: (result: WorkloadResult) => void,
): Promise<void> {
  const { profile, signal } = options;
  const layout = studyLayout(Math.min(options.size, backend.length));
  const state: ImageState = { seqWritten: 0 };
  const selected = new Set(options.workloads);
  if (!selected.has('seq-write') && [...selected].some(needsSequentialData)) {
    // The reads and the rewrite need written data: write the sequential region, untimed.
    const fill = workload('seq-write').steps(layout, state, profile, seededRandom(0), WHOLE);
    await execute(backend, fill, { queueDepth: 8, seconds: Number.POSITIVE_INFINITY, finalFlush: true, signal });
    state.seqWritten = layout.seq.length;
  }
  for (const [index, w] of WORKLOADS.entries()) {
    if (!selected.has(w.name)) continue;
    const samples: Measurement[] = [];
    const reusable = w.phase !== 'first-touch';
    const repeats = w.pageCache === 'warm' ? 1 : Math.max(1, profile.repeats);
    if (w.pageCache === 'warm') {
      const warming = sequentialReadPass(layout, state);
      await execute(backend, warming, { queueDepth: 8, seconds: Number.POSITIVE_INFINITY, finalFlush: false, signal });
    }
    for (let part = 0; part < repeats || (reusable && tooNoisy(w.name, samples, repeats)); part++) {
      if (w.pageCache === 'cold' && options.evict) {
        await backend.flush();
        await options.evict();
      }
      // The same seeds for every combination, so that they all get the same requests.
      const random = seededRandom(0x5eed + index * 0x100 + part);
      const steps = w.steps(layout, state, profile, random, { index: part, of: Math.max(repeats, part + 1) });
      const measured = await execute(backend, steps, {
        queueDepth: w.queueDepth,
        // Warm reads run from RAM: half the time measures them as well, and keeps the run short.
        seconds: w.pageCache === 'warm' ? profile.workloadSeconds / 2 : profile.workloadSeconds,
        finalFlush: w.writes,
        signal,
      });
      // seq-write goes on from where it stopped, and every request it issued completed.
      if (w.name === 'seq-write') state.seqWritten += measured.bytes;
      samples.push(measured);
    }
    onWorkload({ name: w.name, queueDepth: w.queueDepth, ...medianMeasurement(samples), samples });
  }
}

/** Repetitions that disagree by more than this fraction of the lowest are repeated (reads and rewrites). */
export const NOISY = 0.25;
export const EXTRA_REPEATS = 2;

/** True when a reusable workload's samples so far call for another repetition. */
export function tooNoisy(name: WorkloadName, samples: readonly Measurement[], repeats: number): boolean {
  if (repeats < 3 || samples.length >= repeats + EXTRA_REPEATS) return false;
  const metric = workload(name).metric;
  const { low, high } = spreadOf(samples.map((s) => (metric === 'IOPS' ? s.iops : s.mibPerSecond)));
  return low <= 0 || high / low - 1 > NOISY;
}

/** The warm-up's profile: each workload once, for a fraction of its time, measured for nothing. */
export function warmUpProfile(profile: StudyProfile): StudyProfile {
  return { ...profile, repeats: 1, workloadSeconds: profile.workloadSeconds / 4 };
}
