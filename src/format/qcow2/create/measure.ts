/**
 * qemu-img measure for qcow2, with QEMU 7.2's arithmetic (qcow2_measure,
 * qcow2_calc_prealloc_size): "fully allocated" is the header cluster, every L2 and L1 table,
 * the refcount structure that counts all of it, and the data; "required" counts instead only
 * the data clusters the source holds (whole clusters, zero ranges left out), or all of them with
 * a backing file (whatever the backing file shares is unknown) or falloc/full preallocation.
 * Bitmaps are counted when the source can keep them and the new image is version 3.
 */
import { VdiskError } from '../../../block/errors.js';
import type { MeasureRequest, MeasureResult, MeasureSource } from '../../format.js';
import { MAX_L1_SIZE_BYTES } from '../codec/constants.js';
import { settingsOf } from './create.js';
import { normalize } from './layout.js';
import { refcountMetadataBlocks } from './qemu-allocator.js';

const roundUp = (value: number, unit: number) => Math.ceil(value / unit) * unit;

/** qcow2_calc_prealloc_size: every byte of a fully allocated image of `size` bytes. */
export function fullyAllocatedSize(size: number, cs: number, refcountOrder: number, extendedL2: boolean): number {
  const entry = extendedL2 ? 16 : 8;
  const aligned = roundUp(size, cs);
  let meta = cs;
  const l2Entries = roundUp(aligned / cs, cs / entry);
  meta += l2Entries * entry;
  const l1Entries = roundUp((l2Entries * entry) / cs, cs / 8);
  meta += l1Entries * 8;
  const { blocks, tableClusters } = refcountMetadataBlocks((meta + aligned) / cs, cs, refcountOrder, false);
  return meta + (blocks + tableClusters) * cs + aligned;
}

/** Bytes of the clusters the source holds data in (zero ranges left out), as qcow2_measure counts them. */
async function dataClusters(source: MeasureSource, cs: number): Promise<number> {
  let required = 0;
  let pos = 0;
  for await (const extent of source.extents()) {
    const end = extent.offset + extent.length;
    if (end <= pos) continue;
    if (!extent.zero && extent.data && extent.allocated) {
      const stop = roundUp(end, cs);
      required += (pos % cs) + (stop - pos);
      pos = stop;
    } else {
      pos = end;
    }
  }
  return required;
}

/** The space persistent bitmaps take: their data, their tables, the directory. */
function bitmapsSize(source: MeasureSource, cs: number): number {
  let bytes = 0;
  let directory = 0;
  for (const bitmap of source.bitmaps) {
    const bits = Math.ceil(source.length / bitmap.granularity);
    const clusters = Math.ceil(Math.ceil(bits / 8) / cs);
    bytes += clusters * cs + roundUp(clusters * 8, cs);
    directory += roundUp(24 + Buffer.byteLength(bitmap.name), 8);
  }
  return bytes + roundUp(directory, cs);
}

export async function measureQcow2(request: MeasureRequest): Promise<MeasureResult> {
  const { backing_file: backingFile, backing_fmt: _backingFormat, ...options } = request.options;
  const s = settingsOf({ filename: '', size: 0, options });
  normalize({ ...s, size: 0, hasBackingFile: false });
  const cs = 2 ** s.clusterBits;
  let size = roundUp(request.size ?? 0, cs);
  const entry = s.extendedL2 ? 16 : 8;
  if (Math.ceil(size / cs / (cs / entry)) * 8 > MAX_L1_SIZE_BYTES) {
    throw new VdiskError('EINVAL', 'The image size is too large (try using a larger cluster size)');
  }
  let required = 0;
  const source = request.source;
  if (source) {
    size = roundUp(source.length, cs);
    required = backingFile !== undefined ? size : await dataClusters(source, cs);
  }
  if (s.preallocation === 'falloc' || s.preallocation === 'full') required = size;
  const fullyAllocated = fullyAllocatedSize(size, cs, s.refcountOrder, s.extendedL2);
  const result: MeasureResult = { required: fullyAllocated - size + required, fullyAllocated };
  if (s.version >= 3 && source?.keepsBitmaps) result.bitmaps = bitmapsSize(source, cs);
  return result;
}
