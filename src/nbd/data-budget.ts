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
 * therefore the budget plus FAIR_SHARE per connection. Waiting requests get room oldest first.
 * While requests wait, clients that hold the budget without making progress (replies left
 * unread, a write payload that stops coming) are dropped by their sessions after a timeout, so
 * a waiting request gets room in the end.
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

interface Waiter {
  holder: BudgetHolder;
  retry: () => void;
}

/** While requests wait, room is looked for this often too (unread replies shrink without events). */
const POLL_MS = 20;

export class DataBudget {
  readonly limit: number;
  #reserved = 0;
  readonly #holders = new Set<BudgetHolder>();
  /** Holders waiting for room, oldest first: room goes to the oldest, so no request waits for ever. */
  readonly #queue: Waiter[] = [];
  #wakeScheduled = false;
  #poll: NodeJS.Timeout | undefined;

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Bytes held now: reserved request data plus every holder's unread replies. */
  get used(): number {
    let used = this.#reserved;
    for (const h of this.#holders) used += h.unreadBytes();
    return used;
  }

  /** Whether requests are waiting for room (holders that make no progress are then dropped). */
  get contended(): boolean {
    return this.#queue.length > 0;
  }

  addHolder(holder: BudgetHolder): void {
    this.#holders.add(holder);
  }

  removeHolder(holder: BudgetHolder): void {
    if (!this.#holders.delete(holder)) return;
    this.leave(holder);
    this.changed();
  }

  /**
   * Reserves `bytes` for `holder` if it may have them now: a fair share always; anything else
   * when no older request is waiting and the bytes fit (or nothing at all is held).
   */
  tryReserve(bytes: number, holder: BudgetHolder): boolean {
    const fair = bytes <= FAIR_SHARE && holder.reservedBytes() === 0 && holder.unreadBytes() === 0;
    if (!fair) {
      const head = this.#queue[0];
      if (head && head.holder !== holder) return false;
      const used = this.used;
      if (used !== 0 && used + bytes > this.limit) return false;
    }
    this.#reserved += bytes;
    this.leave(holder);
    return true;
  }

  release(bytes: number): void {
    if (bytes === 0) return;
    this.#reserved -= bytes;
    this.changed();
  }

  /** Queues `holder` (once) until there is room for it; `retry` is called when it may try again. */
  wait(holder: BudgetHolder, retry: () => void): void {
    if (!this.#queue.some((w) => w.holder === holder)) this.#queue.push({ holder, retry });
    if (!this.#poll) {
      this.#poll = setInterval(() => this.changed(), POLL_MS);
      this.#poll.unref();
    }
  }

  /** Takes `holder` out of the queue (it got its bytes, or waits for something else now). */
  leave(holder: BudgetHolder): void {
    const at = this.#queue.findIndex((w) => w.holder === holder);
    if (at < 0) return;
    this.#queue.splice(at, 1);
    if (this.#queue.length === 0) {
      clearInterval(this.#poll);
      this.#poll = undefined;
    } else if (at === 0) {
      this.changed(); // the next one's turn
    }
  }

  /** Room may have been freed: the oldest waiter tries again (later, not inside the caller). */
  changed(): void {
    if (this.#queue.length === 0 || this.#wakeScheduled) return;
    this.#wakeScheduled = true;
    queueMicrotask(() => {
      this.#wakeScheduled = false;
      this.#queue[0]?.retry();
    });
  }
}
