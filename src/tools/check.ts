/**
 * `check`: what qemu-img check does (img_check and collect_image_check in qemu-img.c): check an
 * image, repair it when asked and, when the repair fixed anything, check it once more (the
 * report is that second check's, with the first one's fixed counts). Formats without a check
 * hook (raw) have no checks. The exit status follows qemu-img: 0 consistent, 1 the check could
 * not be completed, 2 corruptions, 3 leaks only, 63 no checks for the format. The QEMU JSON and
 * text layouts are the CLI's (src/cli/render/check.ts).
 */
import { VdiskError } from '../block/errors.js';
import { formatDefinition } from '../engine/formats.js';
import { openImageFile } from '../engine/open.js';
import type { CheckCounts, CheckResult, FormatName, RepairMode } from '../format/format.js';
import type { NbdClientOptions } from '../remote/nbd/client-options.js';
import { fileName, optionsObject } from './arguments.js';

/** One check's findings: qemu-img's ImageCheck. */
export interface CheckReport extends CheckCounts {
  filename: string;
  format: FormatName;
}

export interface CheckImageOptions {
  /** The format; default: probed from the image's first bytes, as qemu-img does without -f. */
  format?: FormatName | 'probe';
  /** Repair leaks, or everything (qemu-img check -r leaks|all); the image is opened read-write. */
  repair?: RepairMode;
  /** Read an image another process holds writable (qemu-img's -U; not with repair). */
  forceShare?: boolean;
  /** Settings for the NBD client, for every NBD URI the call opens. */
  nbd?: NbdClientOptions;
  /** Each message of the check, as it is found (qemu-img prints them on stderr). */
  onMessage?: (line: string) => void;
}

export interface CheckOutcome {
  /** The format has no consistency checks (raw): qemu-img exits with 63. */
  unsupported?: boolean;
  /** The findings, absent when the check could not be completed. */
  report?: CheckReport;
  /** What the repair fixed, when it fixed anything (qemu-img then checks again). */
  repaired?: { leaks: number; corruptions: number };
  /** Why the check could not be completed ("Check failed: <failure>"). */
  failure?: string;
}

function reportOf(result: CheckResult, filename: string, format: FormatName): CheckReport {
  return {
    filename,
    format,
    checkErrors: result.checkErrors,
    imageEndOffset: result.imageEndOffset,
    corruptions: result.corruptions,
    leaks: result.leaks,
    corruptionsFixed: result.corruptionsFixed,
    leaksFixed: result.leaksFixed,
    totalClusters: result.totalClusters,
    allocatedClusters: result.allocatedClusters,
    fragmentedClusters: result.fragmentedClusters,
    compressedClusters: result.compressedClusters,
  };
}

/** Checks (and repairs) one image as qemu-img check does. */
export async function checkImage(filename: string, checkOptions?: CheckImageOptions): Promise<CheckOutcome> {
  fileName(filename, 'image file name');
  const options = optionsObject(checkOptions, 'check options');
  if (options.repair !== undefined && options.repair !== 'leaks' && options.repair !== 'all') {
    throw new VdiskError('EINVAL', `Unknown repair mode '${String(options.repair)}' (expecting 'leaks' or 'all')`);
  }
  const { file, format } = await openImageFile(filename, {
    format: options.format,
    readOnly: options.repair === undefined,
    forceShare: options.forceShare,
    nbd: options.nbd,
  });
  try {
    const checkFormat = formatDefinition(format).check;
    if (!checkFormat) return { unsupported: true };
    const run = async (repair: RepairMode | undefined, noOpenWarnings = false): Promise<CheckResult> => {
      try {
        return await checkFormat(file, { repair, onMessage: options.onMessage, noOpenWarnings });
      } catch (err) {
        if (err instanceof VdiskError) {
          throw new VdiskError(err.code, `Could not open '${filename}': ${err.message}`, { cause: err });
        }
        throw err;
      }
    };
    const first = await run(options.repair);
    if (first.failure !== undefined) return { failure: first.failure };
    if (first.corruptionsFixed === 0 && first.leaksFixed === 0) return { report: reportOf(first, filename, format) };
    const repaired = { leaks: first.leaksFixed, corruptions: first.corruptionsFixed };
    const second = await run(undefined, true);
    if (second.failure !== undefined) return { repaired, failure: second.failure };
    second.leaksFixed = first.leaksFixed;
    second.corruptionsFixed = first.corruptionsFixed;
    return { repaired, report: reportOf(second, filename, format) };
  } finally {
    await file.close();
  }
}

/** qemu-img check's exit status for an outcome. */
export function checkExitCode(outcome: CheckOutcome): number {
  if (outcome.unsupported) return 63;
  const report = outcome.report;
  if (outcome.failure !== undefined || !report || report.checkErrors > 0) return 1;
  if (report.corruptions) return 2;
  if (report.leaks) return 3;
  return 0;
}
