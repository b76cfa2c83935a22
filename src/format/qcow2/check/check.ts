/**
 * `check` for qcow2, on the host file itself with the codecs, not through the engine: it works
 * on images the engine refuses (dirty, marked corrupt, broken). It follows QEMU 7.2's
 * qcow2_co_check_locked: the snapshot table, then qcow2_check_refcounts (count every reference
 * the metadata makes, compare with the stored refcounts, repair, or rebuild the refcount
 * structure), then the COPIED flags; with a repair that leaves no corruption, the dirty and
 * corrupt bits are cleared. Messages are QEMU's, one line each.
 *
 * Where vdisk differs from QEMU 7.2 (each difference repairs more, or refuses to make an image
 * worse): new refcount structures go after the end of the file instead of into free clusters; a
 * refcount block past the end of the file is rebuilt rather than the file grown to reach it;
 * unaligned offsets count (and with -r all are repaired to) the cluster they lie in; entries
 * naming clusters past the end of the file are repaired with -r all (see metadata-walk.ts); the
 * corrupt bit is never set by a check. Incomplete snapshot table entries and bitmap directories
 * are reported, not rewritten.
 */
import type { BlockDriver } from '../../../block/driver.js';
import { VdiskError } from '../../../block/errors.js';
import { writeU64 } from '../../../util/u64.js';
import type { CheckOptions, CheckResult } from '../../format.js';
import {
  HEADER,
  INCOMPAT_CORRUPT,
  INCOMPAT_DIRTY,
  INT64_MAX_APPROX,
  L1E_SIZE,
  MAX_L1_SIZE_BYTES,
  MAX_SNAPSHOTS,
  MAX_SNAPSHOTS_SIZE,
  SNAPSHOT_HEADER_SIZE,
} from '../codec/constants.js';
import { geometryOf } from '../codec/geometry.js';
import { decodeHeader, peekClusterBits } from '../codec/header.js';
import { decodeHeaderExtensions, type Qcow2Extensions } from '../codec/header-extensions.js';
import { decodeSnapshotTable, type Qcow2Snapshot } from '../codec/snapshot-table.js';
import { countBitmaps } from './bitmaps.js';
import { CheckAbort, CheckContext, zeroCounts } from './context.js';
import { MetadataWalk } from './metadata-walk.js';
import { rebuildRefcountStructure } from './rebuild-refcounts.js';
import type { ReferenceCounts } from './reference-counts.js';
import { checkOflagCopied, checkRefblocks, compareRefcounts, resolveRealigns } from './repair.js';
import { StoredRefcounts } from './stored-refcounts.js';

export type { CheckCounts, CheckOptions, CheckResult, RepairMode } from '../../format.js';

const KEPT_MESSAGES = 10000;

interface Layout {
  size: number;
  l1Offset: number;
  l1Size: number;
  reftableOffset: number;
  reftableClusters: number;
  snapshots: Qcow2Snapshot[];
  snapshotsOffset: number;
  snapshotsSize: number;
  extensions: Qcow2Extensions;
}

/**
 * Checks (and with `repair`, repairs) the qcow2 image in `file`. Throws a VdiskError when the
 * header cannot be read as qcow2 (the image could not be opened); every other problem is in the
 * result.
 */
export async function checkQcow2(file: BlockDriver, options: CheckOptions = {}): Promise<CheckResult> {
  if (options.repair && file.readOnly) {
    throw new VdiskError('EROFS', 'Repairing an image needs it opened read-write');
  }
  const fileLength = file.length();
  const head = Buffer.alloc(Math.min(fileLength, 4096));
  await file.read(0, head);
  const clusterSize = 2 ** peekClusterBits(head);
  const cluster0 = Buffer.alloc(clusterSize);
  await file.read(0, cluster0.subarray(0, Math.min(clusterSize, fileLength)));
  const header = decodeHeader(cluster0, { check: true });
  const extensions = decodeHeaderExtensions(cluster0, header);
  const g = geometryOf(header);

  const result: CheckResult = { ...zeroCounts(), messages: [], messagesDropped: 0 };
  const log = (line: string) => {
    options.onMessage?.(line);
    if (result.messages.length < KEPT_MESSAGES) result.messages.push(line);
    else result.messagesDropped++;
  };
  let ctx: CheckContext;
  try {
    ctx = new CheckContext({
      file,
      header,
      geometry: g,
      repair: options.repair,
      hasBacking: extensions.backingFile !== undefined,
      log,
    });
  } catch (err) {
    result.checkErrors++;
    result.failure = err instanceof VdiskError ? 'File too large' : String(err);
    return result;
  }
  if (extensions.inconsistentBitmaps && !options.noOpenWarnings) {
    log('warning: a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent');
    log("Some clusters may be leaked, run 'vdisk check -r' on the image file to fix.");
  }
  try {
    const layout = await readSnapshotTable(ctx, extensions);
    await checkRefcounts(ctx, layout);
    if (ctx.fixLeaks && ctx.res.checkErrors === 0 && ctx.res.corruptions === 0) await markClean(ctx);
  } catch (err) {
    if (err instanceof CheckAbort) result.failure = err.reason;
    else if (err instanceof VdiskError) result.failure = err.message;
    else throw err;
  }
  Object.assign(result, ctx.res, { messages: result.messages, messagesDropped: result.messagesDropped });
  if (result.failure !== undefined) result.failure ||= 'Input/output error';
  return result;
}

/** qcow2_check_read_snapshot_table: the snapshot table as the header names it. */
async function readSnapshotTable(ctx: CheckContext, extensions: Qcow2Extensions): Promise<Layout> {
  const h = ctx.header;
  const layout: Layout = {
    size: h.size,
    l1Offset: h.l1TableOffset,
    l1Size: h.l1Size,
    reftableOffset: h.refcountTableOffset,
    reftableClusters: h.refcountTableClusters,
    snapshots: [],
    snapshotsOffset: h.snapshotsOffset,
    snapshotsSize: 0,
    extensions,
  };
  const nb = h.nbSnapshots;
  if (nb > MAX_SNAPSHOTS) {
    ctx.res.checkErrors++;
    ctx.log('ERROR snapshot table too large');
    throw new CheckAbort('File too large');
  }
  if (INT64_MAX_APPROX - nb * SNAPSHOT_HEADER_SIZE <= h.snapshotsOffset || h.snapshotsOffset % ctx.cs !== 0) {
    ctx.res.checkErrors++;
    ctx.log('ERROR snapshot table offset invalid');
    throw new CheckAbort('Invalid argument');
  }
  if (nb === 0) return layout;
  try {
    const buf = await ctx.readAt(h.snapshotsOffset, ctx.inFile(h.snapshotsOffset, MAX_SNAPSHOTS_SIZE));
    const decoded = decodeSnapshotTable(buf, nb, { version: h.version, imageSize: h.size });
    layout.snapshots = decoded.snapshots;
    layout.snapshotsSize = decoded.size;
    for (const i of decoded.incomplete) {
      ctx.res.corruptions++;
      ctx.log(`ERROR snapshot table entry ${i} is incomplete`);
    }
  } catch (err) {
    ctx.res.checkErrors++;
    const message = err instanceof Error ? err.message : String(err);
    ctx.log(`ERROR failed to read the snapshot table: ${message}`);
    throw new CheckAbort(message);
  }
  return layout;
}

/** What a repair must never write over: QEMU's overlap-check metadata. */
function claimMetadata(ctx: CheckContext, layout: Layout, stored: StoredRefcounts): void {
  ctx.claim(layout.l1Offset, layout.l1Size * L1E_SIZE, 'active L1 table');
  ctx.claim(layout.reftableOffset, layout.reftableClusters * ctx.cs, 'refcount table');
  ctx.claim(layout.snapshotsOffset, layout.snapshotsSize, 'snapshot table');
  for (const s of layout.snapshots) ctx.claim(s.l1TableOffset, s.l1Size * L1E_SIZE, 'inactive L1 table');
  const bitmaps = layout.extensions.bitmaps;
  if (bitmaps) ctx.claim(bitmaps.directoryOffset, bitmaps.directorySize, 'bitmap directory');
  for (let i = 0; i < stored.entries; i++) {
    const p = stored.pointer(i);
    if (p.kind === 'block') ctx.claimRefblock(p.offset);
  }
}

/** calculate_refcounts: counts every reference; says whether the refcount structure must be rebuilt. */
async function calculate(
  ctx: CheckContext,
  layout: Layout,
  stored: StoredRefcounts,
): Promise<{ walk: MetadataWalk; rebuild: boolean }> {
  ctx.inc(0, ctx.cs);
  const walk = new MetadataWalk(ctx, stored);
  await walk.l1Table(layout.l1Offset, layout.l1Size, true);
  if (ctx.hasDataFile && layout.snapshots.length > 0) {
    ctx.log(`ERROR ${layout.snapshots.length} snapshots in image with data file`);
    ctx.res.corruptions++;
  }
  for (const s of layout.snapshots) {
    if (s.l1TableOffset % ctx.cs !== 0) {
      ctx.log(
        `ERROR snapshot ${s.id} (${s.name}) l1_offset=${s.l1TableOffset === 0 ? '0' : `0x${s.l1TableOffset.toString(16)}`}: ` +
          'L1 table is not cluster aligned; snapshot table entry corrupted',
      );
      ctx.res.corruptions++;
      continue;
    }
    if (s.l1Size > MAX_L1_SIZE_BYTES / L1E_SIZE) {
      ctx.log(
        `ERROR snapshot ${s.id} (${s.name}) l1_size=0x${s.l1Size.toString(16)}: ` +
          'L1 table is too large; snapshot table entry corrupted',
      );
      ctx.res.corruptions++;
      continue;
    }
    await walk.l1Table(s.l1TableOffset, s.l1Size, false);
  }
  await walk.finish();
  ctx.inc(layout.snapshotsOffset, layout.snapshotsSize);
  ctx.inc(layout.reftableOffset, layout.reftableClusters * ctx.cs);
  if (layout.extensions.bitmaps) {
    await countBitmaps(ctx, layout.extensions.bitmaps, layout.size, { bytes: ctx.fileLength });
  }
  const rebuild = checkRefblocks(ctx, stored);
  if (ctx.fixErrors) await resolveRealigns(ctx, stored, walk);
  return { walk, rebuild };
}

/** qcow2_check_refcounts, then check_oflag_copied. */
async function checkRefcounts(ctx: CheckContext, layout: Layout): Promise<void> {
  const fix = { leaks: ctx.fixLeaks, errors: ctx.fixErrors };
  ctx.res.totalClusters = Math.ceil(layout.size / ctx.cs);
  const reftable = await ctx.readAt(layout.reftableOffset, layout.reftableClusters * ctx.cs);
  let stored = new StoredRefcounts(ctx, reftable);
  claimMetadata(ctx, layout, stored);

  const first = await calculate(ctx, layout, stored);
  let walk = first.walk;
  const before = { ...ctx.res };
  let cmp = await compareRefcounts(ctx, stored, { leaks: false, errors: false });
  const rebuild = first.rebuild || cmp.rebuild;

  if (rebuild && fix.errors) {
    const old = { ...ctx.res };
    ctx.log('Rebuilding refcount structure');
    let rebuilt: Awaited<ReturnType<typeof rebuildRefcountStructure>>;
    try {
      rebuilt = await rebuildRefcountStructure(ctx);
    } catch (err) {
      ctx.ioFailure(err, 'Could not rebuild the refcount structure');
    }
    stored = new StoredRefcounts(ctx, rebuilt.table);
    ctx.claim(rebuilt.offset, rebuilt.clusters * ctx.cs, 'refcount table');
    for (let i = 0; i < stored.entries; i++) {
      const p = stored.pointer(i);
      if (p.kind === 'block') ctx.claimRefblock(p.offset);
    }
    layout.reftableOffset = rebuilt.offset;
    layout.reftableClusters = rebuilt.clusters;
    // The old structure's refcounts could not be read; the new one's can.
    ctx.res.checkErrors -= cmp.readErrors;
    ctx.res.corruptions = 0;
    ctx.res.leaks = 0;
    ctx.res.allocatedClusters = 0;
    ctx.res.fragmentedClusters = 0;
    ctx.res.compressedClusters = 0;
    ctx.refs.clear();
    ctx.fixLeaks = false;
    ctx.fixErrors = false;
    try {
      walk = (await calculate(ctx, layout, stored)).walk;
    } finally {
      ctx.fixLeaks = fix.leaks;
      ctx.fixErrors = fix.errors;
    }
    const saved = ctx.res;
    ctx.res = zeroCounts();
    cmp = await compareRefcounts(ctx, stored, { leaks: true, errors: false });
    if (cmp.rebuild) ctx.log('ERROR rebuilt refcount structure is still broken');
    const freshLeaks = ctx.res.leaks;
    ctx.res = saved;
    if (ctx.res.corruptions < old.corruptions) ctx.res.corruptionsFixed += old.corruptions - ctx.res.corruptions;
    if (ctx.res.leaks < old.leaks) ctx.res.leaksFixed += old.leaks - ctx.res.leaks;
    ctx.res.leaks += freshLeaks;
  } else if (fix.leaks) {
    if (rebuild) {
      ctx.log('ERROR need to rebuild refcount structures');
      ctx.res.checkErrors++;
      throw new CheckAbort('Input/output error');
    }
    if (ctx.res.leaks > 0 || ctx.res.corruptions > 0) {
      ctx.res = { ...before };
      cmp = await compareRefcounts(ctx, stored, fix);
    }
  }
  await checkOflagCopied(ctx, stored, walk, fix);
  ctx.res.imageEndOffset = (cmp.highest + 1) * ctx.cs;
}

/** qcow2_mark_clean and qcow2_mark_consistent: one header write, after everything else is durable. */
async function markClean(ctx: CheckContext): Promise<void> {
  const h = ctx.header;
  const bits = h.incompatibleFeatures & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT);
  if (h.version < 3 || bits === 0) return;
  const value = h.incompatibleFeatures & ~bits;
  const buf = Buffer.alloc(8);
  writeU64(buf, 0, value, 'incompatible features');
  try {
    await ctx.file.flush();
    await ctx.writeSync(HEADER.incompatibleFeatures, buf);
  } catch (err) {
    ctx.ioFailure(err, 'Could not clear the dirty and corrupt bits');
  }
  h.incompatibleFeatures = value;
}

/** Every reference an image's metadata makes, as check counts them, and where its refcount structure lies. */
export interface ReferenceCensus {
  refs: ReferenceCounts;
  /** Host offsets of the refcount table's clusters and of every refcount block. */
  refcountStructure: number[];
}

/**
 * Counts the references of a consistent image without changing anything (for a new refcount
 * structure); an image with corruptions or check errors is refused.
 */
export async function countReferences(file: BlockDriver): Promise<ReferenceCensus> {
  const cluster0 = Buffer.alloc(2 ** peekClusterBits(await readHead(file)));
  await file.read(0, cluster0.subarray(0, Math.min(cluster0.length, file.length())));
  const header = decodeHeader(cluster0);
  const extensions = decodeHeaderExtensions(cluster0, header);
  const ctx = new CheckContext({
    file,
    header,
    geometry: geometryOf(header),
    repair: undefined,
    hasBacking: extensions.backingFile !== undefined,
    log: () => {},
  });
  try {
    const layout = await readSnapshotTable(ctx, extensions);
    const reftable = await ctx.readAt(layout.reftableOffset, layout.reftableClusters * ctx.cs);
    const stored = new StoredRefcounts(ctx, reftable);
    claimMetadata(ctx, layout, stored);
    const { rebuild } = await calculate(ctx, layout, stored);
    const cmp = await compareRefcounts(ctx, stored, { leaks: false, errors: false });
    if (rebuild || cmp.rebuild || ctx.res.corruptions > 0 || ctx.res.checkErrors > 0) throw new CheckAbort('');
    const refcountStructure: number[] = [];
    for (let i = 0; i < layout.reftableClusters; i++) refcountStructure.push(layout.reftableOffset + i * ctx.cs);
    for (let i = 0; i < stored.entries; i++) {
      const p = stored.pointer(i);
      if (p.kind === 'block') refcountStructure.push(p.offset);
    }
    return { refs: ctx.refs, refcountStructure };
  } catch (err) {
    if (!(err instanceof CheckAbort)) throw err;
    throw new VdiskError('ECORRUPT', 'The image has errors; repair it first (vdisk check -r all)');
  }
}

async function readHead(file: BlockDriver): Promise<Buffer> {
  const head = Buffer.alloc(Math.min(file.length(), 4096));
  await file.read(0, head);
  return head;
}
