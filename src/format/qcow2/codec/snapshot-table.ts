/**
 * The internal snapshot table: nb_snapshots variable-length entries, each 8-byte aligned:
 *
 *   u64 l1_table_offset, u32 l1_size, u16 id_len, u16 name_len, u32 date_sec, u32 date_nsec,
 *   u64 vm_clock_nsec, u32 vm_state_size, u32 extra_data_size, extra data, id, name, padding.
 *
 * Known extra data: u64 vm_state_size (replaces the 32-bit field), u64 virtual disk size
 * (required in v3), u64 icount (-1 = none). Decoding follows QEMU 7.2's qcow2_do_read_snapshots
 * and its limits; encoding follows qcow2_write_snapshots (extra data always at least 24 bytes).
 */

import { VdiskError } from '../../../block/errors.js';
import { readU64, TWO_POW_32, writeU64 } from '../../../util/u64.js';
import {
  L1E_SIZE,
  MAX_L1_SIZE_BYTES,
  MAX_SNAPSHOT_EXTRA_DATA,
  MAX_SNAPSHOTS,
  MAX_SNAPSHOTS_SIZE,
  SNAPSHOT_EXTRA_SIZE,
  SNAPSHOT_HEADER_SIZE,
} from './constants.js';

export interface Qcow2Snapshot {
  l1TableOffset: number;
  l1Size: number;
  id: string;
  name: string;
  dateSec: number;
  dateNsec: number;
  /** Guest clock in nanoseconds (a u64 that outgrows 2^53 after 104 days, hence bigint). */
  vmClockNs: bigint;
  /** Bytes of saved VM state; 0 for a disk-only snapshot. */
  vmStateSize: number;
  /** Virtual disk size at the time of the snapshot. */
  diskSize: number;
  /** Instruction count for record/replay, when recorded. */
  icount?: bigint;
  /** Extra data beyond the 24 bytes vdisk knows, kept as is. */
  unknownExtra: Buffer;
  /** extra_data_size as stored. */
  extraDataSize: number;
}

export interface DecodedSnapshotTable {
  snapshots: Qcow2Snapshot[];
  /** Bytes the table occupies (entries are 8-aligned; the last one is not padded). */
  size: number;
  /** Indexes of v3 entries without the required disk-size extra data (qemu-img check reports them). */
  incomplete: number[];
}

const ICOUNT_NONE = 0xffffffffffffffffn;

function readU64Big(buf: Buffer, off: number): bigint {
  return (BigInt(buf.readUInt32BE(off)) << 32n) | BigInt(buf.readUInt32BE(off + 4));
}

function writeU64Big(buf: Buffer, off: number, value: bigint): void {
  buf.writeUInt32BE(Number((value >> 32n) & 0xffffffffn), off);
  buf.writeUInt32BE(Number(value & 0xffffffffn), off + 4);
}

/**
 * Bytes of the entry starting at `off` (without trailing padding), from its fixed 40-byte part:
 * lets a reader fetch the table entry by entry.
 */
export function snapshotEntryLength(buf: Buffer, off: number): number {
  return SNAPSHOT_HEADER_SIZE + buf.readUInt32BE(off + 36) + buf.readUInt16BE(off + 12) + buf.readUInt16BE(off + 14);
}

/** Entries decoded from a piece of the table. */
export interface SnapshotEntries {
  snapshots: Qcow2Snapshot[];
  /** Indexes (in the whole table) of v3 entries without the required disk-size extra data. */
  incomplete: number[];
  /** Bytes of the piece up to the end of the last entry decoded. */
  used: number;
}

/**
 * Decodes up to `count` entries from the start of `buf`, stopping before the first one `buf`
 * does not hold whole: a reader can take the table in pieces and never hold all of it.
 * `tableOffset` is where `buf` starts in the table (a multiple of 8) and `firstIndex` the index
 * of its first entry, for QEMU's limits and messages. Throws ENOTSUP beyond those limits.
 */
export function decodeSnapshotEntries(
  buf: Buffer,
  count: number,
  opts: { version: number; imageSize: number; tableOffset: number; firstIndex: number },
): SnapshotEntries {
  if (opts.firstIndex + count > MAX_SNAPSHOTS) throw new VdiskError('ENOTSUP', 'Snapshot table too large');
  const snapshots: Qcow2Snapshot[] = [];
  const incomplete: number[] = [];
  let off = 0;
  let used = 0;
  for (let i = 0; i < count; i++) {
    off = Math.ceil(off / 8) * 8;
    if (off + SNAPSHOT_HEADER_SIZE > buf.length) break;
    const index = opts.firstIndex + i;
    const extraDataSize = buf.readUInt32BE(off + 36);
    if (extraDataSize > MAX_SNAPSHOT_EXTRA_DATA) {
      throw new VdiskError('ENOTSUP', `Too much extra metadata in snapshot table entry ${index}`);
    }
    const entryEnd = off + snapshotEntryLength(buf, off);
    if (opts.tableOffset + entryEnd > MAX_SNAPSHOTS_SIZE) throw new VdiskError('ENOTSUP', 'Snapshot table is too big');
    if (entryEnd > buf.length) break;
    snapshots.push(decodeEntry(buf, off, extraDataSize, opts.imageSize));
    if (opts.version >= 3 && extraDataSize < 16) incomplete.push(index);
    off = used = entryEnd;
  }
  return { snapshots, incomplete, used };
}

/**
 * Decodes `count` entries from `buf`, which holds the table from its start (read up to 64 MiB or
 * to the end of the image). `imageSize` stands in for a missing disk size, as in QEMU.
 */
export function decodeSnapshotTable(
  buf: Buffer,
  count: number,
  opts: { version: number; imageSize: number },
): DecodedSnapshotTable {
  const { snapshots, incomplete, used } = decodeSnapshotEntries(buf, count, { ...opts, tableOffset: 0, firstIndex: 0 });
  if (snapshots.length < count) {
    throw new VdiskError('ECORRUPT', `Snapshot table entry ${snapshots.length} extends beyond the end of the image`);
  }
  return { snapshots, size: used, incomplete };
}

/** The unknown extra data of the many entries that have none: one shared empty buffer. */
const NO_EXTRA = Buffer.alloc(0);

function decodeEntry(buf: Buffer, off: number, extraDataSize: number, imageSize: number): Qcow2Snapshot {
  const idLen = buf.readUInt16BE(off + 12);
  const nameLen = buf.readUInt16BE(off + 14);
  const extra = off + SNAPSHOT_HEADER_SIZE;
  const vmStateSize = extraDataSize >= 8 ? readU64(buf, extra, 'Snapshot VM state size') : buf.readUInt32BE(off + 32);
  const diskSize = extraDataSize >= 16 ? readU64(buf, extra + 8, 'Snapshot disk size') : imageSize;
  let icount: bigint | undefined;
  if (extraDataSize >= 24) {
    const value = readU64Big(buf, extra + 16);
    if (value !== ICOUNT_NONE) icount = value;
  }
  const idStart = extra + extraDataSize;
  const snapshot: Qcow2Snapshot = {
    l1TableOffset: readU64(buf, off, 'Snapshot L1 table offset'),
    l1Size: buf.readUInt32BE(off + 8),
    id: cString(buf, idStart, idLen),
    name: cString(buf, idStart + idLen, nameLen),
    dateSec: buf.readUInt32BE(off + 16),
    dateNsec: buf.readUInt32BE(off + 20),
    vmClockNs: readU64Big(buf, off + 24),
    vmStateSize,
    diskSize,
    unknownExtra:
      extraDataSize > SNAPSHOT_EXTRA_SIZE ? Buffer.from(buf.subarray(extra + SNAPSHOT_EXTRA_SIZE, idStart)) : NO_EXTRA,
    extraDataSize,
  };
  if (icount !== undefined) snapshot.icount = icount;
  return snapshot;
}

/** QEMU reads the id and name as C strings: a NUL ends them early. */
function cString(buf: Buffer, start: number, length: number): string {
  const nul = buf.indexOf(0, start);
  return buf.toString('utf8', start, nul === -1 || nul > start + length ? start + length : nul);
}

/**
 * Checks a snapshot's L1 table as QEMU does before using it: at most 32 MiB (ENOTSUP) and aligned
 * to a cluster (ECORRUPT).
 */
export function validateSnapshotL1(s: Qcow2Snapshot, clusterSize: number): void {
  if (s.l1Size > MAX_L1_SIZE_BYTES / L1E_SIZE) throw new VdiskError('ENOTSUP', 'Snapshot L1 table too large');
  if (s.l1TableOffset % clusterSize !== 0) throw new VdiskError('ECORRUPT', 'Snapshot L1 table offset invalid');
}

/** Bytes encodeSnapshotTable produces for these snapshots. */
export function snapshotTableSize(snapshots: readonly Qcow2Snapshot[]): number {
  let off = 0;
  for (const s of snapshots) {
    off = Math.ceil(off / 8) * 8;
    off += SNAPSHOT_HEADER_SIZE + SNAPSHOT_EXTRA_SIZE + s.unknownExtra.length;
    off += Buffer.byteLength(s.id, 'utf8') + Buffer.byteLength(s.name, 'utf8');
  }
  return off;
}

/**
 * Encodes the table as QEMU writes it: every entry with 24 bytes of known extra data (plus any
 * unknown extra data), zero padding between entries, none after the last. Throws ENOTSUP beyond
 * QEMU's limits and EINVAL for ids or names over 65535 bytes.
 */
export function encodeSnapshotTable(snapshots: readonly Qcow2Snapshot[]): Buffer {
  if (snapshots.length > MAX_SNAPSHOTS) throw new VdiskError('ENOTSUP', 'Too many snapshots');
  const size = snapshotTableSize(snapshots);
  if (size > MAX_SNAPSHOTS_SIZE) throw new VdiskError('ENOTSUP', 'Snapshot table is too big');
  const buf = Buffer.alloc(size);
  let off = 0;
  for (const s of snapshots) {
    off = Math.ceil(off / 8) * 8;
    const id = Buffer.from(s.id, 'utf8');
    const name = Buffer.from(s.name, 'utf8');
    if (id.length > 0xffff || name.length > 0xffff) {
      throw new VdiskError('EINVAL', 'Snapshot ids and names are limited to 65535 bytes');
    }
    const extraSize = SNAPSHOT_EXTRA_SIZE + s.unknownExtra.length;
    if (extraSize > MAX_SNAPSHOT_EXTRA_DATA) throw new VdiskError('ENOTSUP', 'Too much snapshot extra data');
    writeU64(buf, off, s.l1TableOffset, 'snapshot L1 table offset');
    buf.writeUInt32BE(s.l1Size, off + 8);
    buf.writeUInt16BE(id.length, off + 12);
    buf.writeUInt16BE(name.length, off + 14);
    buf.writeUInt32BE(s.dateSec, off + 16);
    buf.writeUInt32BE(s.dateNsec, off + 20);
    writeU64Big(buf, off + 24, s.vmClockNs);
    // A VM state over 4 GiB leaves the 32-bit field 0, so older readers see a disk-only snapshot.
    buf.writeUInt32BE(s.vmStateSize < TWO_POW_32 ? s.vmStateSize : 0, off + 32);
    buf.writeUInt32BE(extraSize, off + 36);
    const extra = off + SNAPSHOT_HEADER_SIZE;
    writeU64(buf, extra, s.vmStateSize, 'snapshot VM state size');
    writeU64(buf, extra + 8, s.diskSize, 'snapshot disk size');
    writeU64Big(buf, extra + 16, s.icount ?? ICOUNT_NONE);
    s.unknownExtra.copy(buf, extra + SNAPSHOT_EXTRA_SIZE);
    id.copy(buf, extra + extraSize);
    name.copy(buf, extra + extraSize + id.length);
    off = extra + extraSize + id.length + name.length;
  }
  return buf;
}
