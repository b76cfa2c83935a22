/**
 * The bytes a peer has sent and the reader has not consumed yet: the chunks a socket
 * delivered, consumed from the front without copying where a message lies inside one chunk.
 * The server's handshake waits for bytes with `need()`; its transmission phase parses
 * synchronously on each arrival (`onData`) and pauses the socket for backpressure.
 */
import type { Duplex } from 'node:stream';

export class ByteQueue {
  #chunks: Buffer[] = [];
  /** Index of the first chunk with unconsumed bytes. */
  #first = 0;
  /** Bytes of the first chunk already consumed. */
  #skip = 0;
  #length = 0;
  readonly #scratch = Buffer.allocUnsafe(64);

  get length(): number {
    return this.#length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /**
   * The first `n` bytes (n ≤ 64) without consuming them: a view into the first chunk when they
   * are contiguous there, else a copy in a scratch buffer that the next call overwrites.
   * Returns the buffer and the offset at which the bytes start.
   */
  peekSmall(n: number): [Buffer, number] {
    const head = this.#chunks[this.#first]!;
    if (head.length - this.#skip >= n) return [head, this.#skip];
    this.#copyOut(this.#scratch, 0, n, false);
    return [this.#scratch, 0];
  }

  /** True when the first `n` bytes lie in one chunk (take() returns a view, not a copy). */
  contiguous(n: number): boolean {
    const head = this.#chunks[this.#first];
    return head !== undefined && head.length - this.#skip >= n;
  }

  /** Consumes `n` bytes and returns them: a view when they lie in one chunk, else a copy. */
  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const head = this.#chunks[this.#first]!;
    if (head.length - this.#skip >= n) {
      const view = head.subarray(this.#skip, this.#skip + n);
      this.skip(n);
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    this.#copyOut(out, 0, n, true);
    return out;
  }

  /** Consumes `n` bytes into `dst` at `at`. */
  takeInto(dst: Buffer, at: number, n: number): void {
    this.#copyOut(dst, at, n, true);
  }

  /** Consumes up to `n` bytes; returns how many were consumed. */
  skip(n: number): number {
    let left = Math.min(n, this.#length);
    const done = left;
    while (left > 0) {
      const head = this.#chunks[this.#first]!;
      const avail = head.length - this.#skip;
      if (avail > left) {
        this.#skip += left;
        break;
      }
      left -= avail;
      this.#dropFirst();
    }
    this.#length -= done;
    return done;
  }

  #copyOut(dst: Buffer, at: number, n: number, consume: boolean): void {
    let first = this.#first;
    let skip = this.#skip;
    let copied = 0;
    while (copied < n) {
      const head = this.#chunks[first]!;
      const take = Math.min(head.length - skip, n - copied);
      head.copy(dst, at + copied, skip, skip + take);
      copied += take;
      skip += take;
      if (skip === head.length) {
        first++;
        skip = 0;
      }
    }
    if (consume) this.skip(n);
  }

  #dropFirst(): void {
    this.#chunks[this.#first] = EMPTY;
    this.#first++;
    this.#skip = 0;
    if (this.#first === this.#chunks.length) {
      this.#chunks.length = 0;
      this.#first = 0;
    } else if (this.#first >= 64 && this.#first * 2 >= this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#first);
      this.#first = 0;
    }
  }
}

const EMPTY = Buffer.alloc(0);

/** Why the input ended. */
export class InputClosed extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'InputClosed';
  }
}

/**
 * A socket's incoming bytes. Attach it to a socket (plain or TLS); detach before handing the
 * socket to something else (STARTTLS wraps it).
 */
export class SocketInput {
  readonly queue = new ByteQueue();
  readonly socket: Duplex;
  #waiter: { n: number; resolve: () => void; reject: (err: Error) => void } | undefined;
  #onData: (() => void) | undefined;
  #onEnd: (() => void) | undefined;
  #ended: Error | undefined;
  readonly #listeners: Array<[string, (...args: never[]) => void]>;

  /** `peer` names the other side in the reason the input ended ("The server closed the connection"). */
  constructor(socket: Duplex, peer: 'client' | 'server' = 'client') {
    this.socket = socket;
    const data = (chunk: Buffer) => {
      this.queue.push(chunk);
      if (this.#waiter && this.queue.length >= this.#waiter.n) {
        const w = this.#waiter;
        this.#waiter = undefined;
        w.resolve();
      }
      this.#onData?.();
    };
    const end = () => this.#finish(new InputClosed(`The ${peer} closed the connection`));
    const error = (err: Error) => this.#finish(new InputClosed(`Connection error: ${err.message}`, { cause: err }));
    this.#listeners = [
      ['data', data],
      ['end', end],
      ['close', end],
      ['error', error],
    ];
    for (const [event, fn] of this.#listeners) socket.on(event, fn as (...args: unknown[]) => void);
  }

  /** True once the peer closed its side or the socket failed. */
  get ended(): boolean {
    return this.#ended !== undefined;
  }

  /** Resolves when at least `n` bytes are queued; rejects with InputClosed when they never will be. */
  need(n: number): Promise<void> {
    if (this.queue.length >= n) return Promise.resolve();
    if (this.#ended) return Promise.reject(this.#ended);
    return new Promise((resolve, reject) => {
      this.#waiter = { n, resolve, reject };
    });
  }

  /** Calls `fn` after each arrival (the transmission phase's parser) and once when input ends. */
  onData(fn: () => void, onEnd: () => void): void {
    this.#onData = fn;
    this.#onEnd = onEnd;
    if (this.#ended) onEnd();
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  /** Stops listening to the socket (which keeps any bytes it has not delivered yet). */
  detach(): void {
    for (const [event, fn] of this.#listeners) this.socket.off(event, fn as (...args: unknown[]) => void);
    this.#onData = undefined;
    this.#onEnd = undefined;
    // The socket still needs an error listener, or an error would be thrown as uncaught.
    this.socket.on('error', () => {});
  }

  #finish(err: InputClosed): void {
    if (this.#ended) return;
    this.#ended = err;
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(err);
    this.#onEnd?.();
  }
}
