/**
 * Changing the virtual size of an open qcow2 image. Growing makes the L1 table big enough
 * first (staged, R5), then preallocates the new tail as asked, then writes the new size.
 * Shrinking frees every cluster past the new end, then writes the new size.
 */
import { VdiskError } from '../../../block/errors.js';
import type { Preallocation } from '../../../block/preallocation.js';
import type { L2Entry } from '../codec/l2-entry.js';
import { deallocateClusters } from './deallocator.js';
import type { ImageParts } from './parts.js';

export async function resizeImage(parts: ImageParts, size: number, preallocation: Preallocation): Promise<void> {
  const g = parts.geometry;
  const header = parts.header;
  const old = header.header.size;
  if (size % 512 !== 0) throw new VdiskError('EINVAL', 'The new size must be a multiple of 512');
  if (size === old) return;
  if (size < old) {
    if (preallocation !== 'off') throw new VdiskError('ENOTSUP', 'Preallocation is only for growing an image');
    const first = Math.ceil(size / g.clusterSize);
    const end = Math.ceil(old / g.clusterSize);
    if (end > first) {
      const release = await parts.clusterLocks.acquire(first, end, 'exclusive');
      try {
        await deallocateClusters(parts, first, end - first, 'forget');
      } finally {
        release();
      }
    }
    await parts.metadataLock.run(() => header.setSize(size));
    return;
  }
  if (parts.backing && preallocation !== 'off') {
    throw new VdiskError('ENOTSUP', 'Preallocation of an image with a backing file is not supported');
  }
  const entries = Math.ceil(size / g.l2Coverage);
  await parts.metadataLock.run(async () => {
    await parts.tables.growL1(entries, (offset, n) => header.setL1Table(offset, n));
    // Flush so the tables are durable before the size makes them reachable.
    await parts.l2Cache.flush();
  });
  if (preallocation !== 'off') await preallocateTail(parts, old, size, preallocation);
  await parts.metadataLock.run(() => header.setSize(size));
}

/** Maps every cluster of [from, to) to a host cluster that reads as zeros. */
async function preallocateTail(parts: ImageParts, from: number, to: number, mode: Preallocation): Promise<void> {
  const g = parts.geometry;
  const first = Math.ceil(from / g.clusterSize);
  const end = Math.ceil(to / g.clusterSize);
  if (first >= end) return;
  const release = await parts.clusterLocks.acquire(first, end, 'exclusive');
  try {
    await parts.metadataLock.run(async () => {
      for (let c = first; c < end; ) {
        // One L2 table at a time, its clusters allocated in one contiguous run.
        const n = Math.min(end - c, g.l2Entries - (c % g.l2Entries));
        const host = await parts.allocator.allocate(n);
        await zeroHostRun(parts, host, n * g.clusterSize, mode);
        const entries: L2Entry[] = Array.from({ length: n }, (_, i) => ({
          kind: 'data',
          host: host + i * g.clusterSize,
          copied: true,
          ...(g.extendedL2 ? { sub: { alloc: 0xffffffff, zero: 0 } } : {}),
        }));
        await parts.tables.setEntries(c, entries);
        c += n;
      }
      await parts.l2Cache.flush();
    });
  } finally {
    release();
  }
}

/**
 * Makes a run of newly allocated host clusters read as zeros, the way `mode` asks. Only writes
 * and fallocate are used, never ftruncate, so a concurrent write past the end is never cut off.
 */
async function zeroHostRun(parts: ImageParts, host: number, length: number, mode: Preallocation): Promise<void> {
  if (mode === 'full') {
    const zeros = Buffer.alloc(Math.min(length, 4 << 20));
    for (let pos = 0; pos < length; pos += zeros.length) {
      await parts.file.write(host + pos, zeros.subarray(0, Math.min(zeros.length, length - pos)));
    }
  } else if (mode === 'falloc') {
    await parts.file.writeZeroes(host, length, { mayUnmap: false });
  } else {
    // metadata: a hole inside the file, and past its end a sparse extension.
    const inside = Math.max(0, Math.min(length, parts.file.length() - host));
    if (inside > 0) await parts.file.writeZeroes(host, inside, { mayUnmap: true });
    if (inside < length) await parts.file.write(host + length - 512, Buffer.alloc(512));
  }
}
