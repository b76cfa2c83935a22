/** A new backing file name and format (or none) in a qcow2 header: rebase's last step. */
import type { BlockDriver } from '../../../block/driver.js';
import type { BackingReference } from '../../format.js';
import { keptExtensions, readHeaderCluster, rewriteHeaderCluster } from './header-rewrite.js';

export async function setQcow2Backing(file: BlockDriver, backing: BackingReference | undefined): Promise<void> {
  const old = await readHeaderCluster(file);
  const ext = { ...keptExtensions(old.extensions), backingFile: backing?.name, backingFormat: backing?.format };
  await rewriteHeaderCluster(file, old, old.header, ext);
}
