/**
 * Loading the internal snapshot table of an open image: enough to protect the snapshots'
 * metadata from overlapping writes and to list them. A hostile count or length costs at most what
 * the file holds (and QEMU's limits: 65536 entries, 64 MiB), and memory for the entries alone.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import type { SnapshotRef } from '../../format.js';
import { MAX_SNAPSHOTS_SIZE } from '../codec/constants.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import type { Qcow2Header } from '../codec/header.js';
import { l2OffsetAt } from '../codec/l1-entry.js';
import {
  decodeSnapshotEntries,
  type Qcow2Snapshot,
  type SnapshotEntries,
  validateSnapshotL1,
} from '../codec/snapshot-table.js';
import { findSnapshot } from '../snapshot/find.js';
import type { MetadataWriter } from './metadata-writer.js';

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

/**
 * Claims the L2 tables the snapshots' L1 tables name, so that a refcount that wrongly calls one
 * free never hands it out (QEMU's default overlap check leaves these out, and loses the
 * snapshot). Each byte of the L1 tables is read once, however many snapshots share or overlap
 * them: the work is bounded by the file's size. Entries that cannot name an L2 table in this
 * file are skipped; they matter only when the snapshot is used.
 */
export async function claimSnapshotL2Tables(
  file: BlockDriver,
  writer: MetadataWriter,
  snapshots: readonly Qcow2Snapshot[],
  g: Qcow2Geometry,
): Promise<void> {
  const fileLength = file.length();
  const piece = Buffer.alloc(PIECE);
  for (const [start, end] of union(snapshots.map((s) => [s.l1TableOffset, s.l1TableOffset + s.l1Size * 8]))) {
    for (let pos = start; pos < end; pos += PIECE) {
      const buf = piece.subarray(0, Math.min(PIECE, end - pos));
      await file.read(pos, buf);
      for (let i = 0; i < buf.length / 8; i++) {
        let l2: number;
        try {
          l2 = l2OffsetAt(buf, i, g);
        } catch {
          continue;
        }
        if (l2 !== 0 && l2 % g.clusterSize === 0 && l2 + g.clusterSize <= fileLength) {
          writer.claim('snapshot-l2', l2, g.clusterSize);
        }
      }
    }
  }
}

/** The union of byte ranges, as sorted disjoint ranges. */
function union(ranges: [number, number][]): [number, number][] {
  const sorted = ranges.filter(([s, e]) => e > s).sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [s, e] of sorted) {
    const last = out[out.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

/**
 * The header as an image opened at a snapshot sees it: the snapshot's L1 table in the place of
 * the active one. The virtual size stays the image's, as QEMU's snapshot loading leaves it.
 */
export function snapshotView(
  snapshots: readonly Qcow2Snapshot[],
  ref: SnapshotRef,
  header: Qcow2Header,
  readOnly: boolean,
): Qcow2Header {
  if (!readOnly) throw new VdiskError('EINVAL', 'An internal snapshot can only be opened read-only');
  const snapshot = snapshots[findSnapshot(snapshots, ref)];
  if (!snapshot) throw new VdiskError('ENOENT', "Failed to load snapshot: Can't find snapshot");
  return { ...header, l1TableOffset: snapshot.l1TableOffset, l1Size: snapshot.l1Size };
}
