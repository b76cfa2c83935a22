/** The qcow2 format, as the engine sees it: recognise, open, create, check, snapshots. */
import type { FormatDefinition } from '../format.js';
import { qcow2Amender } from './amend/amend.js';
import { setQcow2Backing } from './amend/backing.js';
import { checkQcow2 } from './check/check.js';
import { QCOW2_MAGIC } from './codec/constants.js';
import { qcow2Creator } from './create/create.js';
import { measureQcow2 } from './create/measure.js';
import { openQcow2 } from './image/open.js';
import { qcow2SnapshotHooks } from './snapshot/hooks.js';

export const qcow2Format: FormatDefinition = {
  name: 'qcow2',
  probe: (head) => head.length >= 4 && head.readUInt32BE(0) === QCOW2_MAGIC,
  open: (child, context) => openQcow2(child, context, { l2CacheSize: context.l2CacheSize }),
  create: qcow2Creator,
  check: checkQcow2,
  snapshots: qcow2SnapshotHooks,
  setBacking: setQcow2Backing,
  amend: qcow2Amender,
  measure: measureQcow2,
  persistentBitmaps: true,
};
