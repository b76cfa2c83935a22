/**
 * Runs the study: for every combination of the matrix, a fresh image in a private temporary
 * directory (creation timed), opened with the combination's cache mode, the workloads in order
 * through its BlockBackend, then the image's size on disk, and the image removed. A combination
 * the filesystem or the engine cannot do (ENOTSUP: O_DIRECT on a filesystem without it,
 * fallocate where there is none) is recorded as unsupported with the reason; any other failure
 * as failed with its message. Nothing is dropped.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { BlockBackend } from '../../block/backend.js';
import { fromSystemError, isVdiskError, VdiskError } from '../../block/errors.js';
import { type OpenImageOptions, openImage } from '../../engine/open.js';
import { evictFromPageCache } from '../../io/page-cache.js';
import { createImage } from '../create.js';
import { formatSize } from '../size.js';
import { median, medianMeasurement } from './execute.js';
import { runImageWorkloads, warmUpProfile } from './image-workloads.js';
import { filesystemInfo, machineInfo } from './machine.js';
import { type Combination, type MatrixSelection, type StudyProfile, safetyOf, studyMatrix } from './matrix.js';
import { openThroughQemuNbd, type ServedImage } from './qemu-engine.js';
import type { CombinationResult, SpaceUse, StudyEngine, StudyRun, WorkloadResult } from './results.js';
import { WORKLOADS, type WorkloadName } from './workloads.js';

export type { CombinationResult, SpaceUse, StudyEngine, StudyRun, WorkloadResult } from './results.js';

export interface StudyOptions {
  profile: StudyProfile;
  /** Default vdisk. */
  engine?: Exclude<StudyEngine, 'nbd'>;
  /** Image size in bytes; default the profile's. */
  size?: number;
  selection: MatrixSelection;
  workloads: readonly WorkloadName[];
  /** Where the private temporary directory is made; default the current directory. */
  dir?: string;
  onProgress?: (progress: StudyProgress) => void;
  signal?: AbortSignal;
  /** Test seam: how images are opened. */
  openImage?: (filename: string, options: OpenImageOptions) => Promise<BlockBackend>;
}

export interface StudyProgress {
  /** Steps finished (a step: one image's creation, or one workload), of `total`. */
  done: number;
  total: number;
  combination: Combination;
  step: 'create' | WorkloadName;
}

async function spaceUse(file: string): Promise<SpaceUse> {
  const st = await stat(file);
  return { fileBytes: st.size, allocatedBytes: st.blocks * 512 };
}

/** The message of a failure, without the private directory's path. */
function reasonOf(err: unknown, workdir: string): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split(`${workdir}${path.sep}`).join('');
}

async function runCombination(
  combination: Combination,
  options: StudyOptions & { size: number; workdir: string },
  progress: (step: StudyProgress['step']) => void,
): Promise<CombinationResult> {
  const result: CombinationResult = {
    ...combination,
    safety: safetyOf(combination.cache),
    status: 'ok',
    reason: null,
    create: null,
    afterRun: null,
    workloads: [],
  };
  const file = path.join(options.workdir, `${combination.format}-${combination.prealloc}-${combination.cache}.img`);
  const fail = (err: unknown) => {
    if (options.signal?.aborted) throw options.signal.reason;
    result.status = isVdiskError(err) && err.code === 'ENOTSUP' ? 'unsupported' : 'failed';
    result.reason = reasonOf(err, options.workdir);
    return result;
  };
  try {
    const t = performance.now();
    try {
      await createImage({
        filename: file,
        format: combination.format,
        size: options.size,
        options: { preallocation: combination.prealloc },
      });
    } catch (err) {
      return fail(err);
    }
    const seconds = (performance.now() - t) / 1000;
    result.create = { seconds, samples: [seconds], ...(await spaceUse(file)) };
    progress('create');

    let opened: ServedImage;
    try {
      opened = await openFor(file, combination, options);
    } catch (err) {
      return fail(err);
    }
    try {
      // Cold reads: the image's pages leave the host page cache (vdisk's or qemu-nbd's, the same file's).
      const evict = () => evictFromPageCache(file);
      await runImageWorkloads(opened.backend, { ...options, evict }, (w) => {
        result.workloads.push(w);
        progress(w.name);
      });
    } catch (err) {
      fail(err);
    } finally {
      await opened.release().catch((err: unknown) => {
        if (result.status === 'ok') fail(err);
      });
    }
    result.afterRun = await spaceUse(file);
    return result;
  } finally {
    await rm(file, { force: true });
  }
}

/** The combination's image opened by the engine measured. */
async function openFor(
  file: string,
  combination: Combination,
  options: StudyOptions & { workdir: string },
): Promise<ServedImage> {
  if (options.engine === 'qemu')
    return openThroughQemuNbd(file, combination.format, combination.cache, options.workdir);
  const backend = await (options.openImage ?? openImage)(file, {
    format: combination.format,
    cache: combination.cache,
  });
  return { backend, release: () => backend.close() };
}

/** One combination's rounds as one result: medians, every sample kept, the worst status. */
export function mergeRounds(rounds: readonly CombinationResult[]): CombinationResult {
  const first = rounds[0]!;
  if (rounds.length === 1) return first;
  const bad = rounds.find((r) => r.status === 'unsupported') ?? rounds.find((r) => r.status === 'failed');
  const creates = rounds.map((r) => r.create).filter((c) => c !== null);
  const workloads: WorkloadResult[] = [];
  for (const w of WORKLOADS) {
    const measured = rounds.flatMap((r) => r.workloads.filter((x) => x.name === w.name));
    if (measured.length === 0) continue;
    const samples = measured.flatMap((x) => x.samples);
    workloads.push({ name: w.name, queueDepth: w.queueDepth, ...medianMeasurement(samples), samples });
  }
  const createSamples = creates.flatMap((c) => c.samples);
  return {
    ...first,
    status: bad?.status ?? 'ok',
    reason: bad?.reason ?? null,
    create: creates.length > 0 ? { ...creates[0]!, seconds: median(createSamples), samples: createSamples } : null,
    afterRun: rounds.find((r) => r.afterRun !== null)?.afterRun ?? null,
    workloads,
  };
}

/** Runs the whole matrix and returns every measurement. */
export async function runStudy(options: StudyOptions): Promise<StudyRun> {
  const started = new Date();
  const loadAtStart = os.loadavg();
  const t0 = performance.now();
  const size = options.size ?? options.profile.size;
  const combinations = studyMatrix(options.selection);
  const workloads = WORKLOADS.map((w) => w.name).filter((name) => options.workloads.includes(name));
  if (workloads.length === 0) throw new VdiskError('EINVAL', 'No workload to run');
  const parent = path.resolve(options.dir ?? '.');
  let workdir: string;
  try {
    workdir = await mkdtemp(path.join(parent, '.vdisk-study-'));
  } catch (err) {
    throw fromSystemError(err, `Could not create a temporary directory in '${parent}'`);
  }
  try {
    const filesystem = await filesystemInfo(workdir);
    // One image exists at a time; a fully preallocated one needs all of its size.
    if (filesystem.freeBytes !== null && filesystem.freeBytes < size + 64 * 1024 * 1024) {
      throw new VdiskError(
        'ENOSPC',
        `The study needs ${formatSize(size)} free in '${parent}' (a fully preallocated image); ${formatSize(filesystem.freeBytes)} is free`,
      );
    }
    const rounds = Math.max(1, options.profile.rounds);
    const perCombination = workloads.length + 1;
    const total = rounds * combinations.length * perCombination;
    let done = 0;
    const byId = new Map<string, CombinationResult[]>(combinations.map((c) => [c.id, []]));
    // Untimed: the first combination measured would otherwise also pay for compiling the hot paths.
    await runCombination(
      combinations[0]!,
      { ...options, profile: warmUpProfile(options.profile), size, workdir, workloads },
      () => {},
    );
    for (let round = 0; round < rounds; round++) {
      // Odd rounds run backwards, so slow drift of the machine does not favour one end of the matrix.
      const order = round % 2 === 0 ? combinations : [...combinations].reverse();
      for (const combination of order) {
        if (options.signal?.aborted) throw options.signal.reason;
        const before = done;
        const result = await runCombination(combination, { ...options, size, workdir, workloads }, (step) => {
          done++;
          options.onProgress?.({ done, total, combination, step });
        });
        byId.get(combination.id)!.push(result);
        // A combination that stopped early still moves the bar to its end.
        if (done < before + perCombination) {
          done = before + perCombination;
          options.onProgress?.({ done, total, combination, step: workloads[workloads.length - 1]! });
        }
      }
    }
    const results = combinations.map((c) => mergeRounds(byId.get(c.id)!));
    return {
      engine: options.engine ?? 'vdisk',
      startedAt: started.toISOString(),
      finishedAt: new Date().toISOString(),
      seconds: (performance.now() - t0) / 1000,
      profile: options.profile,
      size,
      selection: options.selection,
      workloads,
      machine: machineInfo(),
      filesystem,
      load: { start: loadAtStart, end: os.loadavg() },
      evictedReads: true,
      server: null,
      results,
    };
  } finally {
    await rm(workdir, { recursive: true, force: true });
  }
}
