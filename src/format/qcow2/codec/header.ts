/**
 * The fixed QCOW2 header: decoded into a typed object with every field validated the way QEMU
 * 7.2's qcow2_do_open validates it (one clear message per failure), and encoded back exactly as
 * QEMU writes it: 72 bytes for version 2, 112 for version 3 (the fields, the compression-type
 * byte and 7 zero bytes), plus any header fields vdisk does not know, preserved.
 *
 * Codes: EINVAL for a file that is not qcow2 at all, ENOTSUP for valid images using features or
 * sizes beyond what vdisk (and QEMU) support, ECORRUPT for inconsistent or hostile values,
 * EOVERFLOW for values of 2^53 or more.
 */

import { VdiskError } from '../../../block/errors.js';
import { readU64, readU64Approx, TWO_POW_32, writeU64 } from '../../../util/u64.js';
import {
  COMPRESSION_TYPE_OFFSET,
  COMPRESSION_ZLIB,
  COMPRESSION_ZSTD,
  CRYPT_AES,
  CRYPT_LUKS,
  CRYPT_NONE,
  HEADER,
  INCOMPAT_COMPRESSION,
  INCOMPAT_EXTL2,
  INCOMPAT_MASK,
  INT_MAX,
  INT64_MAX_APPROX,
  L1E_SIZE,
  MAX_BACKING_FILE_NAME,
  MAX_CLUSTER_BITS,
  MAX_L1_SIZE_BYTES,
  MAX_REFCOUNT_ORDER,
  MAX_REFTABLE_SIZE_BYTES,
  MAX_SNAPSHOTS,
  MIN_CLUSTER_BITS,
  MIN_CLUSTER_BITS_EXTL2,
  QCOW2_MAGIC,
  SNAPSHOT_HEADER_SIZE,
  V2_HEADER_LENGTH,
  V3_HEADER_LENGTH,
  V3_MIN_HEADER_LENGTH,
} from './constants.js';
import {
  type ExtensionsToWrite,
  encodeHeaderExtensions,
  scanFeatureTable,
  unsupportedFeaturesMessage,
} from './header-extensions.js';

export interface Qcow2Header {
  version: 2 | 3;
  /** Offset of the backing file name in cluster 0; 0 without a backing file. */
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  /** Virtual disk size in bytes. */
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  /**
   * Feature bitmasks. Bits 0-52 are exact; unknown incompatible bits of any position are refused
   * at decode, and unknown compatible/autoclear bits 53-63 (which nothing defines) are dropped.
   */
  incompatibleFeatures: number;
  compatibleFeatures: number;
  autoclearFeatures: number;
  refcountOrder: number;
  /** 72 for version 2; at least 104 and a multiple of 8 for version 3. */
  headerLength: number;
  compressionType: number;
  /** Header bytes after the fields vdisk knows (offset 112 to header_length), kept on rewrite. */
  unknownFields: Buffer;
}

export interface DecodeHeaderOptions {
  /**
   * Relax what QEMU relaxes for `qemu-img check` (BDRV_O_CHECK): a missing refcount table and a
   * bad snapshot table offset or count are left to the checker.
   */
  check?: boolean;
}

function corrupt(message: string): VdiskError {
  return new VdiskError('ECORRUPT', message);
}

function unsupported(message: string): VdiskError {
  return new VdiskError('ENOTSUP', message);
}

/** Bits 0-52 of a 64-bit feature mask, and the positions of any set bits 53-63. */
function featureMask(buf: Buffer, off: number): { value: number; highBits: number[] } {
  const high = buf.readUInt32BE(off);
  const low = buf.readUInt32BE(off + 4);
  const highBits: number[] = [];
  for (let bit = 21; bit < 32; bit++) if ((high >>> bit) & 1) highBits.push(32 + bit);
  return { value: (high & 0x1fffff) * TWO_POW_32 + low, highBits };
}

/** Set bit positions of a mask held in a number (bits 0-52). */
function bitsSet(value: number): number[] {
  const bits: number[] = [];
  const low = value % TWO_POW_32;
  const high = (value - low) / TWO_POW_32;
  for (let bit = 0; bit < 32; bit++) if ((low >>> bit) & 1) bits.push(bit);
  for (let bit = 0; bit < 21; bit++) if ((high >>> bit) & 1) bits.push(32 + bit);
  return bits;
}

/**
 * QEMU's validate_table: at most `maxBytes` of `entrySize`-byte entries, cluster-aligned, ending
 * below INT64_MAX. Returns the exact offset.
 */
function validateTable(
  buf: Buffer,
  offsetField: number,
  entries: number,
  entrySize: number,
  maxBytes: number,
  clusterSize: number,
  name: string,
): number {
  if (entries > Math.floor(maxBytes / entrySize)) throw unsupported(`${name} too large`);
  const approx = readU64Approx(buf, offsetField);
  if (INT64_MAX_APPROX - entries * entrySize <= approx) throw corrupt(`${name} offset invalid`);
  const offset = readU64(buf, offsetField, `${name} offset`);
  if (offset % clusterSize !== 0) throw corrupt(`${name} offset invalid`);
  return offset;
}

/**
 * The cluster bits of a qcow2 header, from its first 24 bytes: lets a reader learn how much of
 * cluster 0 to read before decoding the header (header_length may be up to a cluster).
 * Throws like decodeHeader for a file that is not qcow2 or a cluster size out of range.
 */
export function peekClusterBits(buf: Buffer): number {
  if (buf.length < 24 || buf.readUInt32BE(HEADER.magic) !== QCOW2_MAGIC) {
    throw new VdiskError('EINVAL', 'Image is not in qcow2 format');
  }
  const version = buf.readUInt32BE(HEADER.version);
  if (version !== 2 && version !== 3) throw unsupported(`Unsupported qcow2 version ${version}`);
  const clusterBits = buf.readUInt32BE(HEADER.clusterBits);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    const message = `Unsupported cluster size: 2^${clusterBits}`;
    throw clusterBits < MIN_CLUSTER_BITS || clusterBits > 62 ? corrupt(message) : unsupported(message);
  }
  return clusterBits;
}

/**
 * Decodes and validates the header at the start of `buf` (pass cluster 0, or at least
 * header_length bytes of it; the feature-name table in it names unknown features in errors).
 */
export function decodeHeader(buf: Buffer, options: DecodeHeaderOptions = {}): Qcow2Header {
  if (buf.length < 8 || buf.readUInt32BE(HEADER.magic) !== QCOW2_MAGIC) {
    throw new VdiskError('EINVAL', 'Image is not in qcow2 format');
  }
  const version = buf.readUInt32BE(HEADER.version);
  if (version !== 2 && version !== 3) throw unsupported(`Unsupported qcow2 version ${version}`);
  if (buf.length < (version === 2 ? V2_HEADER_LENGTH : V3_MIN_HEADER_LENGTH)) {
    throw corrupt('qcow2 header is truncated');
  }
  const clusterBits = peekClusterBits(buf);
  const clusterSize = 2 ** clusterBits;

  let incompat = { value: 0, highBits: [] as number[] };
  let compatibleFeatures = 0;
  let autoclearFeatures = 0;
  let refcountOrder = 4;
  let headerLength = V2_HEADER_LENGTH;
  if (version === 3) {
    incompat = featureMask(buf, HEADER.incompatibleFeatures);
    compatibleFeatures = featureMask(buf, HEADER.compatibleFeatures).value;
    autoclearFeatures = featureMask(buf, HEADER.autoclearFeatures).value;
    refcountOrder = buf.readUInt32BE(HEADER.refcountOrder);
    headerLength = buf.readUInt32BE(HEADER.headerLength);
    if (headerLength < V3_MIN_HEADER_LENGTH) throw corrupt('qcow2 header too short');
  }
  if (headerLength > clusterSize) throw corrupt('qcow2 header exceeds cluster size');
  if (headerLength % 8 !== 0) throw corrupt(`qcow2 header length ${headerLength} is not a multiple of 8`);
  if (buf.length < headerLength) throw corrupt('qcow2 header is truncated');

  const backingApprox = readU64Approx(buf, HEADER.backingFileOffset);
  if (backingApprox > clusterSize) throw corrupt('Invalid backing file offset');
  const backingFileOffset = backingApprox;
  const extEnd = backingFileOffset !== 0 ? backingFileOffset : clusterSize;

  const compressionType = headerLength > COMPRESSION_TYPE_OFFSET ? buf[COMPRESSION_TYPE_OFFSET]! : COMPRESSION_ZLIB;
  if (compressionType !== COMPRESSION_ZLIB && compressionType !== COMPRESSION_ZSTD) {
    throw unsupported(`qcow2: unknown compression type: ${compressionType}`);
  }
  const compressionBit = (incompat.value & INCOMPAT_COMPRESSION) !== 0;
  if (compressionType === COMPRESSION_ZLIB && compressionBit) {
    throw corrupt('qcow2: Compression type incompatible feature bit must not be set');
  }
  if (compressionType !== COMPRESSION_ZLIB && !compressionBit) {
    throw corrupt('qcow2: Compression type incompatible feature bit must be set');
  }

  const unknownBits = [...bitsSet(incompat.value).filter((b) => b >= 32 || ((1 << b) & INCOMPAT_MASK) === 0)];
  unknownBits.push(...incompat.highBits);
  if (unknownBits.length > 0) {
    const table = scanFeatureTable(buf, headerLength, Math.min(extEnd, buf.length));
    throw unsupported(unsupportedFeaturesMessage(table, unknownBits));
  }
  const incompatibleFeatures = incompat.value;

  if ((incompatibleFeatures & INCOMPAT_EXTL2) !== 0 && clusterBits < MIN_CLUSTER_BITS_EXTL2) {
    throw corrupt(`Unsupported subcluster size: ${clusterSize / 32}`);
  }
  if (refcountOrder > MAX_REFCOUNT_ORDER) {
    throw corrupt('Reference count entry width too large; may not exceed 64 bits');
  }

  const cryptMethod = buf.readUInt32BE(HEADER.cryptMethod);
  if (cryptMethod === CRYPT_AES) throw unsupported('AES-encrypted qcow2 images are not supported');
  if (cryptMethod === CRYPT_LUKS) throw unsupported('LUKS-encrypted qcow2 images are not supported');
  if (cryptMethod !== CRYPT_NONE) throw corrupt(`Unknown qcow2 encryption method ${cryptMethod}`);

  const refcountTableClusters = buf.readUInt32BE(HEADER.refcountTableClusters);
  if (refcountTableClusters === 0 && !options.check) {
    throw corrupt('Image does not contain a reference count table');
  }
  const refcountTableOffset = validateTable(
    buf,
    HEADER.refcountTableOffset,
    refcountTableClusters,
    clusterSize,
    MAX_REFTABLE_SIZE_BYTES,
    clusterSize,
    'Reference count table',
  );

  const nbSnapshots = buf.readUInt32BE(HEADER.nbSnapshots);
  const snapshotsOffset = options.check
    ? readU64(buf, HEADER.snapshotsOffset, 'Snapshot table offset')
    : validateTable(
        buf,
        HEADER.snapshotsOffset,
        nbSnapshots,
        SNAPSHOT_HEADER_SIZE,
        SNAPSHOT_HEADER_SIZE * MAX_SNAPSHOTS,
        clusterSize,
        'Snapshot table',
      );

  const l1Size = buf.readUInt32BE(HEADER.l1Size);
  const l1TableOffset = validateTable(
    buf,
    HEADER.l1TableOffset,
    l1Size,
    L1E_SIZE,
    MAX_L1_SIZE_BYTES,
    clusterSize,
    'Active L1 table',
  );

  const size = readU64(buf, HEADER.size, 'Virtual disk size');
  const l2Bits = clusterBits - ((incompatibleFeatures & INCOMPAT_EXTL2) !== 0 ? 4 : 3);
  const l1Needed = Math.ceil(size / 2 ** (clusterBits + l2Bits));
  if (l1Needed > INT_MAX) throw unsupported('Image is too big');
  if (l1Size < l1Needed) throw corrupt('L1 table is too small');

  const backingFileSize = buf.readUInt32BE(HEADER.backingFileSize);
  if (backingFileOffset !== 0 && backingFileSize > Math.min(MAX_BACKING_FILE_NAME, clusterSize - backingFileOffset)) {
    throw corrupt('Backing file name too long');
  }

  return {
    version,
    backingFileOffset,
    backingFileSize: backingFileOffset !== 0 ? backingFileSize : 0,
    clusterBits,
    size,
    cryptMethod,
    l1Size,
    l1TableOffset,
    refcountTableOffset,
    refcountTableClusters,
    nbSnapshots,
    snapshotsOffset,
    incompatibleFeatures,
    compatibleFeatures,
    autoclearFeatures,
    refcountOrder,
    headerLength,
    compressionType,
    unknownFields: Buffer.from(buf.subarray(Math.min(V3_HEADER_LENGTH, headerLength), headerLength)),
  };
}

/** The header_length vdisk writes for these fields (QEMU: 72 for v2, 112 plus unknown fields for v3). */
export function encodedHeaderLength(h: Pick<Qcow2Header, 'version' | 'unknownFields'>): number {
  return h.version === 2 ? V2_HEADER_LENGTH : V3_HEADER_LENGTH + h.unknownFields.length;
}

/**
 * Encodes the fixed header as QEMU's qcow2_update_header does: the v2 fields only for version 2;
 * for version 3 all fields, the compression-type byte, zero padding and the preserved unknown
 * fields. `headerLength` in `h` is ignored: the written value is encodedHeaderLength(h).
 */
export function encodeHeader(h: Qcow2Header): Buffer {
  const length = encodedHeaderLength(h);
  const buf = Buffer.alloc(length);
  buf.writeUInt32BE(QCOW2_MAGIC, HEADER.magic);
  buf.writeUInt32BE(h.version, HEADER.version);
  writeU64(buf, HEADER.backingFileOffset, h.backingFileOffset, 'backing file offset');
  buf.writeUInt32BE(h.backingFileSize, HEADER.backingFileSize);
  buf.writeUInt32BE(h.clusterBits, HEADER.clusterBits);
  writeU64(buf, HEADER.size, h.size, 'virtual disk size');
  buf.writeUInt32BE(h.cryptMethod, HEADER.cryptMethod);
  buf.writeUInt32BE(h.l1Size, HEADER.l1Size);
  writeU64(buf, HEADER.l1TableOffset, h.l1TableOffset, 'L1 table offset');
  writeU64(buf, HEADER.refcountTableOffset, h.refcountTableOffset, 'refcount table offset');
  buf.writeUInt32BE(h.refcountTableClusters, HEADER.refcountTableClusters);
  buf.writeUInt32BE(h.nbSnapshots, HEADER.nbSnapshots);
  writeU64(buf, HEADER.snapshotsOffset, h.snapshotsOffset, 'snapshot table offset');
  if (h.version === 3) {
    writeU64(buf, HEADER.incompatibleFeatures, h.incompatibleFeatures, 'incompatible features');
    writeU64(buf, HEADER.compatibleFeatures, h.compatibleFeatures, 'compatible features');
    writeU64(buf, HEADER.autoclearFeatures, h.autoclearFeatures, 'autoclear features');
    buf.writeUInt32BE(h.refcountOrder, HEADER.refcountOrder);
    buf.writeUInt32BE(length, HEADER.headerLength);
    buf.writeUInt8(h.compressionType, HEADER.compressionType);
    h.unknownFields.copy(buf, V3_HEADER_LENGTH);
  } else if (h.incompatibleFeatures !== 0 || h.compatibleFeatures !== 0 || h.autoclearFeatures !== 0) {
    throw new VdiskError('EINVAL', 'Feature bits need qcow2 version 3 (compat=1.1)');
  } else if (h.refcountOrder !== 4) {
    throw new VdiskError('EINVAL', 'Different refcount widths than 16 bits require qcow2 version 3 (compat=1.1)');
  }
  return buf;
}

/**
 * Encodes all of cluster 0 as QEMU's qcow2_update_header writes it: the header, the extensions,
 * the end marker, the backing file name, zeros to the end of the cluster. The backing file
 * offset and size in the result come from where the name lands; those in `h` are ignored.
 */
export function encodeHeaderCluster(h: Qcow2Header, ext: ExtensionsToWrite): Buffer {
  const clusterSize = 2 ** h.clusterBits;
  const headerLength = encodedHeaderLength(h);
  const e = encodeHeaderExtensions(ext, { version: h.version, clusterSize, headerLength });
  const out = Buffer.alloc(clusterSize);
  encodeHeader({ ...h, backingFileOffset: e.backingFileOffset, backingFileSize: e.backingFileSize }).copy(out);
  e.bytes.copy(out, headerLength);
  return out;
}
