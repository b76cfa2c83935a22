/**
 * QCOW2 on-disk constants and QEMU's implementation limits (docs/interop/qcow2.txt and
 * block/qcow2.h of QEMU 7.2). Only numbers and names; no behaviour.
 */

/** "QFI\xfb" */
export const QCOW2_MAGIC = 0x514649fb;

/** Header sizes in bytes. */
export const V2_HEADER_LENGTH = 72;
/** The smallest header_length a v3 image may declare (fields through header_length). */
export const V3_MIN_HEADER_LENGTH = 104;
/** What QEMU writes for v3: the fields plus the compression-type byte and 7 bytes of padding. */
export const V3_HEADER_LENGTH = 112;
/** Offset of the compression_type byte (present when header_length > 104). */
export const COMPRESSION_TYPE_OFFSET = 104;

/** Byte offsets of header fields. */
export const HEADER = {
  magic: 0,
  version: 4,
  backingFileOffset: 8,
  backingFileSize: 16,
  clusterBits: 20,
  size: 24,
  cryptMethod: 32,
  l1Size: 36,
  l1TableOffset: 40,
  refcountTableOffset: 48,
  refcountTableClusters: 56,
  nbSnapshots: 60,
  snapshotsOffset: 64,
  incompatibleFeatures: 72,
  compatibleFeatures: 80,
  autoclearFeatures: 88,
  refcountOrder: 96,
  headerLength: 100,
  compressionType: 104,
} as const;

/** Encryption methods (crypt_method). */
export const CRYPT_NONE = 0;
export const CRYPT_AES = 1;
export const CRYPT_LUKS = 2;

/** Compression types (compression_type). */
export const COMPRESSION_ZLIB = 0;
export const COMPRESSION_ZSTD = 1;

/** Incompatible feature bit numbers and masks. */
export const INCOMPAT_DIRTY_BIT = 0;
export const INCOMPAT_CORRUPT_BIT = 1;
export const INCOMPAT_DATA_FILE_BIT = 2;
export const INCOMPAT_COMPRESSION_BIT = 3;
export const INCOMPAT_EXTL2_BIT = 4;
export const INCOMPAT_DIRTY = 1 << INCOMPAT_DIRTY_BIT;
export const INCOMPAT_CORRUPT = 1 << INCOMPAT_CORRUPT_BIT;
export const INCOMPAT_DATA_FILE = 1 << INCOMPAT_DATA_FILE_BIT;
export const INCOMPAT_COMPRESSION = 1 << INCOMPAT_COMPRESSION_BIT;
export const INCOMPAT_EXTL2 = 1 << INCOMPAT_EXTL2_BIT;
/** Every incompatible bit vdisk understands. */
export const INCOMPAT_MASK =
  INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

/** Compatible feature bits. */
export const COMPAT_LAZY_REFCOUNTS_BIT = 0;
export const COMPAT_LAZY_REFCOUNTS = 1 << COMPAT_LAZY_REFCOUNTS_BIT;
export const COMPAT_MASK = COMPAT_LAZY_REFCOUNTS;

/** Autoclear feature bits. */
export const AUTOCLEAR_BITMAPS_BIT = 0;
export const AUTOCLEAR_DATA_FILE_RAW_BIT = 1;
export const AUTOCLEAR_BITMAPS = 1 << AUTOCLEAR_BITMAPS_BIT;
export const AUTOCLEAR_DATA_FILE_RAW = 1 << AUTOCLEAR_DATA_FILE_RAW_BIT;
export const AUTOCLEAR_MASK = AUTOCLEAR_BITMAPS | AUTOCLEAR_DATA_FILE_RAW;

/** Feature types in the feature-name table. */
export const FEATURE_TYPE_INCOMPATIBLE = 0;
export const FEATURE_TYPE_COMPATIBLE = 1;
export const FEATURE_TYPE_AUTOCLEAR = 2;

/** Header extension type ids. */
export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_CRYPTO_HEADER = 0x0537be77;
export const EXT_BITMAPS = 0x23852875;
export const EXT_DATA_FILE = 0x44415441;

/** Size of one feature-name table entry: u8 type, u8 bit, 46 bytes of name. */
export const FEATURE_ENTRY_SIZE = 48;
export const FEATURE_NAME_SIZE = 46;

/**
 * The feature-name table QEMU 7.2 writes (qcow2_update_header), in its order. QEMU writes it
 * only for v3 images with clusters larger than 4 KiB.
 */
export const QEMU_FEATURE_TABLE: readonly { type: number; bit: number; name: string }[] = [
  { type: FEATURE_TYPE_INCOMPATIBLE, bit: INCOMPAT_DIRTY_BIT, name: 'dirty bit' },
  { type: FEATURE_TYPE_INCOMPATIBLE, bit: INCOMPAT_CORRUPT_BIT, name: 'corrupt bit' },
  { type: FEATURE_TYPE_INCOMPATIBLE, bit: INCOMPAT_DATA_FILE_BIT, name: 'external data file' },
  { type: FEATURE_TYPE_INCOMPATIBLE, bit: INCOMPAT_COMPRESSION_BIT, name: 'compression type' },
  { type: FEATURE_TYPE_INCOMPATIBLE, bit: INCOMPAT_EXTL2_BIT, name: 'extended L2 entries' },
  { type: FEATURE_TYPE_COMPATIBLE, bit: COMPAT_LAZY_REFCOUNTS_BIT, name: 'lazy refcounts' },
  { type: FEATURE_TYPE_AUTOCLEAR, bit: AUTOCLEAR_BITMAPS_BIT, name: 'bitmaps' },
  { type: FEATURE_TYPE_AUTOCLEAR, bit: AUTOCLEAR_DATA_FILE_RAW_BIT, name: 'raw external data' },
];
/** QEMU omits the feature table for clusters of this size or smaller. */
export const FEATURE_TABLE_MIN_CLUSTER_SIZE_EXCLUSIVE = 4096;

/** Cluster size limits: the spec's minimum and QEMU's maximum (2 MiB). */
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
/** Extended L2 entries need subclusters of at least 512 bytes: clusters of 16 KiB or more. */
export const MIN_CLUSTER_BITS_EXTL2 = 14;
export const DEFAULT_CLUSTER_BITS = 16;
export const SUBCLUSTERS_PER_CLUSTER = 32;

/** Refcount widths: refcount_bits = 1 << refcount_order. */
export const MAX_REFCOUNT_ORDER = 6;
export const DEFAULT_REFCOUNT_ORDER = 4;

/** Entry sizes in bytes. */
export const L1E_SIZE = 8;
export const L2E_SIZE_NORMAL = 8;
export const L2E_SIZE_EXTENDED = 16;
export const REFTABLE_ENTRY_SIZE = 8;

/** QEMU limits (block/qcow2.h). */
export const MAX_L1_SIZE_BYTES = 32 * 1024 * 1024;
export const MAX_REFTABLE_SIZE_BYTES = 8 * 1024 * 1024;
export const MAX_SNAPSHOTS = 65536;
/** Fixed part of a snapshot table entry. */
export const SNAPSHOT_HEADER_SIZE = 40;
/** The extra data QEMU knows: u64 vm_state_size_large, u64 disk_size, u64 icount. */
export const SNAPSHOT_EXTRA_SIZE = 24;
/** Snapshot table: an average of 1 KiB per entry, so 64 MiB in all. */
export const MAX_SNAPSHOTS_SIZE = 1024 * MAX_SNAPSHOTS;
export const MAX_SNAPSHOT_EXTRA_DATA = 1024;
export const MAX_BITMAPS = 65535;
export const MAX_BITMAP_DIRECTORY_SIZE = 1024 * MAX_BITMAPS;
/** A backing file name may be at most 1023 bytes. */
export const MAX_BACKING_FILE_NAME = 1023;
/** QEMU stores the backing format in a 16-byte buffer, so the name is at most 15 bytes. */
export const MAX_BACKING_FORMAT_NAME = 15;
/** Host cluster offsets in L1/L2 entries have bits 9-55: they stay below 2^56. */
export const MAX_HOST_OFFSET_EXCLUSIVE = 2 ** 56;
/** QEMU passes offsets as int64_t: a table must end at or below INT64_MAX. */
export const INT64_MAX_APPROX = 2 ** 63;
/** QEMU keeps the L1 index of the VM state in an int. */
export const INT_MAX = 0x7fffffff;

/** Sectors are 512 bytes: compressed cluster lengths and image sizes are counted in them. */
export const SECTOR_SIZE = 512;
