/**
 * qcow2's snapshot hooks for the engine's tools: each opens the image read-write over the file
 * (without its backing chain, which a snapshot operation never reads), runs one operation, and
 * closes the image, which writes everything out and closes the file.
 */
import type { BlockDriver } from '../../../block/driver.js';
import type { OpenContext, SnapshotHooks } from '../../format.js';
import type { Qcow2Image } from '../image/image.js';
import { openQcow2 } from '../image/open.js';

async function withImage<T>(
  file: BlockDriver,
  context: OpenContext,
  fn: (image: Qcow2Image) => Promise<T>,
): Promise<T> {
  const image = await openQcow2(file, { ...context, readOnly: false, openBacking: undefined, snapshot: undefined });
  let result: T;
  try {
    result = await fn(image);
  } catch (err) {
    // The operation's error is the one to report, not one from closing.
    await image.close().catch(() => {});
    throw err;
  }
  await image.close();
  return result;
}

export const qcow2SnapshotHooks: SnapshotHooks = {
  create: (file, context, snapshot) => withImage(file, context, (image) => image.snapshots.create(snapshot)),
  apply: (file, context, idOrName) => withImage(file, context, (image) => image.snapshots.apply(idOrName)),
  delete: (file, context, name) => withImage(file, context, (image) => image.snapshots.delete(name)),
};
