/** Size arguments checked as qemu-img's cvtnum checks them, with its two messages. */
import { VdiskError } from '../block/errors.js';
import { strtosz } from '../tools/size.js';

/** A C int's largest value, qemu-img's limit on block and buffer sizes. */
export const INT_MAX = 2 ** 31 - 1;

/** `text` as a size ("4k", "1.5M", "0x1000") between min and max; `name` as qemu-img calls it. */
export function sizeArgument(name: string, text: string, min: bigint, max: bigint): bigint {
  const parsed = strtosz(text);
  if (!parsed.ok && parsed.error === 'invalid') {
    throw new VdiskError(
      'EINVAL',
      `Invalid ${name} specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.`,
    );
  }
  if (!parsed.ok || parsed.value < min || parsed.value > max) {
    throw new VdiskError('EINVAL', `Invalid ${name} specified. Must be between ${min} and ${max}.`);
  }
  return parsed.value;
}
