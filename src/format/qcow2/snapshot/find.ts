/** Finding a snapshot in the table the way QEMU's commands name one. */
import type { SnapshotRef } from '../../format.js';
import type { Qcow2Snapshot } from '../codec/snapshot-table.js';

/**
 * The index of the first snapshot `ref` names, or -1: with `idOrName`, the first whose id
 * matches, else the first whose name does (qemu-img snapshot -a, convert -l NAME); with `id`
 * and `name`, the first that matches every one given (snapshot.id=…,snapshot.name=…).
 */
export function findSnapshot(snapshots: readonly Qcow2Snapshot[], ref: SnapshotRef): number {
  if (ref.idOrName !== undefined) {
    const byId = snapshots.findIndex((s) => s.id === ref.idOrName);
    return byId >= 0 ? byId : snapshots.findIndex((s) => s.name === ref.idOrName);
  }
  if (ref.id === undefined && ref.name === undefined) return -1;
  return snapshots.findIndex(
    (s) => (ref.id === undefined || s.id === ref.id) && (ref.name === undefined || s.name === ref.name),
  );
}

/** QEMU's id for a new snapshot: one more than the largest id read as a number (strtoul). */
export function nextSnapshotId(snapshots: readonly Qcow2Snapshot[]): string {
  let max = 0;
  for (const s of snapshots) {
    const digits = /^\s*\+?(\d+)/.exec(s.id);
    if (digits) max = Math.max(max, Number(digits[1]));
  }
  return String(max + 1);
}
