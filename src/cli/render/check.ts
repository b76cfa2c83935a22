/** qemu-img check's two layouts: the JSON of --output=json, key for key, and the human text. */
import type { CheckReport } from '../../tools/check.js';
import { formatFixed } from '../../util/printf.js';
import { inQdictOrder, toQemuJson } from './qemu-json.js';

/** qemu-img's ImageCheck, with its JSON key names, in the QAPI schema's order. */
interface ImageCheck {
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

function nonZero(value: number): number | undefined {
  return value !== 0 ? value : undefined;
}

/** collect_image_check: the report, keys absent where qemu-img leaves them out. */
export function qemuImageCheck(report: CheckReport): ImageCheck {
  return inQdictOrder<ImageCheck>({
    filename: report.filename,
    format: report.format,
    'check-errors': report.checkErrors,
    'image-end-offset': nonZero(report.imageEndOffset),
    corruptions: nonZero(report.corruptions),
    leaks: nonZero(report.leaks),
    'corruptions-fixed': nonZero(report.corruptionsFixed),
    'leaks-fixed': nonZero(report.leaksFixed),
    'total-clusters': nonZero(report.totalClusters),
    'allocated-clusters': nonZero(report.allocatedClusters),
    'fragmented-clusters': nonZero(report.fragmentedClusters),
    'compressed-clusters': nonZero(report.compressedClusters),
  });
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
export function formatCheckHuman(report: CheckReport): string {
  const check = qemuImageCheck(report);
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
export function formatCheckJson(report: CheckReport): string {
  return `${toQemuJson(qemuImageCheck(report))}\n`;
}
