/**
 * Shared/exclusive locks on ranges of units (guest clusters). Reads and writes into allocated
 * clusters share; allocation, write-zeroes and discard are exclusive, so two writes never
 * allocate the same cluster twice and a discard never frees a cluster a request still uses.
 *
 * Waiters are not queued: whoever finds its range free when it looks takes it. That is what
 * makes tryAcquire possible (the uncontended request never waits), at the price of no fairness
 * between waiters. io/fifo-range-lock.ts is the queued kind, for O_DIRECT read-modify-writes.
 */
export type LockMode = 'shared' | 'exclusive';

interface Held {
  start: number;
  end: number;
  mode: LockMode;
  done: Promise<void>;
}

export class RangeLock {
  readonly #held = new Set<Held>();

  /** Waits until [start, end) conflicts with nothing held, then holds it. Returns the release function. */
  async acquire(start: number, end: number, mode: LockMode): Promise<() => void> {
    for (;;) {
      const blocker = this.#conflicting(start, end, mode);
      if (!blocker) break;
      await blocker.done;
    }
    return this.#hold(start, end, mode);
  }

  /** Holds [start, end) now if nothing conflicts (the uncontended case, without a wait). */
  tryAcquire(start: number, end: number, mode: LockMode): (() => void) | undefined {
    return this.#conflicting(start, end, mode) ? undefined : this.#hold(start, end, mode);
  }

  #hold(start: number, end: number, mode: LockMode): () => void {
    let release!: () => void;
    const held: Held = { start, end, mode, done: new Promise<void>((resolve) => (release = resolve)) };
    this.#held.add(held);
    return () => {
      if (this.#held.delete(held)) release();
    };
  }

  get size(): number {
    return this.#held.size;
  }

  #conflicting(start: number, end: number, mode: LockMode): Held | undefined {
    for (const held of this.#held) {
      if (held.start < end && start < held.end && (mode === 'exclusive' || held.mode === 'exclusive')) return held;
    }
    return undefined;
  }
}
