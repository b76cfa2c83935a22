/**
 * QCOW_OFLAG_COPIED in the active L1 and L2 tables: set exactly where the refcount is 1, so that
 * the guest writer changes a cluster in place only when nothing else uses it. Snapshot
 * operations move the flags in the safe direction only: they are cleared before a refcount
 * grows past 1 (a crash in between leaves an unneeded copy-on-write, never a write into a
 * cluster a snapshot keeps), and set again only after a refcount dropped back to 1.
 */
import { decodeL1, encodeL1 } from '../codec/l1-entry.js';
import { decodeL2 } from '../codec/l2-entry.js';
import type { ReferenceDeps } from './references.js';

const COPIED = 0x80;

/**
 * Rewrites the COPIED flags of every L2 table `l1` names and of `l1` itself (a copy, returned):
 * 'clear' takes them all away, 'exact' sets them where the refcount is 1. The tables are
 * changed through the cache, as the active image's (the caller writes them back).
 */
export async function withCopiedFlags(l1: Buffer, mode: 'clear' | 'exact', d: ReferenceDeps): Promise<Buffer> {
  const g = d.geometry;
  const out = Buffer.from(l1);
  const soleOwner = async (offset: number) =>
    mode === 'exact' && offset !== 0 && (await d.allocator.refcountOf(offset)) === 1;
  for (let i = 0; i < out.length / 8; i++) {
    const entry = decodeL1(out, i, g);
    if (entry.l2Offset === 0) continue;
    // The table is written as the active image's: it is one, or is about to be.
    d.writer.release('snapshot-l2', entry.l2Offset, g.clusterSize);
    d.writer.claim('l2', entry.l2Offset, g.clusterSize);
    await d.tables.visitTable(entry.l2Offset, async (data) => {
      let changed = false;
      for (let j = 0; j < g.l2Entries; j++) {
        const e = decodeL2(data, j, g);
        const wanted = (e.kind === 'data' || e.kind === 'zero') && (await soleOwner(e.host));
        const at = j * g.l2EntrySize;
        if (((data[at]! & COPIED) !== 0) !== wanted) {
          data[at] = wanted ? data[at]! | COPIED : data[at]! & ~COPIED;
          changed = true;
        }
      }
      return changed;
    });
    encodeL1(out, i, { l2Offset: entry.l2Offset, copied: await soleOwner(entry.l2Offset) }, g);
  }
  return out;
}

/** Brings the active L1 table's and its L2 tables' COPIED flags in line with `mode`. */
export async function updateActiveFlags(mode: 'clear' | 'exact', d: ReferenceDeps): Promise<void> {
  const l1 = d.tables.l1Copy();
  const updated = await withCopiedFlags(l1, mode, d);
  if (!updated.equals(l1)) await d.tables.rewriteL1(updated);
}
