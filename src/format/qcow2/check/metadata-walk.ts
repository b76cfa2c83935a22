/**
 * The metadata walk of `check` (QEMU's check_refcounts_l1 and check_refcounts_l2): every L1
 * entry of the active and the snapshot tables, every entry of the L2 tables they name, counted
 * into the in-memory refcounts with QEMU's messages.
 *
 * Bounded by the file: what lies past its end reads as zeros and is never read; the L1 tables
 * read add up to at most the file's size (plus one maximal table); each L2 table is read and
 * judged once, however many L1 entries name it (the others repeat its messages and add their
 * references in one pass at the end), so hostile tables that all name the same clusters cost
 * no more than honest ones.
 *
 * An unaligned offset counts both clusters it touches, as in QEMU. For an unaligned L2 table
 * offset vdisk then reads the table from whichever of the two clusters is allocated and not
 * other metadata (QEMU reads at the unaligned offset, which is garbage), and with -r all points
 * the L1 entry there. With -r all vdisk also repairs what QEMU 7.2 leaves broken: an unaligned
 * data cluster offset is realigned when exactly one of its two clusters is allocated and used by
 * nothing else; an L2 entry naming a cluster past the end of the file becomes a zero cluster (it
 * read as zeros anyway); an L1 entry naming an L2 table past the end is cleared (that table read
 * as all unallocated); a compressed entry's COPIED bit is cleared. Each of these repairs names
 * only clusters whose refcount is already at least 1, so it is written at once.
 */
import { hex64, TWO_POW_32 } from '../../../util/u64.js';
import { MAX_L1_SIZE_BYTES } from '../codec/constants.js';
import { decodeL1, encodeL1 } from '../codec/l1-entry.js';
import { decodeL2, type L2Entry } from '../codec/l2-entry.js';
import { CheckAbort, type CheckContext, hexBare } from './context.js';
import {
  bare,
  COMPRESSED_HIGH,
  COPIED_HIGH,
  canReadAsZeros,
  compressedParts,
  OFFSET_HIGH,
  plausibleL1,
  plausibleL2,
  SAFE_HIGH,
  type Words,
  zeroedEntry,
} from './entry-words.js';
import { RefcountReadError, type StoredRefcounts } from './stored-refcounts.js';

/** An L2 entry with an unaligned data cluster offset, to realign once every reference is counted. */
export interface Realign {
  /** File offset of the entry. */
  at: number;
  w: Words;
  offset: number;
  hex: string;
}

interface Stats {
  allocated: number;
  fragmented: number;
  compressed: number;
}

interface Memo {
  lines: string[];
  dropped: number;
  corruptions: number;
  stats: Stats;
  /** Further L1 entries that name this table, whose references are added by finish(). */
  extra: number;
}

type Mode = { count: false; frag: boolean; active: boolean } | { count: true; weight: number };

interface TableState {
  table: Buffer;
  offset: number;
  mode: Mode;
  stats: Stats;
  nextContiguous: number;
  /** An entry of this table was rewritten: its judgement cannot be reused. */
  changed: boolean;
}

/** Unaligned data cluster offsets considered for realigning in one check (more are only reported). */
const MAX_REALIGNS = 65536;

export class MetadataWalk {
  readonly #ctx: CheckContext;
  readonly #stored: StoredRefcounts;
  readonly #memo = new Map<number, Memo>();
  /** Unaligned data cluster offsets found (with -r all), by entry offset: repair.ts realigns them. */
  readonly realigns = new Map<number, Realign>();
  /** The active L1 table as the walk found it (entries cleared by repairs are zero). */
  activeL1: Buffer = Buffer.alloc(0);
  activeL1Offset = 0;
  #l1Budget: number;

  constructor(ctx: CheckContext, stored: StoredRefcounts) {
    this.#ctx = ctx;
    this.#stored = stored;
    this.#l1Budget = ctx.fileLength + MAX_L1_SIZE_BYTES;
  }

  /** check_refcounts_l1 for the active table (with allocation statistics) or a snapshot's. */
  async l1Table(offset: number, entries: number, active: boolean): Promise<void> {
    const ctx = this.#ctx;
    if (active) {
      this.activeL1 = Buffer.alloc(entries * 8);
      this.activeL1Offset = offset;
    }
    if (entries === 0) return;
    const bytes = entries * 8;
    ctx.inc(offset, bytes);
    const inFile = ctx.inFile(offset, bytes);
    this.#l1Budget -= inFile;
    if (this.#l1Budget < 0) {
      ctx.res.checkErrors++;
      ctx.log('ERROR: the L1 tables add up to more than the image file holds');
      throw new CheckAbort('File too large');
    }
    const table = active ? this.activeL1 : Buffer.alloc(inFile - (inFile % 8));
    if (inFile >= 8) {
      try {
        await ctx.file.read(offset, table.subarray(0, inFile - (inFile % 8)));
      } catch (err) {
        ctx.ioFailure(err, 'I/O error in check_refcounts_l1');
      }
    }
    const mode: Mode = { count: false, frag: active, active };
    const n = Math.floor(inFile / 8);
    for (let i = 0; i < n; i++) {
      if (table.readUInt32BE(i * 8) === 0 && table.readUInt32BE(i * 8 + 4) === 0) continue;
      await this.#l1Entry(table, offset, i, mode);
    }
  }

  async #l1Entry(table: Buffer, l1Offset: number, i: number, mode: Mode & { count: false }): Promise<void> {
    const ctx = this.#ctx;
    const g = ctx.g;
    const cs = ctx.cs;
    const high = table.readUInt32BE(i * 8);
    const low = table.readUInt32BE(i * 8 + 4);
    const copied = (high & COPIED_HIGH) !== 0;
    const own = mode.active ? 'active L1 table' : 'inactive L1 table';
    let l2: number | undefined;
    let hugeHex: string | undefined;
    if (plausibleL1(high, low, cs)) {
      try {
        l2 = decodeL1(table, i, g).l2Offset;
      } catch {
        l2 = undefined;
      }
    }
    if (l2 === undefined) {
      if ((high & 0x7f000000) !== 0 || (low & 0x1ff) !== 0) {
        ctx.log(`ERROR found L1 entry with reserved bits set: ${bare(high, low)}`);
        ctx.res.corruptions++;
      }
      const offHigh = high & OFFSET_HIGH;
      const offLow = (low & 0xfffffe00) >>> 0;
      if (offHigh > SAFE_HIGH) hugeHex = hex64(offHigh, offLow);
      else l2 = offHigh * TWO_POW_32 + offLow;
    }
    if (l2 === 0) return; // only flag bits: nothing is named
    const clear = async (): Promise<void> => {
      ctx.log(
        `Repairing L1 entry ${i}: its L2 table at ${hugeHex ?? `0x${hexBare(l2!)}`} lies past the end of the file; ` +
          'the entry is cleared (the table read as unallocated)',
      );
      await this.write(l1Offset + i * 8, Buffer.alloc(8), own);
      table.fill(0, i * 8, i * 8 + 8);
      ctx.res.corruptionsFixed++;
    };
    if (l2 === undefined) {
      if (ctx.fixErrors) return clear();
      return ctx.reportBeyondEnd(hugeHex!, cs);
    }
    let target = l2;
    if (l2 % cs !== 0) {
      const chosen = await this.#tableCandidate(l2);
      const fixing = ctx.fixErrors && chosen !== undefined;
      ctx.res.corruptions++;
      ctx.log(
        `${fixing ? 'Repairing' : 'ERROR'} l2_offset=${hexBare(l2)}: Table is not cluster aligned; L1 entry corrupted`,
      );
      if (chosen !== undefined) {
        if (fixing) {
          const data = Buffer.alloc(8);
          encodeL1(data, 0, { l2Offset: chosen, copied }, g);
          await this.write(l1Offset + i * 8, data, own);
          data.copy(table, i * 8);
          ctx.res.corruptions--;
          ctx.res.corruptionsFixed++;
        }
        target = chosen;
      }
    }
    if (ctx.beyondEnd(target, cs)) {
      if (ctx.fixErrors) return clear();
      ctx.inc(target, cs); // reports it
      return; // the table reads as zeros: nothing in it to count
    }
    ctx.inc(target, cs);
    await this.#l2Table(target, mode);
  }

  /**
   * Where the L2 table of an unaligned L1 entry most likely is: the first of the two clusters
   * the offset touches that is in the file, allocated, and not other metadata.
   */
  async #tableCandidate(l2: number): Promise<number | undefined> {
    const ctx = this.#ctx;
    const down = l2 - (l2 % ctx.cs);
    for (const c of [down, down + ctx.cs]) {
      if (c === 0 || ctx.inFile(c, ctx.cs) !== ctx.cs || ctx.overlap(c, ctx.cs, 'l2') !== undefined) continue;
      const refcount = await this.#stored.get(c / ctx.cs);
      if (!(refcount instanceof RefcountReadError) && refcount >= 1) return c;
    }
    return undefined;
  }

  /** check_refcounts_l2, or a repeat of its judgement for a table seen before. */
  async #l2Table(offset: number, mode: Mode): Promise<void> {
    const ctx = this.#ctx;
    if (!mode.count) {
      const memo = this.#memo.get(offset);
      if (memo) {
        for (const line of memo.lines) ctx.log(line);
        if (memo.dropped > 0) ctx.log(`(and ${memo.dropped} more messages about the L2 table at 0x${hexBare(offset)})`);
        ctx.res.corruptions += memo.corruptions;
        if (mode.frag) this.#addStats(memo.stats);
        memo.extra++;
        return;
      }
    }
    const table = await ctx
      .readAt(offset, ctx.cs)
      .catch((err) => ctx.ioFailure(err, 'I/O error in check_refcounts_l2'));
    const s: TableState = {
      table,
      offset,
      mode,
      stats: { allocated: 0, fragmented: 0, compressed: 0 },
      nextContiguous: 0,
      changed: false,
    };
    const before = ctx.res.corruptions;
    if (!mode.count) ctx.startCapture();
    try {
      for (let i = 0; i < ctx.g.l2Entries; i++) {
        const pending = this.#l2Entry(s, i);
        if (pending) await pending;
      }
    } finally {
      if (!mode.count) {
        const captured = ctx.stopCapture();
        if (mode.frag) this.#addStats(s.stats);
        if (!s.changed) {
          this.#memo.set(offset, { ...captured, corruptions: ctx.res.corruptions - before, stats: s.stats, extra: 0 });
        }
      }
    }
  }

  /** Adds the references of tables named more than once (each table is read once more). */
  async finish(): Promise<void> {
    for (const [offset, memo] of this.#memo) {
      if (memo.extra > 0) await this.#l2Table(offset, { count: true, weight: memo.extra });
    }
    this.#memo.clear();
  }

  #addStats(stats: Stats): void {
    const r = this.#ctx.res;
    r.allocatedClusters += stats.allocated;
    r.fragmentedClusters += stats.fragmented;
    r.compressedClusters += stats.compressed;
  }

  /** A message and a corruption, unless this pass only counts references. */
  #report(s: TableState, line: string): void {
    if (s.mode.count) return;
    this.#ctx.log(line);
    this.#ctx.res.corruptions++;
  }

  /** Judges entry `i`; a promise only when it repairs something. */
  #l2Entry(s: TableState, i: number): Promise<void> | undefined {
    const ctx = this.#ctx;
    const g = ctx.g;
    const base = i * g.l2EntrySize;
    const high = s.table.readUInt32BE(base);
    const low = s.table.readUInt32BE(base + 4);
    const zeroW = g.extendedL2 ? s.table.readUInt32BE(base + 8) : 0;
    const allocW = g.extendedL2 ? s.table.readUInt32BE(base + 12) : 0;
    if (high === 0 && low === 0 && zeroW === 0 && allocW === 0) return undefined;
    const w = { high, low, zeroW, allocW };
    let e: L2Entry | undefined;
    try {
      e = plausibleL2(w, g.clusterBits, g.extendedL2) ? decodeL2(s.table, i, g) : undefined;
    } catch {
      e = undefined;
    }
    if (e) {
      // What the codec accepts is valid: only counting and the end of the file remain.
      if (e.kind === 'unallocated' || (e.kind === 'zero' && e.host === 0)) return undefined;
      if (e.kind === 'compressed') return this.#compressed(s, i, w, e.host, undefined, e.length);
      return this.#cluster(s, i, w, e.host, undefined, e.kind === 'zero');
    }
    // The codec refused the entry: judge it as QEMU does, message by message.
    const compressed = (high & COMPRESSED_HIGH) !== 0;
    if (!compressed && ((high & 0x3f000000) !== 0 || (low & 0x1fe) !== 0)) {
      this.#report(s, `ERROR found l2 entry with reserved bits set: ${bare(high, low)}`);
    }
    if (compressed) return this.#lenientCompressed(s, i, w);
    const offHigh = high & OFFSET_HIGH;
    const offLow = (low & 0xfffffe00) >>> 0;
    const zeroFlag = !g.extendedL2 && (low & 1) !== 0;
    const copied = (high & COPIED_HIGH) !== 0;
    if (offHigh === 0 && offLow === 0 && !(ctx.hasDataFile && copied && !zeroFlag)) {
      if (!zeroFlag && allocW !== 0) {
        this.#report(s, 'ERROR: Unallocated cluster has non-zero subcluster allocation map');
      }
      return undefined;
    }
    const offset = offHigh > SAFE_HIGH ? undefined : offHigh * TWO_POW_32 + offLow;
    return this.#cluster(s, i, w, offset, bare(offHigh, offLow), zeroFlag);
  }

  /** A standard cluster (QCOW2_CLUSTER_NORMAL or ZERO_ALLOC). `offset` undefined: 2^53 or more. */
  #cluster(
    s: TableState,
    i: number,
    w: Words,
    offset: number | undefined,
    hexIn: string | undefined,
    zeroFlag: boolean,
  ): Promise<void> | undefined {
    const ctx = this.#ctx;
    const cs = ctx.cs;
    const hex = (): string => hexIn ?? offset!.toString(16);
    if (ctx.g.extendedL2 && (w.zeroW & w.allocW) !== 0) {
      this.#report(s, `ERROR offset=${hex()}: Allocated cluster has corrupted subcluster allocation bitmap`);
    }
    const fixing = ctx.fixErrors && !s.mode.count;
    if (fixing && !ctx.hasDataFile && (offset === undefined || ctx.beyondEnd(offset, cs)) && this.#canZero()) {
      return this.#zeroEntry(s, i, w).then(() => {
        ctx.log(
          `Repairing L2 entry pointing past the end of the file: offset 0x${hex()} size 0x${cs.toString(16)} ` +
            `(L2 table 0x${hexBare(s.offset)}, index ${i}); the cluster now reads as zeros`,
        );
        ctx.res.corruptionsFixed++;
      });
    }
    if (((w.low & 0xfffffe00) >>> 0) % cs !== 0) {
      const containsData = ctx.g.extendedL2 ? w.allocW !== 0 : !zeroFlag;
      if (!containsData) {
        this.#report(
          s,
          `${fixing ? 'Repairing' : 'ERROR'} offset=${hex()}: Preallocated cluster is not properly aligned; ` +
            'L2 entry corrupted.',
        );
        if (fixing && this.#canZero()) {
          return this.#zeroEntry(s, i, w).then(() => {
            ctx.res.corruptions--;
            ctx.res.corruptionsFixed++;
          });
        }
      } else {
        this.#report(s, `ERROR offset=${hex()}: Data cluster is not properly aligned; L2 entry corrupted.`);
        const at = s.offset + i * ctx.g.l2EntrySize;
        if (fixing && offset !== undefined && this.realigns.size < MAX_REALIGNS) {
          this.realigns.set(at, { at, w: { ...w }, offset, hex: hex() });
        }
      }
    }
    if (!s.mode.count) {
      s.stats.allocated++;
      const at = offset ?? Number.MAX_VALUE;
      if (s.nextContiguous !== 0 && at !== s.nextContiguous) s.stats.fragmented++;
      s.nextContiguous = at + cs;
    }
    if (ctx.hasDataFile) return undefined;
    if (offset === undefined) {
      if (!s.mode.count) ctx.reportBeyondEnd(`0x${hex()}`, cs);
      return undefined;
    }
    ctx.inc(offset, cs, s.mode.count ? s.mode.weight : 1, s.mode.count);
    return undefined;
  }

  #lenientCompressed(s: TableState, i: number, w: Words): Promise<void> | undefined {
    const g = this.#ctx.g;
    const { offset, hex, size } = compressedParts(w, g.clusterBits);
    if ((w.high & COPIED_HIGH) !== 0) {
      const fixing = this.#ctx.fixErrors && !s.mode.count && offset !== undefined;
      this.#report(s, `ERROR: coffset=0x${hex}: copied flag must never be set for compressed clusters`);
      if (fixing) {
        const data = Buffer.from(s.table.subarray(i * g.l2EntrySize, (i + 1) * g.l2EntrySize));
        data.writeUInt32BE((w.high & ~COPIED_HIGH) >>> 0, 0);
        return this.write(s.offset + i * g.l2EntrySize, data, 'l2').then(() => {
          data.copy(s.table, i * g.l2EntrySize);
          s.changed = true;
          this.#ctx.log(`Repairing coffset=0x${hex}: the copied flag is cleared`);
          this.#ctx.res.corruptions--;
          this.#ctx.res.corruptionsFixed++;
          return this.#compressed(s, i, w, offset, hex, size);
        });
      }
    }
    return this.#compressed(s, i, w, offset, hex, size);
  }

  /** A compressed cluster: it counts every host cluster its sectors touch. */
  #compressed(
    s: TableState,
    i: number,
    w: Words,
    offset: number | undefined,
    hexIn: string | undefined,
    size: number,
  ): Promise<void> | undefined {
    const ctx = this.#ctx;
    const hex = (): string => hexIn ?? offset!.toString(16);
    if (ctx.hasDataFile) {
      this.#report(s, `ERROR compressed cluster ${i} with data file, entry=0x${bare(w.high, w.low)}`);
      return undefined;
    }
    if (w.zeroW !== 0 || w.allocW !== 0) {
      this.#report(
        s,
        `ERROR compressed cluster ${i} with non-zero subcluster allocation bitmap, entry=0x${bare(w.high, w.low)}`,
      );
      return undefined;
    }
    const beyond = offset === undefined || ctx.beyondEnd(offset, size);
    if (beyond && ctx.fixErrors && !s.mode.count && this.#canZero()) {
      return this.#zeroEntry(s, i, w).then(() => {
        ctx.log(
          `Repairing compressed L2 entry pointing past the end of the file: offset 0x${hex()} ` +
            `size 0x${size.toString(16)} (L2 table 0x${hexBare(s.offset)}, index ${i}); the cluster now reads as zeros`,
        );
        ctx.res.corruptionsFixed++;
      });
    }
    if (offset === undefined) {
      if (!s.mode.count) ctx.reportBeyondEnd(`0x${hex()}`, size);
    } else {
      ctx.inc(offset, size, s.mode.count ? s.mode.weight : 1, s.mode.count);
    }
    if (!s.mode.count) {
      s.stats.allocated++;
      s.stats.compressed++;
      s.stats.fragmented++;
    }
    return undefined;
  }

  #canZero(): boolean {
    return canReadAsZeros(this.#ctx.g, this.#ctx.hasBacking);
  }

  /** QEMU's fix_l2_entry_by_zero: the entry reads as zeros from now on (written and flushed now). */
  async #zeroEntry(s: TableState, i: number, w: Words): Promise<void> {
    const g = this.#ctx.g;
    const data = zeroedEntry(g, w);
    await this.write(s.offset + i * g.l2EntrySize, data, 'l2');
    data.copy(s.table, i * g.l2EntrySize);
    s.changed = true;
    this.realigns.delete(s.offset + i * g.l2EntrySize);
  }

  /** An immediate metadata repair, refused (and the check stopped) where it would hit other metadata. */
  async write(offset: number, data: Buffer, own: string): Promise<void> {
    const ctx = this.#ctx;
    if (ctx.overlap(offset, data.length, own) !== undefined) {
      ctx.log('ERROR: Overlap check failed');
      ctx.res.checkErrors++;
      throw new CheckAbort('Input/output error');
    }
    try {
      await ctx.writeSync(offset, data);
    } catch (err) {
      ctx.ioFailure(err, 'Failed to overwrite a table entry');
    }
  }
}
