/**
 * `snapshot`: internal snapshots, as qemu-img snapshot manages them: list (-l), create (-c),
 * apply (-a, by id or name) and delete (-d, by name). Each change goes through the format's
 * snapshot hooks; a format without them (raw) fails with qemu-img's message. Errors name the
 * operation and the snapshot as qemu-img does ("Could not create snapshot 'x': …").
 */
import type { BlockDriver, SnapshotInfo } from '../block/driver.js';
import { VdiskError } from '../block/errors.js';
import { formatDefinition } from '../engine/formats.js';
import { hookContext, openImageFile, openImageWithFormat } from '../engine/open.js';
import type { FormatName, OpenContext, SnapshotHooks } from '../format/format.js';
import { fileName, optionsObject } from './arguments.js';

export interface SnapshotOptions {
  /** The format; default: probed from the image's first bytes. */
  format?: FormatName | 'probe';
  /** Read an image another process holds (qemu-img's -U): listing only. */
  forceShare?: boolean;
}

/** qemu-img stores at most 255 bytes of a name (its buffer holds 256 with the NUL). */
const MAX_NAME_BYTES = 255;

/** The image's internal snapshots, oldest first (qemu-img snapshot -l). */
export async function listSnapshots(filename: string, options?: SnapshotOptions): Promise<SnapshotInfo[]> {
  fileName(filename, 'image file name');
  const o = optionsObject(options, 'snapshot options');
  const { backend } = await openImageWithFormat(filename, {
    format: o.format ?? 'probe',
    readOnly: true,
    backing: false,
    forceShare: o.forceShare,
  });
  try {
    return backend.describe().snapshots;
  } finally {
    await backend.close();
  }
}

/** Records the image's current content as a snapshot called `name` (qemu-img snapshot -c). */
export function createSnapshot(filename: string, name: string, options?: SnapshotOptions): Promise<SnapshotInfo> {
  const stored = Buffer.from(snapshotName(name), 'utf8');
  // Cut at a character boundary: the stored name stays valid UTF-8.
  let end = Math.min(stored.length, MAX_NAME_BYTES);
  while (end < stored.length && (stored[end]! & 0xc0) === 0x80) end--;
  const micros = Math.round((performance.timeOrigin + performance.now()) * 1000);
  const snapshot = {
    name: stored.toString('utf8', 0, end),
    dateSec: Math.floor(micros / 1e6),
    dateNsec: (micros % 1e6) * 1000,
  };
  return change(filename, options, `Could not create snapshot '${name}'`, (hooks, file, context) => {
    if (!hooks) throw new VdiskError('ENOTSUP', '-95 (Operation not supported)');
    return hooks.create(file, context, snapshot);
  });
}

/** Makes the image's content that of the snapshot with this id or name (qemu-img snapshot -a). */
export function applySnapshot(filename: string, idOrName: string, options?: SnapshotOptions): Promise<void> {
  return change(filename, options, `Could not apply snapshot '${snapshotName(idOrName)}'`, (hooks, file, context) => {
    if (!hooks) throw new VdiskError('ENOTSUP', 'Block driver does not support snapshots');
    return hooks.apply(file, context, idOrName);
  });
}

/** Removes the first snapshot called `name` (qemu-img snapshot -d). */
export function deleteSnapshot(filename: string, name: string, options?: SnapshotOptions): Promise<void> {
  return change(filename, options, `Could not delete snapshot '${snapshotName(name)}'`, (hooks, file, context) => {
    if (!hooks) throw new VdiskError('ENOENT', 'snapshot not found');
    return hooks.delete(file, context, name);
  });
}

function snapshotName(name: unknown): string {
  if (typeof name !== 'string') throw new VdiskError('EINVAL', 'The snapshot name must be a string');
  return name;
}

/** Opens the image's file read-write, runs one hook, closes; the hook's errors get `what` in front. */
async function change<T>(
  filename: string,
  options: SnapshotOptions | undefined,
  what: string,
  run: (hooks: SnapshotHooks | undefined, file: BlockDriver, context: OpenContext) => Promise<T>,
): Promise<T> {
  fileName(filename, 'image file name');
  const o = optionsObject(options, 'snapshot options');
  const { file, format } = await openImageFile(filename, {
    format: o.format ?? 'probe',
    readOnly: false,
    forceShare: o.forceShare,
  });
  try {
    return await run(formatDefinition(format).snapshots, file, hookContext(filename, false));
  } catch (err) {
    if (err instanceof VdiskError) throw new VdiskError(err.code, `${what}: ${err.message}`, { cause: err });
    throw err;
  } finally {
    await file.close();
  }
}
