/**
 * Which side of a convert failed. Every error out of convert starts with "source: " or
 * "target: ", so a user knows at once whether the image read or the image written is at fault;
 * the error's code stays what it was.
 */
import { fromSystemError, VdiskError } from '../block/errors.js';

export type Side = 'source' | 'target';

export class ConvertSideError extends VdiskError {
  readonly side: Side;

  constructor(side: Side, cause: VdiskError) {
    super(cause.code, `${side}: ${cause.message}`, { cause });
    this.side = side;
  }
}

/** `err` as the failure of one side; `what` says what was being done ("error while reading at byte N"). */
export function sideError(side: Side, err: unknown, what?: string): VdiskError {
  if (err instanceof ConvertSideError) return err;
  const base = err instanceof VdiskError ? err : fromSystemError(err, what ?? 'error');
  const detailed = what && base === err ? new VdiskError(base.code, `${what}: ${base.message}`, { cause: err }) : base;
  return new ConvertSideError(side, detailed);
}

/** Runs `work`, naming `side` in whatever it throws. */
export async function onSide<T>(side: Side, work: () => Promise<T>, what?: string): Promise<T> {
  try {
    return await work();
  } catch (err) {
    throw sideError(side, err, what);
  }
}
