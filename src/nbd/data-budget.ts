/**
 * The request and reply data all connections together may make the server hold: READ and WRITE
 * payloads from the moment their request header is read until the request is done, plus reply
 * bytes queued for clients that have not read them yet. Each session's own limits bound one
 * client; this bounds them all, however many connect.
 *
 * A request that does not fit waits (its session stops reading) until data is released or a
 * client reads its replies. Two exceptions keep every client moving: when nothing at all is
 * held, any one request is admitted (so a request larger than the budget still runs); and a
 * client holding nothing (no request data, no unread replies) may always have one request of up
 * to FAIR_SHARE bytes, so clients that hog the budget cannot stop the others. The bound is
 * therefore the budget plus FAIR_SHARE per connection. Clients that hold the budget without
 * making progress (replies left unread, a payload that never comes) are dropped by their
 * sessions after a timeout, so a large request never waits for ever.
 */

/** A request of at most this many bytes from a client that holds nothing is always admitted. */
export const FAIR_SHARE = 1024 * 1024;

/** A session, as the budget sees it. */
export interface BudgetHolder {
  /** Reply bytes queued for the client and not yet taken by it. */
  unreadBytes(): number;
  /** Request data bytes it holds reservations for. */
  reservedBytes(): number;
}

export class DataBudget {
  readonly limit: number;
  #reserved = 0;
  readonly #holders = new Set<BudgetHolder>();
  #waiting: Array<() => void> = [];

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Bytes held now: reserved payloads plus every holder's unread replies. */
  get used(): number {
    let used = this.#reserved;
    for (const h of this.#holders) used += h.unreadBytes();
    return used;
  }

  addHolder(holder: BudgetHolder): void {
    this.#holders.add(holder);
  }

  removeHolder(holder: BudgetHolder): void {
    if (this.#holders.delete(holder)) this.changed();
  }

  /** Reserves `bytes` for `holder` if they fit, or one of the exceptions applies. */
  tryReserve(bytes: number, holder: BudgetHolder): boolean {
    const used = this.used;
    const fits = used === 0 || used + bytes <= this.limit;
    const fair = bytes <= FAIR_SHARE && holder.reservedBytes() === 0 && holder.unreadBytes() === 0;
    if (!fits && !fair) return false;
    this.#reserved += bytes;
    return true;
  }

  release(bytes: number): void {
    if (bytes === 0) return;
    this.#reserved -= bytes;
    this.changed();
  }

  /** Calls `retry` once, the next time data is released or replies are read. */
  whenFreed(retry: () => void): void {
    this.#waiting.push(retry);
  }

  /** Something was freed: every waiter retries (those that still do not fit wait again). */
  changed(): void {
    if (this.#waiting.length === 0) return;
    const waiting = this.#waiting;
    this.#waiting = [];
    // Later, not inside the caller's own bookkeeping.
    for (const retry of waiting) queueMicrotask(retry);
  }
}
