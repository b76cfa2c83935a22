/**
 * Rewriting cluster 0 (a new backing file name or format, another version) so that a power loss
 * leaves either the old header or the new one, never a mix. QEMU writes the whole cluster in
 * one go; a disk may tear that write. vdisk instead keeps every field and extension in the
 * first sector, which a disk writes atomically, and places a backing file name that does not
 * fit there on bytes the old header does not use: the name is written and flushed first, then
 * the first sector switches to it. The feature-name table (only informative) is left out to
 * make room. Only when the extensions themselves outgrow the first sector (many unknown
 * extensions) is the cluster written whole, as QEMU does.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import { MAX_BACKING_FILE_NAME, SECTOR_SIZE } from '../codec/constants.js';
import { decodeHeader, encodedHeaderLength, encodeHeader, type Qcow2Header } from '../codec/header.js';
import {
  decodeHeaderExtensions,
  type ExtensionsToWrite,
  encodeHeaderExtensions,
  type Qcow2Extensions,
} from '../codec/header-extensions.js';
import { readInFile } from '../image/read-in-file.js';

export interface HeaderCluster {
  header: Qcow2Header;
  extensions: Qcow2Extensions;
  /** Cluster 0 as read. */
  bytes: Buffer;
}

export async function readHeaderCluster(file: BlockDriver): Promise<HeaderCluster> {
  const head = Buffer.alloc(4096);
  await readInFile(file, 0, head);
  const first = decodeHeader(head);
  const bytes = Buffer.alloc(2 ** first.clusterBits);
  await readInFile(file, 0, bytes);
  const header = decodeHeader(bytes);
  return { header, extensions: decodeHeaderExtensions(bytes, header), bytes };
}

/** What a header cluster keeps of its extensions when it is written again. */
export function keptExtensions(ext: Qcow2Extensions): ExtensionsToWrite {
  return {
    backingFormat: ext.backingFormat,
    dataFile: ext.dataFile,
    fde: ext.fde,
    bitmaps: ext.inconsistentBitmaps ? undefined : ext.bitmaps,
    unknown: ext.unknown,
    backingFile: ext.backingFile,
  };
}

interface Range {
  start: number;
  end: number;
}

/** The bytes of cluster 0 the old header reads: the fixed part and extensions, and the name. */
function usedBy(old: HeaderCluster): Range[] {
  const h = old.header;
  const extEnd = h.headerLength + extensionAreaLength(old.bytes, h.headerLength, old.bytes.length);
  const ranges = [{ start: 0, end: extEnd }];
  if (h.backingFileOffset !== 0) {
    ranges.push({ start: h.backingFileOffset, end: h.backingFileOffset + h.backingFileSize });
  }
  return ranges;
}

/** Bytes from `from` up to and including the end marker. */
function extensionAreaLength(cluster: Buffer, from: number, end: number): number {
  let off = from;
  while (off + 8 <= end) {
    const type = cluster.readUInt32BE(off);
    const len = cluster.readUInt32BE(off + 4);
    off += 8;
    if (type === 0) break;
    off += Math.ceil(len / 8) * 8;
  }
  return Math.min(off, end) - from;
}

const overlaps = (a: Range, b: Range) => a.start < b.end && b.start < a.end;

/**
 * Writes `header` with `ext` over the header cluster `old` (read from `file` before), durably.
 * The header's backing file offset and size are set here, from where the name lands.
 */
export async function rewriteHeaderCluster(
  file: BlockDriver,
  old: HeaderCluster,
  header: Qcow2Header,
  ext: ExtensionsToWrite,
): Promise<void> {
  const cs = 2 ** header.clusterBits;
  const headerLength = encodedHeaderLength(header);
  const body = encodeHeaderExtensions(
    { ...ext, backingFile: undefined, featureTable: false },
    { version: header.version, clusterSize: cs, headerLength },
  ).bytes;
  const extEnd = headerLength + body.length;
  const name = ext.backingFile === undefined ? undefined : Buffer.from(ext.backingFile, 'utf8');
  if (name && name.length > MAX_BACKING_FILE_NAME) {
    throw new VdiskError('EINVAL', `Backing file name is too long (${name.length} > ${MAX_BACKING_FILE_NAME} bytes)`);
  }
  const length = name?.length ?? 0;
  const used = usedBy(old);
  const beyond = (at: number): Range => ({ start: Math.max(at, SECTOR_SIZE), end: Math.max(at + length, SECTOR_SIZE) });
  const candidates = [extEnd, SECTOR_SIZE, ...used.map((r) => Math.ceil(r.end / 8) * 8)];
  const at = !name
    ? 0
    : candidates.find(
        (c) =>
          c >= extEnd && c + length <= cs && (c + length <= SECTOR_SIZE || !used.some((r) => overlaps(r, beyond(c)))),
      );
  if (extEnd > SECTOR_SIZE || at === undefined) {
    // The extensions alone fill the first sector, or the name finds no room: QEMU's way.
    const all = encodeHeaderExtensions(
      { ...ext, featureTable: false },
      { version: header.version, clusterSize: cs, headerLength },
    );
    const whole = Buffer.alloc(cs);
    encodeHeader({ ...header, backingFileOffset: all.backingFileOffset, backingFileSize: all.backingFileSize }).copy(
      whole,
    );
    all.bytes.copy(whole, headerLength);
    await file.write(0, whole);
    await file.flush();
    return;
  }
  const cluster = Buffer.from(old.bytes);
  const fixed = encodeHeader({ ...header, backingFileOffset: name ? at : 0, backingFileSize: length });
  cluster.fill(0, 0, SECTOR_SIZE);
  fixed.copy(cluster);
  body.copy(cluster, headerLength);
  if (name) name.copy(cluster, at);
  if (name && at + length > SECTOR_SIZE) {
    const start = Math.max(at, SECTOR_SIZE);
    await file.write(start, cluster.subarray(start, at + length));
    await file.flush();
  }
  await file.write(0, cluster.subarray(0, SECTOR_SIZE));
  await file.flush();
}
