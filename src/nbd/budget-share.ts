/**
 * One connection's share of the server's DataBudget: the bytes reserved for its requests in
 * flight, plus the reservation of the next request, made once when its header arrives and kept
 * while its payload does. Without a budget every reservation succeeds at once.
 */
import type { BudgetHolder, DataBudget } from './data-budget.js';

export class BudgetShare implements BudgetHolder {
  readonly #budget: DataBudget | undefined;
  readonly #unreadBytes: () => number;
  /** Bytes held: for requests in flight, and for the next request while its payload arrives. */
  #reserved = 0;
  /** Bytes reserved for the next request, not yet dispatched. */
  #reservedNext = 0;
  /** In the budget's queue, waiting for its turn. */
  #waiting = false;

  /** `unreadBytes`: the reply bytes the client has not taken, which the budget counts too. */
  constructor(budget: DataBudget | undefined, unreadBytes: () => number) {
    this.#budget = budget;
    this.#unreadBytes = unreadBytes;
    budget?.addHolder(this);
  }

  unreadBytes(): number {
    return this.#unreadBytes();
  }

  reservedBytes(): number {
    return this.#reserved;
  }

  /** True when requests wait for room, so that a client holding room without progress is dropped. */
  get othersWait(): boolean {
    return !this.#budget || this.#budget.contended;
  }

  /**
   * Reserves `bytes` for the next request unless that is done already; false when it must wait,
   * and then `retry` is called on its turn.
   */
  reserveNext(bytes: number, retry: () => void): boolean {
    if (bytes === 0 || this.#reservedNext !== 0 || !this.#budget) return true;
    if (!this.#budget.tryReserve(bytes, this)) {
      this.#waiting = true;
      this.#budget.wait(this, retry);
      return false;
    }
    this.#waiting = false;
    this.#reservedNext = bytes;
    this.#reserved += bytes;
    return true;
  }

  /** The next request's reservation, which now goes with it (0 if it has none). */
  takeNext(): number {
    const bytes = this.#reservedNext;
    this.#reservedNext = 0;
    return bytes;
  }

  /** The next request's reservation goes back (the request is not dispatched). */
  releaseNext(): void {
    this.release(this.takeNext());
  }

  release(bytes: number): void {
    if (bytes === 0) return;
    this.#reserved -= bytes;
    this.#budget?.release(bytes);
  }

  /** Leaves the budget's queue: the connection waits for its own requests now, so the next may go first. */
  giveUpTurn(): void {
    if (!this.#waiting) return;
    this.#waiting = false;
    this.#budget?.leave(this);
  }

  /** The client took replies: room may have been freed for others. */
  repliesTaken(): void {
    this.#budget?.changed();
  }

  /** The connection is gone: its next request's bytes go back, and it holds nothing any more. */
  close(): void {
    this.releaseNext();
    this.#budget?.removeHolder(this);
  }
}
