/**
 * How a session's replies reach its socket. At queue depth 1 a reply is written at once (an
 * extra event-loop turn would only add latency); with more requests in flight, everything sent
 * in one event-loop turn leaves together on setImmediate: small totals copied into one buffer
 * (one write), larger ones as one corked writev of the pieces (no copy of read data).
 */
import type { Duplex } from 'node:stream';

/** Replies queued in one turn up to this many bytes are copied into one buffer and written at once. */
const COALESCE_LIMIT = 64 * 1024;

export class ReplyWriter {
  readonly #socket: Duplex;
  /** True when nothing else is in flight, so that batching cannot help. */
  readonly #alone: () => boolean;
  #out: Buffer[] = [];
  #outBytes = 0;
  #outDone: Array<() => void> = [];
  #scheduled = false;
  readonly #flushLater = (): void => this.flush();

  #handed = 0;

  /** Bytes queued for the next write. */
  get queuedBytes(): number {
    return this.#outBytes;
  }

  /** Bytes handed to the socket so far (less its writableLength: what the client has taken). */
  get handedBytes(): number {
    return this.#handed;
  }

  constructor(socket: Duplex, alone: () => boolean) {
    this.#socket = socket;
    this.#alone = alone;
  }

  /** Sends `buf`; `done` runs once the socket no longer needs it (also when the socket is gone). */
  send(buf: Buffer, done?: () => void): void {
    const socket = this.#socket;
    if (!socket.writable) {
      done?.();
      return;
    }
    if (!this.#scheduled && this.#alone()) {
      this.#write(socket, buf, done);
      return;
    }
    this.#out.push(buf);
    this.#outBytes += buf.length;
    if (done) this.#outDone.push(done);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flushLater);
    }
  }

  /** A header and the data that follows it, in one writev when written at once. */
  sendPair(header: Buffer, data: Buffer, done: (() => void) | undefined): void {
    const direct = !this.#scheduled && this.#alone() && this.#socket.writable;
    if (direct) this.#socket.cork();
    this.send(header);
    this.send(data, done);
    if (direct) this.#socket.uncork();
  }

  #write(socket: Duplex, buf: Buffer, done?: () => void): boolean {
    this.#handed += buf.length;
    return socket.write(buf, done);
  }

  /** Writes out what is queued now (before the session ends the socket). */
  flush(): void {
    this.#scheduled = false;
    const out = this.#out;
    const total = this.#outBytes;
    const done = this.#outDone;
    if (out.length === 0) return;
    this.#out = [];
    this.#outBytes = 0;
    this.#outDone = [];
    const socket = this.#socket;
    if (!socket.writable) {
      runAll(done);
      return;
    }
    if (out.length === 1) {
      this.#write(socket, out[0]!, done.length > 0 ? () => runAll(done) : undefined);
      return;
    }
    if (total <= COALESCE_LIMIT) {
      this.#write(socket, Buffer.concat(out, total));
      runAll(done); // the bytes were copied
      return;
    }
    socket.cork();
    const last = out.length - 1;
    for (let i = 0; i < last; i++) this.#write(socket, out[i]!);
    if (done.length > 0) this.#write(socket, out[last]!, () => runAll(done));
    else this.#write(socket, out[last]!);
    socket.uncork();
  }
}

function runAll(fns: ReadonlyArray<() => void>): void {
  for (const fn of fns) fn();
}
