/**
 * Where a range of guest bytes lives, as runs of one kind each: data at a host offset, zeros,
 * unallocated (falls through to the backing image), or compressed. Runs are cut at subcluster
 * granularity with extended L2 entries and merged where their host offsets are contiguous.
 */
import type { Mutex } from '../../../util/mutex.js';
import type { Qcow2Geometry } from '../codec/geometry.js';
import { type L2Entry, subclusterKind } from '../codec/l2-entry.js';
import type { L2Tables } from './l2-tables.js';

export type RunKind = 'data' | 'zero' | 'unallocated' | 'compressed';

export interface Run {
  kind: RunKind;
  /** Guest offset of the run's first byte. */
  offset: number;
  length: number;
  /**
   * Host offset of the run's first byte in its cluster, 0 when it has none: data runs always,
   * zero and unallocated runs when their cluster is allocated all the same (preallocated zero
   * clusters, subclusters of an extended entry), which block status reports as QEMU does.
   */
  host: number;
  /** data: the host cluster belongs to this image alone (COPIED), so it may be written in place. */
  copied: boolean;
  entry?: L2Entry;
}

/** Maps guest ranges through the L2 tables. */
export class Mapping {
  readonly #tables: L2Tables;
  readonly #g: Qcow2Geometry;
  readonly #metadataLock: Mutex;

  constructor(tables: L2Tables, geometry: Qcow2Geometry, metadataLock: Mutex) {
    this.#tables = tables;
    this.#g = geometry;
    this.#metadataLock = metadataLock;
  }

  /** The runs covering [offset, offset+length), in order; tables are loaded under the metadata lock. */
  lookup(offset: number, length: number): Promise<Run[]> {
    return this.#metadataLock.run(async () => {
      const runs = new RunCollector(this.#g, offset, length);
      while (runs.wantsMore()) runs.add(await this.#tables.entries(runs.cluster, runs.count));
      return runs.runs;
    });
  }

  /**
   * lookup() from the cached L2 tables alone, without the lock and without waiting: undefined
   * when one of them is not in the cache. The answer is consistent because nothing can change
   * between two awaits.
   */
  cached(offset: number, length: number): Run[] | undefined {
    const runs = new RunCollector(this.#g, offset, length);
    while (runs.wantsMore()) {
      const entries = this.#tables.cachedEntries(runs.cluster, runs.count);
      if (!entries) return undefined;
      runs.add(entries);
    }
    return runs.runs;
  }
}

/** Builds the runs of a guest range from the L2 entries of its clusters, one table's worth at a time. */
class RunCollector {
  readonly runs: Run[] = [];
  readonly #g: Qcow2Geometry;
  readonly #end: number;
  #pos: number;
  /** The entries wanted next: `count` guest clusters from `cluster` (fewer may come). */
  cluster = 0;
  count = 0;

  constructor(g: Qcow2Geometry, offset: number, length: number) {
    this.#g = g;
    this.#pos = offset;
    this.#end = offset + length;
  }

  /** Whether the range is not covered yet; if so, sets `cluster` and `count`. */
  wantsMore(): boolean {
    if (this.#pos >= this.#end) return false;
    const cs = this.#g.clusterSize;
    this.cluster = Math.floor(this.#pos / cs);
    this.count = Math.floor((this.#end - 1) / cs) - this.cluster + 1;
    return true;
  }

  /** Adds the runs of `entries` (guest clusters from `cluster`). */
  add(entries: L2Entry[]): void {
    const g = this.#g;
    const end = this.#end;
    let pos = this.#pos;
    for (let i = 0; i < entries.length && pos < end; i++) {
      const entry = entries[i]!;
      const clusterStart = (this.cluster + i) * g.clusterSize;
      const clusterEnd = Math.min(clusterStart + g.clusterSize, end);
      while (pos < clusterEnd) {
        const sc = Math.floor((pos - clusterStart) / g.subclusterSize);
        const scEnd = Math.min(clusterStart + (sc + 1) * g.subclusterSize, clusterEnd);
        const kind = subclusterKind(entry, sc);
        const base = kind === 'compressed' ? 0 : clusterHost(entry);
        const host = base === 0 ? 0 : base + (pos - clusterStart);
        const copied = kind === 'data' && (entry as { copied: boolean }).copied;
        if (!extendsLast(this.runs, kind, pos, scEnd - pos, host, copied)) {
          this.runs.push({
            kind,
            offset: pos,
            length: scEnd - pos,
            host,
            copied,
            entry: kind === 'compressed' ? entry : undefined,
          });
        }
        pos = scEnd;
      }
    }
    this.#pos = pos;
  }
}

/** The host cluster an entry names (0: none). */
function clusterHost(entry: L2Entry): number {
  return entry.kind === 'data' || entry.kind === 'zero' ? entry.host : 0;
}

/**
 * Grows the last run by a piece that continues it (same kind, and host offsets that continue or
 * are both none), without making an object for the piece. Compressed clusters are always runs of
 * their own.
 */
function extendsLast(
  runs: Run[],
  kind: RunKind,
  offset: number,
  length: number,
  host: number,
  copied: boolean,
): boolean {
  const last = runs[runs.length - 1];
  if (
    !last ||
    last.kind !== kind ||
    last.copied !== copied ||
    kind === 'compressed' ||
    last.offset + last.length !== offset ||
    (last.host === 0 ? host !== 0 : last.host + last.length !== host)
  ) {
    return false;
  }
  last.length += length;
  return true;
}
