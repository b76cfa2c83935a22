/**
 * `vdisk study --nbd URI`: the same workloads against a running NBD server, whatever it is
 * (qemu-nbd, nbdkit, vdisk serve, a storage system's own), with the server's own settings: one
 * cell, nothing created or removed. The export is opened as raw data through vdisk's client,
 * which keeps no cache and passes every guest flush on, so what is measured is the server and
 * the storage and network behind it.
 *
 * The workloads write over the first `size` bytes of the export, so the study refuses to start
 * unless the caller confirmed that the export holds nothing to keep, and refuses read-only and
 * too small exports before writing a byte.
 */
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import type { BlockBackend } from '../../block/backend.js';
import { isVdiskError, VdiskError } from '../../block/errors.js';
import { openImage } from '../../engine/open.js';
import { isNbdUri } from '../../remote/nbd/uri.js';
import { formatSize } from '../size.js';
import { runImageWorkloads, warmUpProfile } from './image-workloads.js';
import { machineInfo } from './machine.js';
import { type Combination, type StudyProfile, safetyOf } from './matrix.js';
import type { CombinationResult, ServerTarget, StudyRun } from './results.js';
import type { StudyProgress } from './runner.js';
import { WORKLOADS, type WorkloadName } from './workloads.js';

export interface ServerStudyOptions {
  uri: string;
  profile: StudyProfile;
  /** Bytes measured from the start of the export; default the profile's image size. */
  size?: number;
  workloads: readonly WorkloadName[];
  /** The caller confirmed that the export's first `size` bytes may be overwritten. */
  scratch: boolean;
  onProgress?: (progress: StudyProgress) => void;
  signal?: AbortSignal;
}

/**
 * The one cell: raw data, opened with cache=writeback on the client's side (flushes are passed
 * on, no write waits for one); everything else is the server's.
 */
export const SERVER_CELL: Combination = { format: 'raw', prealloc: 'off', cache: 'writeback', id: 'nbd-export' };

const MiB = 1024 * 1024;

/** Opens the export for writing, or says in one line why the study cannot use it. */
async function openExport(uri: string, size: number, profile: StudyProfile): Promise<BlockBackend> {
  let backend: BlockBackend;
  try {
    backend = await openImage(uri, { format: 'raw', cache: 'writeback' });
  } catch (err) {
    if (isVdiskError(err) && err.code === 'EROFS') {
      throw new VdiskError(
        'EROFS',
        `The export '${uri}' is read-only: the study writes, so it needs a writable export`,
      );
    }
    throw err;
  }
  if (backend.length < size) {
    await backend.close();
    const fits = Math.floor(backend.length / MiB);
    throw new VdiskError(
      'EINVAL',
      `The export '${uri}' is ${formatSize(backend.length)}; the ${profile.name} study measures its first ` +
        `${formatSize(size)}: ${fits >= 1 ? `give --size ${fits}M or less, or a larger export` : 'the study needs at least 1 MiB'}`,
    );
  }
  return backend;
}

/** Refuses, before connecting, a name that is not a URI and a study the caller did not confirm. */
export function checkServerStudy(uri: string, size: number, scratch: boolean): void {
  if (!isNbdUri(uri)) throw new VdiskError('EINVAL', `Not an NBD URI: '${uri}' (nbd://, nbd+unix://, nbds://)`);
  if (!scratch) {
    throw new VdiskError(
      'EINVAL',
      `The study writes over the first ${formatSize(size)} of '${uri}', destroying what is there; ` +
        'if the export holds nothing to keep, confirm with --nbd-scratch',
    );
  }
}

export async function runServerStudy(options: ServerStudyOptions): Promise<StudyRun> {
  const { uri, profile } = options;
  const size = options.size ?? profile.size;
  checkServerStudy(uri, size, options.scratch);
  const workloads = WORKLOADS.map((w) => w.name).filter((name) => options.workloads.includes(name));
  if (workloads.length === 0) throw new VdiskError('EINVAL', 'No workload to run');
  const started = new Date();
  const loadAtStart = os.loadavg();
  const t0 = performance.now();
  const backend = await openExport(uri, size, profile);
  const description = backend.describe();
  const server: ServerTarget = {
    uri: description.filename ?? uri,
    exportBytes: backend.length,
    fua: description.capabilities.fua,
    trim: description.capabilities.discard,
    writeZeroes: description.capabilities.writeZeroes,
  };
  const result: CombinationResult = {
    ...SERVER_CELL,
    safety: safetyOf(SERVER_CELL.cache),
    status: 'ok',
    reason: null,
    create: null,
    afterRun: null,
    workloads: [],
  };
  const common = { size, signal: options.signal, workloads };
  let done = 0;
  try {
    await runImageWorkloads(backend, { ...common, profile: warmUpProfile(profile) }, () => {});
    await runImageWorkloads(backend, { ...common, profile }, (w) => {
      result.workloads.push(w);
      options.onProgress?.({ done: ++done, total: workloads.length, combination: SERVER_CELL, step: w.name });
    });
  } catch (err) {
    if (options.signal?.aborted) throw options.signal.reason;
    result.status = 'failed';
    result.reason = err instanceof Error ? err.message : String(err);
  } finally {
    await backend.close().catch((err: unknown) => {
      if (result.status === 'ok') {
        result.status = 'failed';
        result.reason = err instanceof Error ? err.message : String(err);
      }
    });
  }
  return {
    engine: 'nbd',
    evictedReads: false,
    startedAt: started.toISOString(),
    finishedAt: new Date().toISOString(),
    seconds: (performance.now() - t0) / 1000,
    profile,
    size,
    selection: { formats: [SERVER_CELL.format], preallocs: [SERVER_CELL.prealloc], caches: [SERVER_CELL.cache] },
    workloads,
    machine: machineInfo(),
    filesystem: null,
    load: { start: loadAtStart, end: os.loadavg() },
    server,
    results: [result],
  };
}
