/**
 * Notices a client that holds server memory without making progress: it takes none of its
 * replies, or sends none of a write payload it has begun. Such a client is only dropped while
 * others wait for the data budget (the session decides that); until then slowness is allowed.
 */

/** What the session sees of its client's progress each time the watchdog looks. */
export interface ClientProgress {
  /** Reply bytes the client has taken so far. */
  repliesTaken: number;
  /** Reply bytes queued and not taken yet. */
  repliesUnread: number;
  /** The session is reading the rest of a write payload (and has not paused reading). */
  awaitingPayload: boolean;
  /** Bytes received and not consumed yet. */
  bytesQueued: number;
}

export class StallWatchdog {
  readonly #timeoutMs: number;
  #timer: NodeJS.Timeout | undefined;
  /** Reply bytes taken, as last seen, and when that grew. */
  #repliesTaken = 0;
  #repliesTakenAt = performance.now();
  /** Bytes queued while a write payload was awaited, as last seen, and when that grew. */
  #payloadQueued = 0;
  #payloadGrewAt = 0;

  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs;
  }

  /** Calls `look` now and then (often enough to notice a stall in time) until stop(). */
  start(look: () => void): void {
    this.#timer = setInterval(look, Math.max(10, Math.min(5000, this.#timeoutMs / 4)));
    // The watchdog alone must not keep the process alive.
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /**
   * Records `progress`; when `othersWait`, returns why the client counts as stalled if it has
   * made no progress for the timeout.
   */
  stalled(progress: ClientProgress, othersWait: boolean): string | undefined {
    const now = performance.now();
    const stall = this.#timeoutMs;
    if (progress.repliesTaken > this.#repliesTaken || progress.repliesUnread === 0) {
      this.#repliesTaken = progress.repliesTaken;
      this.#repliesTakenAt = now;
    }
    if (!progress.awaitingPayload || progress.bytesQueued > this.#payloadQueued) {
      this.#payloadQueued = progress.bytesQueued;
      this.#payloadGrewAt = now;
    }
    if (!othersWait) return undefined;
    if (now - this.#repliesTakenAt > stall) {
      return `the client took none of its replies for ${stall} ms while others waited`;
    }
    if (now - this.#payloadGrewAt > stall) {
      return `no more of a write payload came for ${stall} ms while others waited`;
    }
    return undefined;
  }
}
