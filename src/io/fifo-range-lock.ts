/**
 * A FIFO lock over byte ranges, used under O_DIRECT: a read-modify-write of a partial block
 * takes its blocks exclusively, so that no other write to those blocks lands between its read
 * and its write (which would be silently undone). Aligned writes take their range shared: they
 * may run together, but not across a pending read-modify-write.
 *
 * A request waits only for conflicting requests that arrived before it, so there is no
 * starvation and no cycle. That queue is what sets it apart from util/range-lock.ts, whose
 * waiters are not queued (a request that finds its range free takes it at once, which is what
 * lets qcow2 try its cluster locks without waiting).
 */

export interface RangeHold {
  readonly start: number;
  readonly end: number;
  readonly exclusive: boolean;
  readonly released: Promise<void>;
  /** @internal */
  resolve: () => void;
}

export class FifoRangeLock {
  private readonly holds = new Set<RangeHold>();

  /** Waits for earlier overlapping conflicting holds on [start, end), then holds the range. */
  async lock(start: number, end: number, exclusive: boolean): Promise<RangeHold> {
    const blockers: Promise<void>[] = [];
    for (const h of this.holds) {
      if (h.start < end && start < h.end && (exclusive || h.exclusive)) blockers.push(h.released);
    }
    let resolve!: () => void;
    const released = new Promise<void>((r) => {
      resolve = r;
    });
    const hold: RangeHold = { start, end, exclusive, released, resolve };
    this.holds.add(hold);
    if (blockers.length === 1) await blockers[0];
    else if (blockers.length > 1) await Promise.all(blockers);
    return hold;
  }

  unlock(hold: RangeHold): void {
    this.holds.delete(hold);
    hold.resolve();
  }

  /** Holds currently queued or granted (for tests). */
  get size(): number {
    return this.holds.size;
  }
}
