/**
 * Write-zeroes and discard over whole clusters: entries change to "reads as zero" or
 * "unallocated", and host clusters that lose their last reference are freed (after the new
 * entries are durable, rule R4) and punched out of the file.
 */
import type { L2Entry } from '../codec/l2-entry.js';
import { checkHostsOf, freeEntries } from './guest-writer.js';
import type { ImageParts } from './parts.js';

const ALL = 0xffffffff;

export type DeallocateMode =
  /** Guest discard: the range may read as anything documented; vdisk makes it read as zeros where it can. */
  | 'discard'
  /** Write-zeroes that may give the space back. */
  | 'zero-unmap'
  /** Write-zeroes that keeps the host clusters allocated (preallocated zero clusters). */
  | 'zero-keep'
  /** Shrinking: the clusters leave the image entirely. */
  | 'forget';

/**
 * Applies `mode` to `count` whole guest clusters from `cluster`. The caller holds the clusters
 * exclusively. Returns false (changing nothing) when the image cannot express zeros
 * (version 2 with a backing file), so the caller writes zero bytes instead.
 */
export async function deallocateClusters(
  parts: ImageParts,
  cluster: number,
  count: number,
  mode: DeallocateMode,
): Promise<boolean> {
  const g = parts.geometry;
  const hasZeroFlag = g.version >= 3;
  if (!hasZeroFlag && (mode === 'zero-unmap' || mode === 'zero-keep') && parts.backing) return false;
  await parts.metadataLock.run(async () => {
    const toFree: L2Entry[] = [];
    for (let c = cluster; c < cluster + count; ) {
      const olds = await parts.tables.entries(c, cluster + count - c);
      const news = olds.map((old) => {
        const keep =
          hasZeroFlag &&
          mode === 'zero-keep' &&
          (old.kind === 'data' || old.kind === 'zero') &&
          old.copied &&
          old.host !== 0;
        if (!keep && old.kind !== 'unallocated') toFree.push(old);
        return replacement(parts, old, mode, keep);
      });
      await checkHostsOf(parts, olds);
      if (olds.some((old, i) => !sameEntry(old, news[i]!))) await parts.tables.setEntries(c, news);
      c += olds.length;
    }
    if (toFree.length > 0) await freeEntries(parts, toFree);
  });
  return true;
}

function replacement(parts: ImageParts, old: L2Entry, mode: DeallocateMode, keep: boolean): L2Entry {
  const g = parts.geometry;
  const host = keep ? (old as { host: number }).host : 0;
  // Without a backing file and without data, unallocated already reads as zeros.
  const needZero = g.version >= 3 && (parts.backing !== undefined || old.kind !== 'unallocated' || keep);
  if (mode === 'forget' || (mode === 'discard' && g.version < 3)) return { kind: 'unallocated' };
  if (!needZero) return { kind: 'unallocated' };
  if (g.extendedL2) {
    if (keep) return { kind: 'data', host, copied: true, sub: { alloc: 0, zero: ALL } };
    return { kind: 'unallocated', sub: { alloc: 0, zero: ALL } };
  }
  return { kind: 'zero', host, copied: keep };
}

function sameEntry(a: L2Entry, b: L2Entry): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
