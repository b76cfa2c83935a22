/**
 * The snapshot parameter of convert -l and serve -l, as qemu-img and qemu-nbd read it: either
 * 'snapshot.id=ID,snapshot.name=NAME' (either part may be left out; all given must match) or a
 * bare id or name ('ID_OR_NAME', an id first).
 */
import { VdiskError } from '../block/errors.js';
import type { SnapshotRef } from '../format/format.js';

const PREFIX = 'snapshot.';

export function parseSnapshotParam(text: string): SnapshotRef {
  if (!text.startsWith(PREFIX)) return { idOrName: text };
  const ref: SnapshotRef = {};
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? '' : part.slice(eq + 1);
    if (key === 'snapshot.id') ref.id = value;
    else if (key === 'snapshot.name') ref.name = value;
    else throw new VdiskError('EINVAL', `Failed in parsing snapshot param '${text}': Invalid parameter '${key}'`);
  }
  return ref;
}
