/**
 * The connections behind one NBD image: one, or several when the server advertises multi-conn
 * (its flushes then cover writes completed on every connection), each request going to the
 * least busy. A lost connection (closed, reset, or silent past the timeout) is reopened when a
 * reconnect delay is set, as QEMU's reconnect-delay does: requests wait, and the ones the loss
 * interrupted are sent again, until the delay has passed; then they fail with the reason. A
 * protocol error is never retried. The reopened export must have the same size.
 */
import { VdiskError } from '../../block/errors.js';
import { TF } from '../../nbd-wire/protocol.js';
import type { CheckedClientOptions } from './client-options.js';
import type { NbdConnection } from './connection.js';
import type { NegotiatedExport } from './handshake.js';
import { credentialsFor, openConnection } from './open-connection.js';
import type { BlockStatusResult, NbdCommand } from './pending-request.js';
import type { ClientTlsCredentials } from './tls-client.js';
import type { NbdUri } from './uri.js';

/** First pause between reconnection attempts; it doubles up to a second. */
const FIRST_RETRY_MS = 50;

export class ConnectionPool {
  readonly negotiated: NegotiatedExport;
  readonly #uri: NbdUri;
  readonly #options: CheckedClientOptions;
  readonly #creds: ClientTlsCredentials | undefined;
  readonly #connections: NbdConnection[];
  #reconnecting: Promise<void> | undefined;
  #failure: VdiskError | undefined;
  #closing: Promise<void> | undefined;

  private constructor(
    uri: NbdUri,
    options: CheckedClientOptions,
    creds: ClientTlsCredentials | undefined,
    first: NbdConnection,
  ) {
    this.#uri = uri;
    this.#options = options;
    this.#creds = creds;
    this.negotiated = first.negotiated;
    this.#connections = [];
    this.#adopt(first);
  }

  static async open(uri: NbdUri, options: CheckedClientOptions): Promise<ConnectionPool> {
    const creds = await credentialsFor(uri, options);
    const pool = new ConnectionPool(uri, options, creds, await openConnection(uri, options, creds));
    if (options.connections > 1 && pool.negotiated.flags & TF.CAN_MULTI_CONN) {
      try {
        for (let i = 1; i < options.connections; i++) pool.#adopt(await openConnection(uri, options, creds));
      } catch (err) {
        await pool.close();
        throw err;
      }
    }
    return pool;
  }

  /** Connections open now (for tests and describe). */
  get size(): number {
    return this.#connections.length;
  }

  async request(command: NbdCommand): Promise<BlockStatusResult | undefined> {
    let deadline = Number.POSITIVE_INFINITY;
    for (;;) {
      const connection = await this.#pick();
      try {
        return await connection.request(command);
      } catch (err) {
        // Sent again only when the connection died under it and a reconnection is under way,
        // for at most the reconnect delay (a server that accepts and then hangs is not retried forever).
        if (err !== connection.failure || !this.#reconnecting) throw err;
        if (deadline === Number.POSITIVE_INFINITY) deadline = Date.now() + this.#options.reconnectDelayMs;
        else if (Date.now() >= deadline) throw err;
      }
    }
  }

  /** Closes every connection (each says NBD_CMD_DISC after its requests finish). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#reconnecting;
      await Promise.all(this.#connections.map((c) => c.close()));
    })();
    return this.#closing;
  }

  #adopt(connection: NbdConnection): void {
    this.#connections.push(connection);
    connection.onFailure = (err) => this.#lost(connection, err);
  }

  async #pick(): Promise<NbdConnection> {
    for (;;) {
      if (this.#closing) throw new VdiskError('ESHUTDOWN', `The connection to ${this.#uri.displayName} is closed`);
      if (this.#failure) throw this.#failure;
      let best: NbdConnection | undefined;
      for (const c of this.#connections) if (c.usable && (!best || c.inFlight < best.inFlight)) best = c;
      if (best) return best;
      if (!this.#reconnecting) throw this.#connections[0]?.failure ?? new VdiskError('EIO', 'No connection');
      await this.#reconnecting;
    }
  }

  #lost(connection: NbdConnection, err: VdiskError): void {
    const index = this.#connections.indexOf(connection);
    const recoverable = err.code === 'EIO' || err.code === 'ETIMEDOUT';
    if (this.#options.reconnectDelayMs > 0 && recoverable && !this.#closing) {
      this.#reconnecting ??= this.#reconnect(index, err).finally(() => (this.#reconnecting = undefined));
    } else if (!this.#connections.some((c) => c.usable)) {
      this.#failure ??= err;
    }
  }

  async #reconnect(index: number, reason: VdiskError): Promise<void> {
    const until = Date.now() + this.#options.reconnectDelayMs;
    let pause = FIRST_RETRY_MS;
    let last: unknown = reason;
    while (!this.#closing && Date.now() < until) {
      try {
        const fresh = await openConnection(this.#uri, this.#options, this.#creds);
        if (fresh.negotiated.size !== this.negotiated.size) {
          await fresh.close();
          this.#failure = new VdiskError(
            'EIO',
            `${this.#uri.displayName}: the export changed size from ${this.negotiated.size} to ${fresh.negotiated.size} bytes while reconnecting`,
          );
          return;
        }
        this.#connections.splice(index, 1);
        this.#adopt(fresh);
        return;
      } catch (err) {
        last = err;
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.min(pause, until - Date.now()))));
        pause = Math.min(pause * 2, 1000);
      }
    }
    const why = last instanceof Error && last !== reason ? `; reconnecting failed: ${last.message}` : '';
    if (!this.#connections.some((c) => c.usable)) {
      this.#failure ??= new VdiskError(reason.code, `${reason.message}${why}`, { cause: reason });
    }
  }
}
