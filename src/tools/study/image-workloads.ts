/**
 * The workloads on one opened image, in order, each repeated as the profile says: the figures of
 * a workload are the medians of its repetitions, and every repetition is kept as a sample.
 */
import type { BlockBackend } from '../../block/backend.js';
import { execute, medianMeasurement } from './execute.js';
import type { StudyProfile } from './matrix.js';
import type { WorkloadResult } from './results.js';
import {
  type ImageState,
  needsSequentialData,
  seededRandom,
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
  const repeats = Math.max(1, profile.repeats);
  for (const [index, w] of WORKLOADS.entries()) {
    if (!selected.has(w.name)) continue;
    const samples = [];
    for (let part = 0; part < repeats; part++) {
      // The same seeds for every combination, so that they all get the same requests.
      const random = seededRandom(0x5eed + index * 0x100 + part);
      const steps = w.steps(layout, state, profile, random, { index: part, of: repeats });
      const measured = await execute(backend, steps, {
        queueDepth: w.queueDepth,
        seconds: profile.workloadSeconds,
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

/** The warm-up's profile: each workload once, for a fraction of its time, measured for nothing. */
export function warmUpProfile(profile: StudyProfile): StudyProfile {
  return { ...profile, repeats: 1, workloadSeconds: profile.workloadSeconds / 4 };
}
