/**
 * Block status of a qcow2 image: what each guest range is (data at a host offset, zeros,
 * compressed, or unallocated and so whatever the backing image says), from mapping lookups.
 *
 * The work of one call is bounded whatever the image claims: a lookup covers one aligned chunk
 * of at most LOOKUP_SUBCLUSTERS subclusters (never more than one L2 table), so an L1 table that
 * names the same L2 table thousands of times costs one chunk per call, not a table per run.
 * Every run a lookup finds is kept (RunCache) and handed out, so walking an image pays for each
 * chunk once. Consecutive L1 entries without an L2 table are one run with no lookup at all.
 */
import type { BlockDriver, Extent } from '../../../block/driver.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import type { HostHoles, HostRun } from './host-holes.js';
import type { L2Tables } from './l2-tables.js';
import type { Mapping, Run } from './mapping.js';
import { RunCache, runIndexAt } from './run-cache.js';

/** Subclusters one lookup decodes at most (a quarter of a 64 KiB cluster's L2 table): about a millisecond. */
export const LOOKUP_SUBCLUSTERS = 2048;
/** Lookups kept: enough for a few callers walking different parts of the image at once. */
const KEPT_LOOKUPS = 16;

export interface BlockStatusDeps {
  file: BlockDriver;
  backing: BlockDriver | undefined;
  geometry: Qcow2Geometry;
  tables: L2Tables;
  mapping: Mapping;
  /** Holes in the host file under data clusters (images preallocated with metadata). */
  holes: HostHoles;
  /** The guest size now (it changes with resize). */
  size: () => number;
}

export class BlockStatus {
  readonly #d: BlockStatusDeps;
  /** Guest bytes of one lookup chunk: a whole number of clusters, dividing an L2 table's span. */
  readonly #chunk: number;
  readonly #kept = new RunCache(KEPT_LOOKUPS);

  constructor(deps: BlockStatusDeps) {
    this.#d = deps;
    const g = deps.geometry;
    const clusters = Math.max(1, Math.min(g.l2Entries, LOOKUP_SUBCLUSTERS / g.subclustersPerCluster));
    this.#chunk = clusters * g.clusterSize;
  }

  /** The longest run of one state from `offset`, at most `length` bytes. */
  async first(offset: number, length: number): Promise<Extent> {
    const empty = this.#emptyL1Run(offset, length);
    if (empty) return this.#resolve(empty);
    const { runs, index } = await this.#runsAt(offset);
    return this.#resolve(clip(runs[index]!, offset, offset + length));
  }

  /**
   * The extents from `offset` on, within `length`, that one lookup found (at least one). An
   * unallocated run over a backing image ends the answer: asking the backing image is a step
   * of its own.
   */
  async many(offset: number, length: number): Promise<Extent[]> {
    const end = offset + length;
    const empty = this.#emptyL1Run(offset, length);
    if (empty) return [await this.#resolve(empty)];
    const { runs, index } = await this.#runsAt(offset);
    const out: Extent[] = [];
    for (let i = index; i < runs.length && runs[i]!.offset < end; i++) {
      const whole = runs[i]!.offset >= offset && runs[i]!.offset + runs[i]!.length <= end;
      const run = whole ? runs[i]! : clip(runs[i]!, Math.max(offset, runs[i]!.offset), end);
      if (run.kind === 'unallocated' && this.#d.backing) {
        if (out.length === 0) out.push(await this.#resolve(run));
        break;
      }
      const inFile = run.kind === 'data' ? await this.#d.holes.at(run.host, run.length) : undefined;
      out.push(this.#extent(run, inFile));
      // The host file changes state inside the run: the rest of it is for the next call.
      if (inFile && inFile.length < run.length) break;
    }
    return out;
  }

  /**
   * Ranges whose L1 entries name no L2 table are unallocated as a whole: one run over all the
   * consecutive empty entries, without a lookup per entry (an empty 1 PiB image is one run).
   */
  #emptyL1Run(offset: number, length: number): Run | undefined {
    const { tables, geometry: g } = this.#d;
    let l1 = Math.floor(offset / g.l2Coverage);
    if (tables.l2Offset(l1) !== 0) return undefined;
    const last = Math.floor((offset + length - 1) / g.l2Coverage);
    while (l1 + 1 <= last && tables.l2Offset(l1 + 1) === 0) l1++;
    const end = Math.min(offset + length, (l1 + 1) * g.l2Coverage);
    return { kind: 'unallocated', offset, length: end - offset, host: 0, copied: false };
  }

  /** The runs of the chunk holding `offset` (kept, or looked up now), and the one holding `offset`. */
  async #runsAt(offset: number): Promise<{ runs: readonly Run[]; index: number }> {
    const tables = this.#d.tables;
    const generation = tables.generation;
    const kept = this.#kept.find(offset, generation);
    if (kept) {
      const index = runIndexAt(kept.runs, offset);
      if (index >= 0) return { runs: kept.runs, index };
    }
    const start = offset - (offset % this.#chunk);
    const end = Math.max(offset + 1, Math.min(start + this.#chunk, this.#d.size()));
    const runs = await this.#d.mapping.lookup(start, end - start);
    // A lookup that overlapped a change of the tables answers this call but is not kept.
    if (tables.generation === generation) this.#kept.add({ start, end, runs }, generation);
    return { runs, index: runIndexAt(runs, offset) };
  }

  /**
   * The extent of a run: an unallocated run over a backing image is what the backing image says,
   * and data over a hole in the host file reads as zeros.
   */
  async #resolve(run: Run): Promise<Extent> {
    const backing = this.#d.backing;
    if (run.kind === 'unallocated' && backing && run.offset < backing.length()) {
      const below = await backing.blockStatus(run.offset, Math.min(run.length, backing.length() - run.offset));
      return { ...below, offset: run.offset, depth: (below.depth ?? 0) + 1 };
    }
    const inFile = run.kind === 'data' ? await this.#d.holes.at(run.host, run.length) : undefined;
    return this.#extent(run, inFile);
  }

  /** `inFile`: what the host file holds under a data run, when it was asked. */
  #extent(run: Run, inFile?: HostRun): Extent {
    const hasHost = run.host !== 0;
    return {
      offset: run.offset,
      length: inFile?.length ?? run.length,
      allocated: run.kind !== 'unallocated',
      // Unallocated here means no backing image, or past its end: zeros either way.
      zero: run.kind === 'zero' || run.kind === 'unallocated' || inFile?.zero === true,
      data: run.kind === 'data' || run.kind === 'compressed',
      hostOffset: hasHost ? run.host : undefined,
      hostFile: hasHost ? this.#d.file.filename : undefined,
      compressed: run.kind === 'compressed',
      depth: 0,
    };
  }
}

/** `run` from `from` (inside it) to at most `end`. */
function clip(run: Run, from: number, end: number): Run {
  const skip = from - run.offset;
  const host = run.host === 0 ? 0 : run.host + skip;
  return { ...run, offset: from, length: Math.min(run.offset + run.length, end) - from, host };
}
