/** What qemu-img compare prints for a result, and its exit code. */
import type { CompareResult } from '../../tools/compare.js';

/** The lines qemu-img compare prints for a result, and its exit code. */
export function describeCompare(result: CompareResult): { lines: string[]; exitCode: number } {
  const warning = 'sizeMismatch' in result && result.sizeMismatch ? ['Warning: Image size mismatch!'] : [];
  if (result.identical) return { lines: [...warning, 'Images are identical.'], exitCode: 0 };
  switch (result.reason) {
    case 'size':
      return { lines: ['Strict mode: Image size mismatch!'], exitCode: 1 };
    case 'allocation':
      return { lines: [`Strict mode: Offset ${result.offset} block status mismatch!`], exitCode: 1 };
    case 'content':
      return { lines: [...warning, `Content mismatch at offset ${result.offset}!`], exitCode: 1 };
  }
}
