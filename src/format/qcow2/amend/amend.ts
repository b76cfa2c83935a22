/**
 * `amend` for qcow2, as QEMU 7.2's qcow2_amend_options: compat (0.10 <-> 1.1), lazy_refcounts,
 * refcount_bits and size. Everything is checked before the first write, with QEMU's messages.
 * The order is QEMU's: the upgrade first (what follows may need version 3), then the refcount
 * width, the size, and the downgrade last. A downgrade turns every zero cluster into data that
 * reads as zeros (version 2 has no zero flag) before the header says version 2, so the image
 * reads the same at every step. The backing file is rebase's to change, as in QEMU 7.2.
 */

import { cacheMode } from '../../../block/cache-mode.js';
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import type { CreateOptionDesc } from '../../create-options.js';
import type { AmendRequest, FormatAmender } from '../../format.js';
import { checkQcow2 } from '../check/check.js';
import { COMPAT_LAZY_REFCOUNTS, COMPRESSION_ZLIB, INCOMPAT_COMPRESSION, INCOMPAT_DIRTY } from '../codec/constants.js';
import type { Qcow2Header } from '../codec/header.js';
import type { Qcow2Image } from '../image/image.js';
import { openQcow2 } from '../image/open.js';
import { BorrowedFile } from './borrowed-file.js';
import { type HeaderCluster, keptExtensions, readHeaderCluster, rewriteHeaderCluster } from './header-rewrite.js';
import { changeRefcountOrder } from './refcount-order.js';

const AMEND_OPTIONS: readonly CreateOptionDesc[] = [
  { name: 'backing_file', type: 'str', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'str', help: 'Image format of the base image' },
  { name: 'compat', type: 'str', help: 'Compatibility level (v2 [0.10] or v3 [1.1])' },
  { name: 'lazy_refcounts', type: 'bool', help: 'Postpone refcount updates' },
  { name: 'refcount_bits', type: 'num', help: 'Width of a reference count entry in bits' },
  { name: 'size', type: 'size', help: 'Virtual disk size' },
];

interface AmendPlan {
  version: 2 | 3;
  lazy: boolean;
  refcountOrder: number;
  size: number | undefined;
}

function einval(message: string): VdiskError {
  return new VdiskError('EINVAL', message);
}

function versionOf(compat: string): 2 | 3 {
  if (compat === '0.10' || compat === 'v2') return 2;
  if (compat === '1.1' || compat === 'v3') return 3;
  throw einval(`Unknown compatibility level ${compat}`);
}

/** Every check, in QEMU's order, before anything is written. */
async function planAmend(file: BlockDriver, old: HeaderCluster, request: AmendRequest): Promise<AmendPlan> {
  const o = request.options;
  const h = old.header;
  const ext = old.extensions;
  const version = o.compat === undefined ? h.version : versionOf(String(o.compat));
  let refcountOrder = h.refcountOrder;
  if (o.refcount_bits !== undefined) {
    const bits = Number(o.refcount_bits);
    refcountOrder = Math.log2(bits);
    if (!Number.isInteger(refcountOrder) || refcountOrder > 6) {
      throw einval('Refcount width must be a power of two and may not exceed 64 bits');
    }
    if (version < 3 && bits !== 16) {
      throw einval(
        'Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)',
      );
    }
  }
  // A downgrade drops lazy refcounts unless they are asked for (which is refused below).
  const current = version >= 3 && (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0;
  const lazy = o.lazy_refcounts === undefined ? current : Boolean(o.lazy_refcounts);
  if (lazy && version < 3) {
    throw einval('Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)');
  }
  if (
    (o.backing_file !== undefined || o.backing_fmt !== undefined) &&
    (o.backing_file !== ext.backingFile || o.backing_fmt !== ext.backingFormat)
  ) {
    throw einval("Cannot amend the backing file; use 'vdisk rebase' instead");
  }
  if (version < h.version) {
    if (refcountOrder !== 4) throw einval('compat=0.10 requires refcount_bits=16');
    if (h.compressionType !== COMPRESSION_ZLIB && (await checkQcow2(file)).compressedClusters > 0) {
      throw einval('Cannot downgrade an image with zstd compression type and existing compressed clusters');
    }
    const other = h.incompatibleFeatures & ~(INCOMPAT_DIRTY | INCOMPAT_COMPRESSION);
    if (other !== 0) throw einval(`Cannot downgrade an image with incompatible features 0x${other.toString(16)} set`);
    if (h.nbSnapshots > 0) {
      throw new VdiskError('ENOTSUP', 'vdisk cannot downgrade an image with internal snapshots');
    }
    if (ext.bitmaps) throw new VdiskError('ENOTSUP', 'Cannot downgrade an image with persistent bitmaps');
  }
  return { version, lazy, refcountOrder, size: o.size === undefined ? undefined : Number(o.size) };
}

/** The guest-visible work: the new size, and for a downgrade zero clusters written as zero data. */
async function changeContent(
  file: BlockDriver,
  request: AmendRequest,
  plan: AmendPlan,
  old: HeaderCluster,
): Promise<void> {
  const downgrade = plan.version < old.header.version;
  if (plan.size === undefined && !downgrade && plan.lazy) return;
  // Opening repairs a dirty image; closing leaves it clean, as turning lazy refcounts off needs.
  const image = await openQcow2(new BorrowedFile(file), {
    filename: request.filename,
    cache: cacheMode('writeback'),
    readOnly: false,
  });
  try {
    if (plan.size !== undefined && plan.size !== image.length()) await image.truncate(plan.size, 'off');
    if (downgrade) await expandZeroClusters(image, old.extensions.backingFile !== undefined, request.onProgress);
  } finally {
    await image.close();
  }
}

/**
 * Ranges this layer reads as zero by its zero flag become what version 2 can say: unallocated
 * without a backing file (which reads as zeros too), data clusters of zeros over one or where the
 * zero cluster keeps its host cluster.
 */
async function expandZeroClusters(
  image: Qcow2Image,
  hasBacking: boolean,
  onProgress: AmendRequest['onProgress'],
): Promise<void> {
  const size = image.length();
  const zeros = Buffer.alloc(1024 * 1024);
  for (let offset = 0; offset < size; ) {
    const extent = await image.blockStatus(offset, size - offset);
    const zeroFlag = (extent.depth ?? 0) === 0 && extent.allocated && extent.zero && !extent.data;
    // As QEMU: a zero cluster that keeps a host cluster gets zeros written there.
    if (zeroFlag && !hasBacking && extent.hostOffset === undefined) await image.unallocate(offset, extent.length);
    else if (zeroFlag) {
      for (let pos = offset; pos < offset + extent.length; pos += zeros.length) {
        await image.write(pos, zeros.subarray(0, Math.min(zeros.length, offset + extent.length - pos)));
      }
    }
    offset += extent.length;
    onProgress?.(offset, size);
  }
}

/** The header fields after the change. */
function newHeader(h: Qcow2Header, plan: AmendPlan): Qcow2Header {
  if (plan.version === 2) {
    return {
      ...h,
      version: 2,
      incompatibleFeatures: 0,
      compatibleFeatures: 0,
      autoclearFeatures: 0,
      refcountOrder: 4,
      compressionType: COMPRESSION_ZLIB,
      unknownFields: Buffer.alloc(0),
    };
  }
  const lazyBit = plan.lazy ? COMPAT_LAZY_REFCOUNTS : 0;
  return {
    ...h,
    version: 3,
    compatibleFeatures: (h.compatibleFeatures & ~COMPAT_LAZY_REFCOUNTS) | lazyBit,
    unknownFields: h.version === 3 ? h.unknownFields : Buffer.alloc(0),
  };
}

async function amendQcow2(file: BlockDriver, request: AmendRequest): Promise<void> {
  const old = await readHeaderCluster(file);
  const plan = await planAmend(file, old, request);
  const h = old.header;
  if (plan.version > h.version)
    await rewriteHeaderCluster(file, old, newHeader(h, plan), keptExtensions(old.extensions));
  if (plan.refcountOrder !== h.refcountOrder) {
    const current = await readHeaderCluster(file);
    await changeRefcountOrder(file, current.header, plan.refcountOrder);
  }
  await changeContent(file, request, plan, old);
  const now = await readHeaderCluster(file);
  const wanted = newHeader(now.header, plan);
  if (
    wanted.version !== now.header.version ||
    wanted.compatibleFeatures !== now.header.compatibleFeatures ||
    wanted.incompatibleFeatures !== now.header.incompatibleFeatures
  ) {
    const ext = keptExtensions(now.extensions);
    await rewriteHeaderCluster(file, now, wanted, plan.version === 2 ? { ...ext, bitmaps: undefined } : ext);
  }
}

export const qcow2Amender: FormatAmender = {
  options: AMEND_OPTIONS,
  creationOnly: ['cluster_size', 'preallocation', 'extended_l2', 'compression_type', 'data_file', 'encryption'],
  amend: amendQcow2,
};
