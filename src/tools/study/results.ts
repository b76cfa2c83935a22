/**
 * What a study produces, as plain data: one result per combination (or per NBD export), each
 * workload's median figures with every sample kept, and the run's circumstances. The JSON report
 * is these objects as they are.
 */
import type { Measurement } from './execute.js';
import type { FilesystemInfo, LoadInfo, MachineInfo } from './machine.js';
import type { Combination, MatrixSelection, Safety, StudyProfile } from './matrix.js';
import type { WorkloadName } from './workloads.js';

/**
 * Whose block layer the workloads measure: vdisk's, QEMU's through qemu-nbd (qemu-engine.ts),
 * or a running NBD server the user named (server-study.ts).
 */
export type StudyEngine = 'vdisk' | 'qemu' | 'nbd';

export interface WorkloadResult extends Measurement {
  name: WorkloadName;
  queueDepth: number;
  /** Each repetition's measurement, of every round; the fields above are their field-by-field medians. */
  samples: Measurement[];
}

export interface SpaceUse {
  /** The file's length. */
  fileBytes: number;
  /** Bytes the file occupies on disk (st_blocks × 512). */
  allocatedBytes: number;
}

export interface CombinationResult extends Combination {
  safety: Safety;
  status: 'ok' | 'unsupported' | 'failed';
  /** Why a combination is unsupported or failed; null when ok. */
  reason: string | null;
  /** Creation (seconds: the median over the rounds) and the new image's size. */
  create: (SpaceUse & { seconds: number; samples: number[] }) | null;
  /** The image's size after the workloads. */
  afterRun: SpaceUse | null;
  workloads: WorkloadResult[];
}

/** The export an `nbd` study measured: its server's own settings, which the study cannot see. */
export interface ServerTarget {
  /** The export as QEMU names it. */
  uri: string;
  /** The export's size; the study writes and reads its first `size` bytes only. */
  exportBytes: number;
  /** What the server advertised: FUA writes, TRIM, WRITE_ZEROES. */
  fua: boolean;
  trim: boolean;
  writeZeroes: boolean;
}

export interface StudyRun {
  engine: StudyEngine;
  startedAt: string;
  finishedAt: string;
  seconds: number;
  profile: StudyProfile;
  /** Bytes each workload layout covers: the image size, or the measured start of an export. */
  size: number;
  selection: MatrixSelection;
  workloads: WorkloadName[];
  machine: MachineInfo;
  /** Where the images were made; null for an NBD export, whose storage is its server's. */
  filesystem: FilesystemInfo | null;
  load: LoadInfo;
  /**
   * True when the image's pages were dropped from the host page cache before each cold read
   * (an image the study made); false for an NBD export, whose server's cache is its own.
   */
  evictedReads: boolean;
  /** The export measured by an `nbd` study; null otherwise. */
  server: ServerTarget | null;
  results: CombinationResult[];
}
