/**
 * The parts of `check` that compare and repair: the refcount blocks' own accounting
 * (check_refblocks), the comparison of stored refcounts with the references found
 * (compare_refcounts), and the COPIED flags (check_oflag_copied). Every repair here is written and flushed before the next kind starts, so
 * that a COPIED flag is set only over a refcount already durable.
 */
import { hex64, TWO_POW_32 } from '../../../util/u64.js';
import { CheckAbort, type CheckContext } from './context.js';
import { realignedEntry } from './entry-words.js';
import type { MetadataWalk } from './metadata-walk.js';
import { RefcountReadError, type StoredRefcounts } from './stored-refcounts.js';

const COPIED_HIGH = 0x80000000;

function bare(high: number, low: number): string {
  return hex64(high >>> 0, low >>> 0).slice(2);
}

/** check_refblocks: counts each refcount block; says whether the refcount structure must be rebuilt. */
export function checkRefblocks(ctx: CheckContext, stored: StoredRefcounts): boolean {
  let rebuild = false;
  for (let i = 0; i < stored.entries; i++) {
    if (stored.hasReservedBits(i)) {
      ctx.log(`ERROR refcount table entry ${i} has reserved bits set`);
      ctx.res.corruptions++;
      rebuild = true;
      continue;
    }
    const p = stored.pointer(i);
    if (p.kind === 'none') continue;
    if (p.kind === 'unaligned') {
      ctx.log(`ERROR refcount block ${i} is not cluster aligned; refcount table entry corrupted`);
      ctx.res.corruptions++;
      rebuild = true;
      continue;
    }
    if (p.kind === 'beyond' || Math.floor(p.offset / ctx.cs) >= ctx.refs.length) {
      // QEMU grows the file to hold the block (which then counts nothing); vdisk rebuilds instead.
      ctx.log(`${ctx.fixErrors ? 'Repairing' : 'ERROR'} refcount block ${i} is outside image`);
      ctx.res.corruptions++;
      if (ctx.fixErrors) rebuild = true;
      continue;
    }
    ctx.inc(p.offset, ctx.cs);
    const count = ctx.refs.get(Math.floor(p.offset / ctx.cs));
    if (count !== 1) {
      ctx.log(`ERROR refcount block ${i} refcount=${count}`);
      ctx.res.corruptions++;
      rebuild = true;
    }
  }
  return rebuild;
}

export interface CompareOutcome {
  rebuild: boolean;
  highest: number;
  /** Refcounts that could not be read (counted as check errors). */
  readErrors: number;
}

/** compare_refcounts: reports (and with `fix`, repairs) every cluster whose refcount is not its reference count. */
export async function compareRefcounts(
  ctx: CheckContext,
  stored: StoredRefcounts,
  fix: { leaks: boolean; errors: boolean },
): Promise<CompareOutcome> {
  const out: CompareOutcome = { rebuild: false, highest: 0, readErrors: 0 };
  let changed = false;
  const refs = ctx.refs;
  for (let i = 0; i < refs.length; i++) {
    let stored1 = stored.peek(i);
    if (stored1 === undefined) stored1 = await stored.get(i);
    if (stored1 instanceof RefcountReadError) {
      ctx.log(`Can't get refcount for cluster ${i}: ${stored1.reason}`);
      ctx.res.checkErrors++;
      out.readErrors++;
      continue;
    }
    const found = refs.get(i);
    if (stored1 > 0 || found > 0) out.highest = i;
    if (stored1 === found) continue;
    let kind: 'leak' | 'corruption' | undefined;
    if (stored1 === 0) out.rebuild = true;
    else if (stored1 > found && fix.leaks) kind = 'leak';
    else if (stored1 < found && fix.errors) kind = 'corruption';
    const label = kind ? 'Repairing' : stored1 < found ? 'ERROR' : 'Leaked';
    ctx.log(`${label} cluster ${i} refcount=${stored1} reference=${found}`);
    if (kind && (await stored.set(i, found))) {
      changed = true;
      if (kind === 'leak') ctx.res.leaksFixed++;
      else ctx.res.corruptionsFixed++;
      continue;
    }
    if (stored1 < found) ctx.res.corruptions++;
    else ctx.res.leaks++;
  }
  if (changed) {
    try {
      await stored.writeBack();
      await ctx.file.flush();
    } catch (err) {
      ctx.ioFailure(err, 'Could not write refcount blocks');
    }
  }
  return out;
}

/** check_oflag_copied: the COPIED flag of every active L1 and L2 entry must say "refcount is 1". */
export async function checkOflagCopied(
  ctx: CheckContext,
  stored: StoredRefcounts,
  walk: MetadataWalk,
  fix: { leaks: boolean; errors: boolean },
): Promise<void> {
  const r = ctx.res;
  const repair = fix.errors || (fix.leaks && r.checkErrors === 0 && r.corruptions === 0 && r.leaks === 0);
  const g = ctx.g;
  const cs = ctx.cs;
  const l1 = walk.activeL1;
  const refcountOf = (offset: number): number | undefined | Promise<number | undefined> => {
    const cluster = Math.floor(offset / cs);
    const now = stored.peek(cluster);
    if (now !== undefined) return now instanceof RefcountReadError ? undefined : now;
    return stored.get(cluster).then((v) => (v instanceof RefcountReadError ? undefined : v));
  };
  let wrote = false;
  const judged = new Map<number, { lines: string[]; corruptions: number }>();
  try {
    for (let i = 0; i < l1.length / 8; i++) {
      const high = l1.readUInt32BE(i * 8);
      const low = l1.readUInt32BE(i * 8 + 4);
      const offHigh = high & 0xffffff;
      const offLow = (low & 0xfffffe00) >>> 0;
      if (offHigh === 0 && offLow === 0) continue;
      const l2 = offHigh * TWO_POW_32 + offLow;
      const aligned = l2 - (l2 % cs);
      const refcount = await refcountOf(aligned);
      if (refcount === undefined) continue;
      const copied = (high & COPIED_HIGH) !== 0;
      if ((refcount === 1) !== copied) {
        r.corruptions++;
        ctx.log(
          `${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED L2 cluster: l1_index=${i} ` +
            `l1_entry=${bare(high, low)} refcount=${refcount}`,
        );
        if (repair) {
          const entry = Buffer.alloc(8);
          entry.writeUInt32BE((refcount === 1 ? high | COPIED_HIGH : high & ~COPIED_HIGH) >>> 0, 0);
          entry.writeUInt32BE(low, 4);
          const at = walk.activeL1Offset + i * 8;
          if (ctx.overlap(at, 8, 'active L1 table') !== undefined) {
            ctx.log('ERROR: Overlap check failed');
            r.checkErrors++;
            throw new CheckAbort('Input/output error');
          }
          await ctx.file.write(at, entry);
          entry.copy(l1, i * 8);
          wrote = true;
          r.corruptions--;
          r.corruptionsFixed++;
        }
      }
      if (offHigh > 0x1fffff || ctx.inFile(aligned, cs) === 0) continue; // reads as zeros: nothing to judge
      // A table named again is judged as before (after a repair it has nothing left to report).
      const seen = judged.get(aligned);
      if (seen) {
        for (const line of seen.lines) ctx.log(line);
        r.corruptions += seen.corruptions;
        continue;
      }
      const before = r.corruptions;
      ctx.startCapture();
      const table = await ctx.readAt(aligned, cs);
      let dirty = 0;
      for (let j = 0; j < g.l2Entries; j++) {
        const base = j * g.l2EntrySize;
        const eh = table.readUInt32BE(base);
        const el = table.readUInt32BE(base + 4);
        if ((eh & 0x40000000) !== 0) continue; // compressed
        const zero = !g.extendedL2 && (el & 1) !== 0;
        const dh = eh & 0xffffff;
        const dl = (el & 0xfffffe00) >>> 0;
        const hasOffset = dh !== 0 || dl !== 0;
        const ecopied = (eh & COPIED_HIGH) !== 0;
        if (!hasOffset && !(ctx.hasDataFile && ecopied && !zero)) continue; // unallocated or zero
        let refc = ctx.hasDataFile ? 1 : refcountOf(dh * TWO_POW_32 + dl);
        if (refc instanceof Promise) refc = await refc;
        if (refc === undefined) continue;
        if ((refc === 1) === ecopied) continue;
        r.corruptions++;
        ctx.log(
          `${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED data cluster: l2_entry=${bare(eh, el)} refcount=${refc}`,
        );
        if (repair) {
          table.writeUInt32BE((refc === 1 ? eh | COPIED_HIGH : eh & ~COPIED_HIGH) >>> 0, base);
          dirty++;
        }
      }
      if (dirty > 0) {
        if (ctx.overlap(aligned, cs, 'l2') !== undefined) {
          ctx.log('ERROR: Could not write L2 table; metadata overlap check failed: Input/output error');
          r.checkErrors++;
          throw new CheckAbort('Input/output error');
        }
        await ctx.file.write(aligned, table);
        wrote = true;
        r.corruptions -= dirty;
        r.corruptionsFixed += dirty;
      }
      const captured = ctx.stopCapture();
      judged.set(
        aligned,
        dirty > 0 ? { lines: [], corruptions: 0 } : { lines: captured.lines, corruptions: r.corruptions - before },
      );
    }
    if (wrote) await ctx.file.flush();
  } catch (err) {
    if (err instanceof CheckAbort) throw err;
    ctx.ioFailure(err, 'Could not write L2 table');
  }
}

/**
 * Realigns the unaligned data cluster offsets the walk found (with -r all), once every reference
 * is counted: to whichever of the two clusters the offset touches is allocated and referenced by
 * this entry alone, when exactly one is; the other cluster loses this entry's reference. The
 * chosen cluster's refcount is already at least 1, so the entry is written at once (R1 in
 * docs/architecture.md).
 */
export async function resolveRealigns(ctx: CheckContext, stored: StoredRefcounts, walk: MetadataWalk): Promise<void> {
  const cs = ctx.cs;
  const usable = async (c: number): Promise<boolean> => {
    if (c === 0 || ctx.inFile(c, cs) !== cs || ctx.refs.get(c / cs) !== 1) return false;
    if (ctx.overlap(c, cs, 'l2') !== undefined) return false;
    const refcount = await stored.get(c / cs);
    return !(refcount instanceof RefcountReadError) && refcount >= 1;
  };
  for (const r of walk.realigns.values()) {
    const down = r.offset - (r.offset % cs);
    const okDown = await usable(down);
    const okUp = await usable(down + cs);
    if (okDown === okUp) continue; // neither, or no telling which
    const chosen = okDown ? down : down + cs;
    const other = (okDown ? down + cs : down) / cs;
    const data = realignedEntry(ctx.g, r.w, chosen);
    if (!data) continue;
    await walk.write(r.at, data, 'l2');
    if (other < ctx.refs.length) ctx.refs.set(other, Math.max(0, ctx.refs.get(other) - 1));
    ctx.log(`Repairing offset=${r.hex}: the data cluster is now the one at 0x${chosen.toString(16)}`);
    ctx.res.corruptions--;
    ctx.res.corruptionsFixed++;
  }
  walk.realigns.clear();
}
