/**
 * `check`: what qemu-img check does (img_check and collect_image_check in qemu-img.c): check an
 * image, repair it when asked and, when the repair fixed anything, check it once more (the
 * report is that second check's, with the first one's fixed counts). The result is the same
 * object qemu-img check --output=json prints; the exit status follows qemu-img: 0 consistent,
 * 1 the check could not be completed, 2 corruptions, 3 leaks only, 63 no checks for the format.
 */
import { cacheMode } from '../block/cache-mode.js';
import { VdiskError } from '../block/errors.js';
import { formatDefinition, probeFormat } from '../engine/formats.js';
import type { FormatName } from '../format/format.js';
import { type CheckResult, checkQcow2, type RepairMode } from '../format/qcow2/check.js';
import { FileDriver } from '../io/file.js';
import { formatFixed } from './printf.js';
import { inQdictOrder, toQemuJson } from './qemu-json.js';

/** qemu-img's ImageCheck, with its JSON key names, in the QAPI schema's order. */
export interface ImageCheck {
  filename: string;
  format: string;
  'check-errors': number;
  'image-end-offset'?: number;
  corruptions?: number;
  leaks?: number;
  'corruptions-fixed'?: number;
  'leaks-fixed'?: number;
  'total-clusters'?: number;
  'allocated-clusters'?: number;
  'fragmented-clusters'?: number;
  'compressed-clusters'?: number;
}

export interface CheckImageOptions {
  /** The format; default: probed from the image's first bytes, as qemu-img does without -f. */
  format?: FormatName | 'probe';
  /** Repair leaks, or everything (qemu-img check -r leaks|all); the image is opened read-write. */
  repair?: RepairMode;
  /** Read an image another process holds writable (qemu-img's -U; not with repair). */
  forceShare?: boolean;
  /** Each message of the check, as it is found (qemu-img prints them on stderr). */
  onMessage?: (line: string) => void;
}

export interface CheckOutcome {
  /** The format has no consistency checks (raw): qemu-img exits with 63. */
  unsupported?: boolean;
  /** The report, absent when the check could not be completed. */
  check?: ImageCheck;
  /** What the repair fixed, when it fixed anything (qemu-img then checks again). */
  repaired?: { leaks: number; corruptions: number };
  /** Why the check could not be completed ("Check failed: <failure>"). */
  failure?: string;
}

function nonZero(value: number): number | undefined {
  return value !== 0 ? value : undefined;
}

/** collect_image_check: the report of one check, keys absent where qemu-img leaves them out. */
export function imageCheckOf(result: CheckResult, filename: string, format: string): ImageCheck {
  return inQdictOrder<ImageCheck>({
    filename,
    format,
    'check-errors': result.checkErrors,
    'image-end-offset': nonZero(result.imageEndOffset),
    corruptions: nonZero(result.corruptions),
    leaks: nonZero(result.leaks),
    'corruptions-fixed': nonZero(result.corruptionsFixed),
    'leaks-fixed': nonZero(result.leaksFixed),
    'total-clusters': nonZero(result.totalClusters),
    'allocated-clusters': nonZero(result.allocatedClusters),
    'fragmented-clusters': nonZero(result.fragmentedClusters),
    'compressed-clusters': nonZero(result.compressedClusters),
  });
}

/** Checks (and repairs) one image as qemu-img check does. */
export async function checkImage(filename: string, options: CheckImageOptions = {}): Promise<CheckOutcome> {
  const wanted = options.format ?? 'probe';
  if (wanted !== 'probe') formatDefinition(wanted); // an unknown format fails before the file is opened
  const file = await FileDriver.open({
    filename,
    cache: cacheMode('writeback'),
    readOnly: options.repair === undefined,
    lock: !options.forceShare,
  });
  try {
    let format: FormatName;
    if (wanted === 'probe') {
      const head = Buffer.alloc(Math.min(512, file.length()));
      if (head.length > 0) await file.read(0, head);
      format = probeFormat(head);
    } else {
      format = formatDefinition(wanted).name;
    }
    if (format !== 'qcow2') return { unsupported: true };
    const run = async (repair: RepairMode | undefined, noOpenWarnings = false): Promise<CheckResult> => {
      try {
        return await checkQcow2(file, { repair, onMessage: options.onMessage, noOpenWarnings });
      } catch (err) {
        if (err instanceof VdiskError) {
          throw new VdiskError(err.code, `Could not open '${filename}': ${err.message}`, { cause: err });
        }
        throw err;
      }
    };
    const first = await run(options.repair);
    if (first.failure !== undefined) return { failure: first.failure };
    if (first.corruptionsFixed === 0 && first.leaksFixed === 0) return { check: imageCheckOf(first, filename, format) };
    const repaired = { leaks: first.leaksFixed, corruptions: first.corruptionsFixed };
    const second = await run(undefined, true);
    if (second.failure !== undefined) return { repaired, failure: second.failure };
    second.leaksFixed = first.leaksFixed;
    second.corruptionsFixed = first.corruptionsFixed;
    return { repaired, check: imageCheckOf(second, filename, format) };
  } finally {
    await file.close();
  }
}

/** qemu-img check's exit status for an outcome. */
export function checkExitCode(outcome: CheckOutcome): number {
  if (outcome.unsupported) return 63;
  const check = outcome.check;
  if (outcome.failure !== undefined || !check || check['check-errors'] > 0) return 1;
  if (check.corruptions) return 2;
  if (check.leaks) return 3;
  return 0;
}

/** What qemu-img prints after a repair that fixed something, before the second check. */
export function formatRepairedHuman(repaired: { leaks: number; corruptions: number }): string {
  return (
    'The following inconsistencies were found and repaired:\n\n' +
    `    ${repaired.leaks} leaked clusters\n` +
    `    ${repaired.corruptions} corruptions\n\n` +
    'Double checking the fixed image now...\n'
  );
}

/** dump_human_image_check. */
export function formatCheckHuman(check: ImageCheck): string {
  const corruptions = check.corruptions ?? 0;
  const leaks = check.leaks ?? 0;
  const errors = check['check-errors'];
  let text = '';
  if (corruptions === 0 && leaks === 0 && errors === 0) {
    text += 'No errors were found on the image.\n';
  } else {
    if (corruptions) {
      text +=
        `\n${corruptions} errors were found on the image.\n` +
        'Data may be corrupted, or further writes to the image may corrupt it.\n';
    }
    if (leaks) {
      text +=
        `\n${leaks} leaked clusters were found on the image.\n` +
        'This means waste of disk space, but no harm to data.\n';
    }
    if (errors) text += `\n${errors} internal errors have occurred during the check.\n`;
  }
  const total = check['total-clusters'] ?? 0;
  const allocated = check['allocated-clusters'] ?? 0;
  if (total !== 0 && allocated !== 0) {
    const fragmented = check['fragmented-clusters'] ?? 0;
    const compressed = check['compressed-clusters'] ?? 0;
    text +=
      `${allocated}/${total} = ${formatFixed((allocated * 100) / total, 2)}% allocated, ` +
      `${formatFixed((fragmented * 100) / allocated, 2)}% fragmented, ` +
      `${formatFixed((compressed * 100) / allocated, 2)}% compressed clusters\n`;
  }
  if (check['image-end-offset']) text += `Image end offset: ${check['image-end-offset']}\n`;
  return text;
}

/** qemu-img check --output=json, byte for byte (with the final newline). */
export function formatCheckJson(check: ImageCheck): string {
  return `${toQemuJson(check)}\n`;
}
