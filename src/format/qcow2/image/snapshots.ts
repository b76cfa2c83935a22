/**
 * Loading the internal snapshot table of an open image: enough to protect the snapshots'
 * metadata from overlapping writes and to list them. A hostile count or length costs at most what
 * the file holds (and QEMU's limits: 65536 entries, 64 MiB), and memory for the entries alone.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import { MAX_SNAPSHOTS_SIZE } from '../codec/constants.js';
import type { Qcow2Header } from '../codec/header.js';
import {
  decodeSnapshotEntries,
  type Qcow2Snapshot,
  type SnapshotEntries,
  validateSnapshotL1,
} from '../codec/snapshot-table.js';

/** Bytes of the table read at a time: more than the longest entry (40 + 1024 + 2 × 65535 bytes). */
const PIECE = 1 << 20;

export async function loadSnapshots(
  file: BlockDriver,
  header: Qcow2Header,
): Promise<{ snapshots: Qcow2Snapshot[]; size: number }> {
  if (header.nbSnapshots === 0) return { snapshots: [], size: 0 };
  const available = Math.min(MAX_SNAPSHOTS_SIZE, file.length() - header.snapshotsOffset);
  if (available <= 0) throw new VdiskError('ECORRUPT', 'The snapshot table lies past the end of the file');
  // The table is read in pieces, each decoded before the next is read into the same buffer: the
  // entries (their ids and names) are what stays in memory, never a copy of the whole table.
  const piece = Buffer.alloc(Math.min(available, PIECE));
  const snapshots: Qcow2Snapshot[] = [];
  let pos = 0;
  let tableSize = 0;
  while (snapshots.length < header.nbSnapshots) {
    const buf = piece.subarray(0, Math.min(piece.length, available - pos));
    const part =
      buf.length > 0 ? await readEntries(file, header, buf, pos, snapshots.length) : { snapshots: [], used: 0 };
    if (part.snapshots.length === 0) {
      throw new VdiskError('ECORRUPT', `Snapshot table entry ${snapshots.length} extends beyond the end of the image`);
    }
    for (const s of part.snapshots) snapshots.push(s);
    tableSize = pos + part.used;
    pos = Math.ceil(tableSize / 8) * 8;
  }
  const clusterSize = 2 ** header.clusterBits;
  for (const s of snapshots) {
    validateSnapshotL1(s, clusterSize);
    if (s.l1TableOffset + s.l1Size * 8 > file.length()) {
      throw new VdiskError('ECORRUPT', `The L1 table of snapshot '${s.name}' lies past the end of the file`);
    }
  }
  return { snapshots, size: tableSize };
}

/** Reads the piece of the table at `pos` into `buf` and decodes the entries it holds whole. */
async function readEntries(
  file: BlockDriver,
  header: Qcow2Header,
  buf: Buffer,
  pos: number,
  firstIndex: number,
): Promise<SnapshotEntries> {
  await file.read(header.snapshotsOffset + pos, buf);
  return decodeSnapshotEntries(buf, header.nbSnapshots - firstIndex, {
    version: header.version,
    imageSize: header.size,
    tableOffset: pos,
    firstIndex,
  });
}
