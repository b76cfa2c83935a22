/**
 * fdatasync shared between callers (group commit), with QEMU's rule for failures.
 *
 * While one fdatasync runs, every new caller waits for the single one that starts after it:
 * the running one may have begun before their writes completed. Syncs run one at a time, so
 * that a writeback error the kernel reports reaches one of them and is kept: after a failed
 * fdatasync the kernel may have dropped the dirty pages, and a later one could wrongly succeed
 * (QEMU's page_cache_inconsistent), so every later sync fails too.
 */
import { fromSystemError, VdiskError } from '../block/errors.js';

export class GroupSync {
  readonly #filename: string;
  readonly #sync: () => Promise<void>;
  #failure: VdiskError | undefined;
  #running: Promise<void> | undefined;
  #queued: Promise<void> | undefined;

  constructor(filename: string, sync: () => Promise<void>) {
    this.#filename = filename;
    this.#sync = sync;
  }

  /** Resolves once everything written before the call is durable. */
  now(): Promise<void> {
    // A queued sync has not started: it covers this caller too.
    if (this.#queued) return this.#queued;
    if (!this.#running) return this.#start();
    this.#queued = this.#running.then(noop, noop).then(() => {
      this.#queued = undefined;
      return this.#start();
    });
    return this.#queued;
  }

  #start(): Promise<void> {
    const running = this.#once().finally(() => {
      if (this.#running === running) this.#running = undefined;
    });
    this.#running = running;
    return running;
  }

  async #once(): Promise<void> {
    if (this.#failure) {
      throw new VdiskError(
        'EIO',
        `Could not flush '${this.#filename}': an earlier flush failed, so written data may be lost`,
        { cause: this.#failure },
      );
    }
    try {
      await this.#sync();
    } catch (err) {
      this.#failure = fromSystemError(err, `Could not flush '${this.#filename}'`);
      throw this.#failure;
    }
  }
}

function noop(): void {}
