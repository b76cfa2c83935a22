/**
 * convert --bitmaps: the source's persistent bitmaps are copied into the target after the data
 * (so the copy itself dirties nothing), each with its name, granularity and enabled state, as
 * qemu-img convert --bitmaps does. The source is checked before the target is made: an
 * inconsistent bitmap fails the convert unless --skip-broken-bitmaps leaves it out.
 */
import type { BlockBackend } from '../block/backend.js';
import type { BitmapInfo } from '../block/driver.js';
import { VdiskError } from '../block/errors.js';
import { sideError } from './convert-side.js';

/** The source's bitmaps to copy; throws (naming the source) when it cannot give them. */
export function bitmapsToCopy(
  source: BlockBackend,
  skipBroken: boolean,
  warn: (message: string) => void,
): BitmapInfo[] {
  const bitmaps = source.persistentBitmaps();
  if (!bitmaps?.canStore) throw sideError('source', new VdiskError('ENOTSUP', 'Source lacks bitmap support'));
  const all = bitmaps.list();
  // QEMU names the broken bitmaps last to first.
  const broken = all.filter((b) => b.flags.includes('in-use')).reverse();
  if (broken.length > 0 && !skipBroken) {
    throw sideError(
      'source',
      new VdiskError(
        'EINVAL',
        `Cannot copy inconsistent bitmap '${broken[0]!.name}'; try --skip-broken-bitmaps, ` +
          "or remove it with 'vdisk bitmap --remove'",
      ),
    );
  }
  for (const b of broken) warn(`Skipping inconsistent bitmap '${b.name}'`);
  return all.filter((b) => !b.flags.includes('in-use'));
}

/** Refuses a target that cannot hold bitmaps, before anything is copied. */
export function checkBitmapTarget(target: BlockBackend, format: string): void {
  if (!target.persistentBitmaps()?.canStore) {
    throw sideError('target', new VdiskError('ENOTSUP', `Format driver '${format}' does not support bitmaps`));
  }
}

/** Adds each bitmap to the target and sets the bits the source's has. */
export async function copyBitmaps(source: BlockBackend, target: BlockBackend, list: BitmapInfo[]): Promise<void> {
  const from = source.persistentBitmaps()!;
  const to = target.persistentBitmaps()!;
  for (const b of list) {
    try {
      const bits = from.get(b.name);
      await to.add(b.name, b.granularity, bits.enabled);
      await to.merge(b.name, bits);
    } catch (err) {
      throw sideError('target', err, `could not copy bitmap '${b.name}'`);
    }
  }
}
