/**
 * Header extensions and the backing file name: the variable part of cluster 0.
 *
 * Each extension is {u32 type, u32 length, data, zero padding to 8}; the area runs from
 * header_length to the backing file name (or the end of the cluster) and ends with type 0.
 * Decoding follows QEMU 7.2's qcow2_read_extensions; encoding follows qcow2_update_header, so a
 * cluster 0 written here is byte-identical to QEMU's for the same contents.
 */

import { VdiskError } from '../../../block/errors.js';
import { readU64, readU64Approx, writeU64 } from '../../../util/u64.js';
import {
  AUTOCLEAR_BITMAPS,
  CRYPT_LUKS,
  EXT_BACKING_FORMAT,
  EXT_BITMAPS,
  EXT_CRYPTO_HEADER,
  EXT_DATA_FILE,
  EXT_END,
  EXT_FEATURE_TABLE,
  FEATURE_ENTRY_SIZE,
  FEATURE_NAME_SIZE,
  FEATURE_TABLE_MIN_CLUSTER_SIZE_EXCLUSIVE,
  FEATURE_TYPE_INCOMPATIBLE,
  MAX_BACKING_FILE_NAME,
  MAX_BACKING_FORMAT_NAME,
  MAX_BITMAP_DIRECTORY_SIZE,
  MAX_BITMAPS,
  QEMU_FEATURE_TABLE,
} from './constants.js';

/**
 * The fixed-header fields that say where the extension area lies and how to read it. Declared
 * here rather than taken from header.ts, which builds on this module: a Qcow2Header has them all.
 */
export interface ExtensionAreaFields {
  clusterBits: number;
  headerLength: number;
  /** Where the backing file name starts in cluster 0 (0: none); the extensions end there. */
  backingFileOffset: number;
  backingFileSize: number;
  autoclearFeatures: number;
  cryptMethod: number;
}

export interface FeatureName {
  /** 0 incompatible, 1 compatible, 2 autoclear. */
  type: number;
  bit: number;
  name: string;
}

export interface BitmapsExtension {
  nbBitmaps: number;
  directorySize: number;
  directoryOffset: number;
}

export interface FdeExtension {
  offset: number;
  length: number;
}

export interface Qcow2Extensions {
  backingFormat?: string;
  /** The feature-name table, up to its first entry with an empty name (as QEMU reads it). */
  featureNames: FeatureName[];
  bitmaps?: BitmapsExtension;
  /**
   * A bitmaps extension was present but the autoclear bitmaps bit was clear: a program without
   * bitmap support changed the image, so QEMU ignores the bitmaps and drops the extension on its
   * next header write.
   */
  inconsistentBitmaps: boolean;
  dataFile?: string;
  fde?: FdeExtension;
  /**
   * Extensions vdisk does not know, in file order, to be preserved on rewrite: their encoded
   * bytes (type, length, data, zero padding each) in one buffer, so that a cluster 0 full of
   * them costs its own size in memory, not an object per extension.
   */
  unknown: Buffer;
  backingFile?: string;
}

/** What a header write puts after the fixed header. */
export interface ExtensionsToWrite {
  backingFormat?: string;
  dataFile?: string;
  fde?: FdeExtension;
  bitmaps?: BitmapsExtension;
  /** Encoded unknown extensions, as decoded (see encodeExtension). */
  unknown?: Buffer;
  backingFile?: string;
  /** Write QEMU's feature-name table; by default exactly when QEMU does (v3, clusters > 4 KiB). */
  featureTable?: boolean;
}

/** Returns `buf` extended with zeros to `length` bytes (QEMU reads zeros past the end of file). */
function padded(buf: Buffer, length: number): Buffer {
  if (buf.length >= length) return buf;
  const out = Buffer.alloc(length);
  buf.copy(out);
  return out;
}

/** A C string: the bytes up to the first NUL. */
function cString(buf: Buffer, start: number, length: number): string {
  const end = buf.indexOf(0, start);
  const stop = end === -1 || end > start + length ? start + length : end;
  return buf.toString('utf8', start, stop);
}

function parseFeatureTable(data: Buffer): FeatureName[] {
  const table = padded(data, Math.ceil(data.length / FEATURE_ENTRY_SIZE) * FEATURE_ENTRY_SIZE);
  const out: FeatureName[] = [];
  for (let off = 0; off < table.length; off += FEATURE_ENTRY_SIZE) {
    if (table[off + 2] === 0) break;
    out.push({ type: table[off]!, bit: table[off + 1]!, name: cString(table, off + 2, FEATURE_NAME_SIZE) });
  }
  return out;
}

/** Where the extension area ends: at the backing file name, else at the end of the cluster. */
function extensionEnd(h: ExtensionAreaFields): number {
  return h.backingFileOffset !== 0 ? h.backingFileOffset : 2 ** h.clusterBits;
}

/**
 * Reads the feature-name table without validating anything else, for error messages about
 * unknown features (QEMU does the same before refusing such an image). Never throws.
 */
export function scanFeatureTable(cluster0: Buffer, headerLength: number, end: number): FeatureName[] {
  const buf = padded(cluster0, end);
  let found: FeatureName[] = [];
  let off = headerLength;
  while (off < end) {
    if (off + 8 > end) break;
    const type = buf.readUInt32BE(off);
    const len = buf.readUInt32BE(off + 4);
    off += 8;
    if (len > end - off || type === EXT_END) break;
    if (type === EXT_FEATURE_TABLE) found = parseFeatureTable(buf.subarray(off, off + len));
    off += Math.ceil(len / 8) * 8;
  }
  return found;
}

/**
 * The message QEMU gives for unknown incompatible features: names from the image's own feature
 * table where it has them, then the remaining bits in hex.
 */
export function unsupportedFeaturesMessage(table: FeatureName[], unknownBits: number[]): string {
  const parts: string[] = [];
  const rest = new Set(unknownBits);
  for (const f of table) {
    if (f.type === FEATURE_TYPE_INCOMPATIBLE && rest.has(f.bit)) {
      parts.push(f.name.slice(0, FEATURE_NAME_SIZE));
      rest.delete(f.bit);
    }
  }
  if (rest.size > 0) {
    let mask = 0n;
    for (const bit of rest) mask |= 1n << BigInt(bit);
    parts.push(`Unknown incompatible feature: ${mask.toString(16)}`);
  }
  return `Unsupported qcow2 feature(s): ${parts.join(', ')}`;
}

function corrupt(message: string): VdiskError {
  return new VdiskError('ECORRUPT', message);
}

/**
 * Decodes the header extensions and the backing file name from cluster 0 (bytes beyond the end of
 * `cluster0` read as zeros). `h` must come from decodeHeader. Lengths that run past the extension
 * area, and malformed known extensions, are ECORRUPT.
 */
export function decodeHeaderExtensions(cluster0: Buffer, h: ExtensionAreaFields): Qcow2Extensions {
  const clusterSize = 2 ** h.clusterBits;
  const end = extensionEnd(h);
  const buf = padded(cluster0, clusterSize);
  const out: Qcow2Extensions = { featureNames: [], inconsistentBitmaps: false, unknown: Buffer.alloc(0) };
  const unknown = new UnknownCollector(end - h.headerLength);
  let off = h.headerLength;
  while (off < end) {
    if (off + 8 > end) throw corrupt('Header extension too large');
    const type = buf.readUInt32BE(off);
    const len = buf.readUInt32BE(off + 4);
    off += 8;
    if (len > end - off) throw corrupt('Header extension too large');
    if (type === EXT_END) break;
    const data = buf.subarray(off, off + len);
    switch (type) {
      case EXT_BACKING_FORMAT:
        if (len > MAX_BACKING_FORMAT_NAME) {
          throw corrupt(`Backing format extension: length ${len} too large (>=${MAX_BACKING_FORMAT_NAME + 1})`);
        }
        out.backingFormat = cString(data, 0, len);
        break;
      case EXT_FEATURE_TABLE:
        out.featureNames = parseFeatureTable(data);
        break;
      case EXT_CRYPTO_HEADER:
        out.fde = decodeFde(data, h, clusterSize);
        break;
      case EXT_BITMAPS:
        if (len !== 24) throw corrupt('Bitmaps extension: invalid extension length');
        if ((h.autoclearFeatures & AUTOCLEAR_BITMAPS) === 0) {
          out.bitmaps = undefined;
          out.inconsistentBitmaps = true;
          break;
        }
        out.bitmaps = decodeBitmaps(data, clusterSize);
        break;
      case EXT_DATA_FILE:
        out.dataFile = cString(data, 0, len);
        break;
      default:
        unknown.add(type, data);
    }
    off += Math.ceil(len / 8) * 8;
  }
  out.unknown = unknown.bytes();
  if (h.backingFileOffset !== 0) {
    out.backingFile = cString(buf, h.backingFileOffset, h.backingFileSize);
  }
  return out;
}

function decodeFde(data: Buffer, h: ExtensionAreaFields, clusterSize: number): FdeExtension {
  if (h.cryptMethod !== CRYPT_LUKS) {
    throw corrupt('CRYPTO header extension only expected with LUKS encryption method');
  }
  if (data.length !== 16) throw corrupt(`CRYPTO header extension size ${data.length}, but expected size 16`);
  const offset = readU64(data, 0, 'Encryption header offset');
  const length = readU64(data, 8, 'Encryption header length');
  if (offset % clusterSize !== 0) {
    throw corrupt(`Encryption header offset '${offset}' is not a multiple of cluster size '${clusterSize}'`);
  }
  return { offset, length };
}

function decodeBitmaps(data: Buffer, clusterSize: number): BitmapsExtension {
  const nbBitmaps = data.readUInt32BE(0);
  if (data.readUInt32BE(4) !== 0) throw corrupt('Bitmaps extension: reserved field is not zero');
  if (nbBitmaps > MAX_BITMAPS) {
    throw new VdiskError(
      'ENOTSUP',
      `Bitmaps extension: image has ${nbBitmaps} bitmaps, exceeding the supported maximum of ${MAX_BITMAPS}`,
    );
  }
  if (nbBitmaps === 0) throw corrupt('Found bitmaps extension with zero bitmaps');
  const directoryOffset = readU64(data, 16, 'Bitmap directory offset');
  if (directoryOffset % clusterSize !== 0) throw corrupt('Bitmaps extension: invalid bitmap directory offset');
  if (readU64Approx(data, 8) > MAX_BITMAP_DIRECTORY_SIZE) {
    throw new VdiskError(
      'ENOTSUP',
      `Bitmaps extension: bitmap directory size exceeds the maximum supported size (${MAX_BITMAP_DIRECTORY_SIZE})`,
    );
  }
  return { nbBitmaps, directorySize: readU64(data, 8, 'Bitmap directory size'), directoryOffset };
}

/** Unknown extensions re-encoded one after the other into a buffer no bigger than the area they came from. */
class UnknownCollector {
  readonly #room: number;
  #buf: Buffer | undefined;
  #used = 0;

  constructor(room: number) {
    this.#room = room;
  }

  add(type: number, data: Buffer): void {
    this.#buf ??= Buffer.alloc(this.#room);
    this.#buf.writeUInt32BE(type >>> 0, this.#used);
    this.#buf.writeUInt32BE(data.length, this.#used + 4);
    data.copy(this.#buf, this.#used + 8);
    this.#used += 8 + Math.ceil(data.length / 8) * 8;
  }

  bytes(): Buffer {
    return this.#buf ? Buffer.from(this.#buf.subarray(0, this.#used)) : Buffer.alloc(0);
  }
}

/** One extension: {type, length, data, zero padding to 8}. */
export function encodeExtension(type: number, data: Buffer): Buffer {
  const out = Buffer.alloc(8 + Math.ceil(data.length / 8) * 8);
  out.writeUInt32BE(type >>> 0, 0);
  out.writeUInt32BE(data.length, 4);
  data.copy(out, 8);
  return out;
}

/** QEMU's feature-name table as written by qcow2_update_header. */
export function qemuFeatureTable(): Buffer {
  const table = Buffer.alloc(QEMU_FEATURE_TABLE.length * FEATURE_ENTRY_SIZE);
  QEMU_FEATURE_TABLE.forEach((f, i) => {
    table[i * FEATURE_ENTRY_SIZE] = f.type;
    table[i * FEATURE_ENTRY_SIZE + 1] = f.bit;
    table.write(f.name, i * FEATURE_ENTRY_SIZE + 2, 'latin1');
  });
  return table;
}

export interface EncodedExtensions {
  /** The bytes from header_length on: extensions, end marker, backing file name. */
  bytes: Buffer;
  /** Where the backing file name lands in cluster 0 (0 without a backing file). */
  backingFileOffset: number;
  backingFileSize: number;
}

/**
 * Encodes what follows the fixed header, in QEMU's order: backing format, external data file
 * name, encryption header pointer, feature-name table, bitmaps, unknown extensions, end marker,
 * backing file name. Throws EINVAL if it does not fit before the end of cluster 0.
 */
export function encodeHeaderExtensions(
  ext: ExtensionsToWrite,
  opts: { version: number; clusterSize: number; headerLength: number },
): EncodedExtensions {
  const parts: Buffer[] = [];
  if (ext.backingFormat !== undefined) {
    const fmt = Buffer.from(ext.backingFormat, 'utf8');
    if (fmt.length > MAX_BACKING_FORMAT_NAME) {
      throw new VdiskError('EINVAL', `Backing format name '${ext.backingFormat}' is too long`);
    }
    parts.push(encodeExtension(EXT_BACKING_FORMAT, fmt));
  }
  if (ext.dataFile !== undefined) parts.push(encodeExtension(EXT_DATA_FILE, Buffer.from(ext.dataFile, 'utf8')));
  if (ext.fde !== undefined) {
    const fde = Buffer.alloc(16);
    writeU64(fde, 0, ext.fde.offset, 'encryption header offset');
    writeU64(fde, 8, ext.fde.length, 'encryption header length');
    parts.push(encodeExtension(EXT_CRYPTO_HEADER, fde));
  }
  const featureTable =
    ext.featureTable ?? (opts.version >= 3 && opts.clusterSize > FEATURE_TABLE_MIN_CLUSTER_SIZE_EXCLUSIVE);
  if (featureTable) parts.push(encodeExtension(EXT_FEATURE_TABLE, qemuFeatureTable()));
  if (ext.bitmaps !== undefined && ext.bitmaps.nbBitmaps > 0) {
    const b = Buffer.alloc(24);
    b.writeUInt32BE(ext.bitmaps.nbBitmaps, 0);
    writeU64(b, 8, ext.bitmaps.directorySize, 'bitmap directory size');
    writeU64(b, 16, ext.bitmaps.directoryOffset, 'bitmap directory offset');
    parts.push(encodeExtension(EXT_BITMAPS, b));
  }
  if (ext.unknown) parts.push(ext.unknown);
  parts.push(encodeExtension(EXT_END, Buffer.alloc(0)));
  let backingFileOffset = 0;
  let backingFileSize = 0;
  const extLength = parts.reduce((n, p) => n + p.length, 0);
  if (ext.backingFile !== undefined) {
    const name = Buffer.from(ext.backingFile, 'utf8');
    if (name.length > MAX_BACKING_FILE_NAME) {
      throw new VdiskError('EINVAL', `Backing file name is too long (${name.length} > ${MAX_BACKING_FILE_NAME} bytes)`);
    }
    backingFileOffset = opts.headerLength + extLength;
    backingFileSize = name.length;
    parts.push(name);
  }
  const bytes = Buffer.concat(parts);
  if (opts.headerLength + bytes.length > opts.clusterSize) {
    throw new VdiskError(
      'EINVAL',
      `The header, its extensions and the backing file name need ${opts.headerLength + bytes.length} bytes, ` +
        `more than the cluster size ${opts.clusterSize}`,
    );
  }
  return { bytes, backingFileOffset, backingFileSize };
}
