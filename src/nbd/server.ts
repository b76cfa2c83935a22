/**
 * The NBD server: listens on a Unix socket or TCP, runs the handshake for each connection
 * (bounded in time), then a Session; all connections share one export (one open image).
 *
 * As qemu-nbd: at most `shared` clients are served at once (0: no limit); further connections
 * wait, unanswered, until a client leaves (qemu-nbd leaves them in the listen backlog). All
 * connections together (served, negotiating, waiting) are capped by `maxConnections`; beyond it
 * new connections are closed at once, so idle or half-open clients cannot exhaust the server.
 * The request and reply data all sessions hold together is bounded by one DataBudget (see
 * there), on top of each session's own limits.
 * Without `persistent`, the server reports idle (and the CLI exits) when its last client leaves.
 *
 * close() stops accepting, drops waiting and handshaking clients, lets every session finish the
 * requests in flight and send their replies, then resolves; the owner then closes the image.
 */
import { lstat, stat, unlink } from 'node:fs/promises';
import net from 'node:net';
import { dirname } from 'node:path';
import { fromSystemError, VdiskError } from '../block/errors.js';
import { InputClosed, SocketInput } from '../nbd-wire/input.js';
import { DataBudget } from './data-budget.js';
import type { NbdExport } from './export.js';
import { negotiate } from './handshake/negotiate.js';
import { HandshakeError } from './handshake/negotiation.js';
import { Session } from './session.js';
import type { SessionLimits } from './session-limits.js';
import type { TlsCredentials } from './tls.js';

export type ListenAddress = { socket: string } | { host: string; port: number };

export interface NbdServerOptions {
  export: NbdExport;
  tls?: TlsCredentials;
  /** Clients served at once (qemu-nbd -e); 0 for no limit. Default 1. */
  shared?: number;
  /** Keep serving after the last client leaves (qemu-nbd -t). Default false. */
  persistent?: boolean;
  /** Time a client has to finish the handshake, in milliseconds. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Connections at once (served, negotiating or waiting); more are refused. Default 100. */
  maxConnections?: number;
  limits?: Partial<SessionLimits>;
  /** Request and reply data all clients together may make the server hold. Default 256 MiB. */
  maxBufferedBytes?: number;
  /** Diagnostics about clients (dropped connections, failed handshakes). */
  log?: (message: string) => void;
  /** Called once when the last client left a non-persistent server. */
  onIdle?: () => void;
}

interface Client {
  socket: net.Socket;
  state: 'waiting' | 'handshake' | 'session';
  session?: Session;
  timer?: NodeJS.Timeout;
}

export class NbdServer {
  readonly #options: NbdServerOptions;
  readonly #server: net.Server;
  readonly #clients = new Set<Client>();
  readonly #waiting: Client[] = [];
  readonly #budget: DataBudget;
  #active = 0;
  #hadClient = false;
  #closing: Promise<void> | undefined;
  #socketPath: string | undefined;
  #address: ListenAddress | undefined;

  constructor(options: NbdServerOptions) {
    this.#options = options;
    this.#budget = new DataBudget(options.maxBufferedBytes ?? 256 * 1024 * 1024);
    this.#server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => this.#accept(socket));
    this.#server.on('error', (err) => this.#options.log?.(`Server error: ${err.message}`));
  }

  get address(): ListenAddress | undefined {
    return this.#address;
  }

  /** Clients being served (in the handshake or the transmission phase). */
  get activeClients(): number {
    return this.#active;
  }

  get connections(): number {
    return this.#clients.size;
  }

  async listen(address: ListenAddress): Promise<ListenAddress> {
    if ('socket' in address) await removeStaleSocket(address.socket);
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => {
        this.#server.off('listening', onListening);
        socketError(address, err).then((cause) =>
          reject(fromSystemError(cause, `Could not listen on ${describe(address)}`)),
        );
      };
      const onListening = () => {
        this.#server.off('error', onError);
        resolve();
      };
      this.#server.once('error', onError);
      this.#server.once('listening', onListening);
      if ('socket' in address) this.#server.listen(address.socket);
      else this.#server.listen({ host: address.host, port: address.port });
    });
    if ('socket' in address) {
      this.#socketPath = address.socket;
      this.#address = address;
    } else {
      const bound = this.#server.address() as net.AddressInfo;
      this.#address = { host: address.host, port: bound.port };
    }
    return this.#address;
  }

  /** Stops accepting and serving; resolves when every client is gone. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const stopped = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    for (const client of [...this.#clients]) {
      if (client.state !== 'session') this.#drop(client);
    }
    await Promise.all([...this.#clients].map((c) => c.session?.shutdown()));
    await stopped;
    if (this.#socketPath) await unlink(this.#socketPath).catch(() => {});
  }

  #accept(socket: net.Socket): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    const limit = this.#options.maxConnections ?? 100;
    if (this.#clients.size >= limit) {
      this.#options.log?.(`Refusing a connection: ${this.#clients.size} clients are connected already`);
      socket.destroy();
      return;
    }
    socket.on('error', () => {});
    if (socket.remoteAddress !== undefined && socket.remoteFamily !== undefined) socket.setNoDelay(true);
    const client: Client = { socket, state: 'waiting' };
    this.#clients.add(client);
    socket.once('close', () => this.#gone(client));
    const shared = this.#options.shared ?? 1;
    if (shared > 0 && this.#active >= shared) this.#waiting.push(client);
    else this.#start(client);
  }

  #start(client: Client): void {
    this.#active++;
    this.#hadClient = true;
    client.state = 'handshake';
    const socket = client.socket;
    const timeout = this.#options.handshakeTimeoutMs ?? 10_000;
    client.timer = setTimeout(() => {
      this.#options.log?.(`Dropping a client that did not finish the handshake in ${timeout} ms`);
      this.#drop(client);
    }, timeout);
    client.timer.unref();
    const input = new SocketInput(socket);
    socket.resume();
    negotiate(socket, input, {
      export: this.#options.export,
      tls: this.#options.tls,
      shuttingDown: () => this.#closing !== undefined,
    }).then(
      (result) => {
        clearTimeout(client.timer);
        if (client.state !== 'handshake') return; // dropped meanwhile
        if (!result) {
          // NBD_OPT_ABORT: the client hangs up after reading the ACK.
          socket.end();
          return;
        }
        if (result.socket !== socket) {
          // TLS: the encrypted socket closes with the plain one, but errors must not escape.
          result.socket.on('error', () => {});
          result.socket.once('close', () => socket.destroy());
        }
        client.state = 'session';
        const session = new Session({
          export: this.#options.export,
          socket: result.socket,
          input: result.input,
          structured: result.structured,
          baseAllocation: result.baseAllocation,
          allocationDepth: result.allocationDepth,
          dirtyBitmaps: result.dirtyBitmaps,
          limits: this.#options.limits,
          budget: this.#budget,
          log: this.#options.log,
        });
        client.session = session;
        session.start();
      },
      (err: unknown) => {
        clearTimeout(client.timer);
        if (!(err instanceof InputClosed)) {
          const why = err instanceof HandshakeError || err instanceof VdiskError ? err.message : String(err);
          this.#options.log?.(`Handshake failed: ${why}`);
        }
        this.#drop(client);
      },
    );
  }

  #drop(client: Client): void {
    clearTimeout(client.timer);
    if (client.session) client.session.destroy();
    else client.socket.destroy();
  }

  #gone(client: Client): void {
    if (!this.#clients.delete(client)) return;
    clearTimeout(client.timer);
    const waitingAt = this.#waiting.indexOf(client);
    if (waitingAt >= 0) {
      this.#waiting.splice(waitingAt, 1);
      return;
    }
    const finish = () => {
      this.#active--;
      const next = this.#closing ? undefined : this.#waiting.shift();
      if (next) this.#start(next);
      else if (this.#active === 0 && this.#hadClient && !this.#options.persistent && !this.#closing) {
        this.#options.onIdle?.();
      }
    };
    // The slot is free once the requests still in flight on the backend are done.
    if (client.session) void client.session.closed.then(finish);
    else finish();
  }
}

function describe(address: ListenAddress): string {
  return 'socket' in address ? `'${address.socket}'` : `${address.host}:${address.port}`;
}

/**
 * libuv reports a socket path in a directory that does not exist as EACCES (as Windows would);
 * say what is really wrong, as qemu-nbd does.
 */
async function socketError(address: ListenAddress, err: Error): Promise<Error> {
  if (!('socket' in address) || (err as NodeJS.ErrnoException).code !== 'EACCES') return err;
  try {
    await stat(dirname(address.socket));
    return err;
  } catch (statErr) {
    return (statErr as NodeJS.ErrnoException).code === 'ENOENT' ? (statErr as Error) : err;
  }
}

/** A socket file left by a server that died is removed; any other file is not touched. */
async function removeStaleSocket(path: string): Promise<void> {
  let st: Awaited<ReturnType<typeof lstat>>;
  try {
    st = await lstat(path);
  } catch {
    return;
  }
  if (!st.isSocket()) {
    throw new VdiskError('EINVAL', `Could not listen on '${path}': the file exists and is not a socket`);
  }
  // Refuse to steal the socket of a server that is still running.
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new VdiskError('EBUSY', `Could not listen on '${path}': another server is listening there`);
  await unlink(path).catch(() => {});
}
