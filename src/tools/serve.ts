/**
 * `serve`: exports an image over NBD, as qemu-nbd does. The operation behind `vdisk serve`,
 * usable from the JS API: serveImage() opens the image, listens, and returns a handle whose
 * close() stops the server cleanly (requests in flight finish, the image is flushed and closed).
 */
import type { BlockBackend } from '../block/backend.js';
import { type CacheModeName, parseCacheMode } from '../block/cache-mode.js';
import { VdiskError } from '../block/errors.js';
import { openImageWithFormat } from '../engine/open.js';
import type { FormatName, SnapshotRef } from '../format/format.js';
import { createExport, type DetectZeroes, type DiscardMode } from '../nbd/export.js';
import { type ListenAddress, NbdServer } from '../nbd/server.js';
import type { SessionLimits } from '../nbd/session.js';
import { loadTlsCredentials } from '../nbd/tls.js';
import type { NbdClientOptions } from '../remote/nbd/client-options.js';
import { fileName, optionsObject } from './arguments.js';
import { createSnapshotOverlay } from './serve-snapshot.js';

export interface ServeOptions {
  filename: string;
  /** The image format, or 'probe' (qemu-nbd's default without -f). Default 'probe'. */
  format?: FormatName | 'probe';
  /** Host cache mode; default writeback, as qemu-nbd. */
  cache?: CacheModeName;
  readOnly?: boolean;
  /** Serve an image another process holds writable (qemu-nbd -U; only read-only). */
  forceShare?: boolean;
  /** Export this internal snapshot's content, read-only (qemu-nbd -l). */
  snapshot?: SnapshotRef;
  /** Backing files must lie inside this directory (for images from untrusted hands). */
  confineBacking?: string;
  /** NBD URIs a confined backing chain may still name (any other URI is refused with confineBacking). */
  allowBackingUris?: readonly string[];
  /** Listen on this Unix socket (qemu-nbd -k); otherwise on TCP. */
  socket?: string;
  /** TCP port (default 10809; 0 picks a free one). */
  port?: number;
  /** TCP address to bind (default 0.0.0.0, as qemu-nbd). */
  bind?: string;
  /** Export name (default ''). */
  exportName?: string;
  description?: string;
  /** Clients at once (default 1; 0: no limit). */
  shared?: number;
  /** Keep serving after the last client leaves (default false, as qemu-nbd without -t). */
  persistent?: boolean;
  discard?: DiscardMode;
  detectZeroes?: DetectZeroes;
  /** Offer the qemu:allocation-depth context (qemu-nbd -A). */
  allocationDepth?: boolean;
  /** Persistent dirty bitmaps to offer as qemu:dirty-bitmap:NAME contexts (qemu-nbd -B). */
  bitmaps?: readonly string[];
  /**
   * Serve a temporary qcow2 overlay over the image (qemu-nbd -s): writes go to the overlay,
   * which is discarded when the server stops; the image is never modified.
   */
  temporaryOverlay?: boolean;
  /** A directory with ca-cert.pem, server-cert.pem and server-key.pem: TLS is then required. */
  tlsCreds?: string;
  /** Require a client certificate signed by the CA (default true, as QEMU's verify-peer). */
  tlsVerifyPeer?: boolean;
  /** Seconds a client has to finish the handshake (default 10). */
  handshakeTimeout?: number;
  limits?: Partial<SessionLimits>;
  /** Request and reply data all clients together may make the server hold (default 256 MiB). */
  maxBufferedBytes?: number;
  log?: (message: string) => void;
  /** Settings for the NBD client, when the image's backing file is an NBD URI. */
  nbd?: NbdClientOptions;
}

export interface ServeHandle {
  /** An NBD URI for the export (nbd+unix:///name?socket=… or nbd://host:port/name; nbds… with TLS). */
  readonly uri: string;
  readonly address: ListenAddress;
  readonly format: FormatName;
  /** The format was probed (not given) and found raw: block 0 is protected, as in QEMU. */
  readonly probedRaw: boolean;
  readonly size: number;
  readonly backend: BlockBackend;
  /** Resolves when the server has stopped and the image is closed (after close(), or idle). */
  readonly closed: Promise<void>;
  /** Stops serving: no new clients, requests in flight finish, the image is flushed and closed. */
  close(): Promise<void>;
}

export async function serveImage(serveOptions: ServeOptions): Promise<ServeHandle> {
  const options = optionsObject(serveOptions, 'serve options');
  fileName(options.filename, 'image file name');
  const discard = options.discard ?? 'ignore';
  const detectZeroes = options.detectZeroes ?? 'off';
  if (discard !== 'ignore' && discard !== 'unmap') {
    throw new VdiskError('EINVAL', `Invalid discard option: ${discard} (use ignore or unmap)`);
  }
  if (detectZeroes !== 'off' && detectZeroes !== 'on' && detectZeroes !== 'unmap') {
    throw new VdiskError('EINVAL', `Invalid detect-zeroes option: ${detectZeroes} (use off, on or unmap)`);
  }
  if (detectZeroes === 'unmap' && discard !== 'unmap') {
    throw new VdiskError('EINVAL', 'setting --detect-zeroes to unmap is not allowed without setting --discard=unmap');
  }
  const shared = options.shared ?? 1;
  if (!Number.isInteger(shared) || shared < 0)
    throw new VdiskError('EINVAL', `Invalid shared device number: ${shared}`);
  const port = options.port ?? 10809;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new VdiskError('EINVAL', `Invalid port: ${port}`);
  const exportName = options.exportName ?? '';
  if (Buffer.byteLength(exportName) > 4096) throw new VdiskError('EINVAL', 'The export name is longer than 4096 bytes');
  if (options.description !== undefined && Buffer.byteLength(options.description) > 4096) {
    throw new VdiskError('EINVAL', 'The export description is longer than 4096 bytes');
  }
  const handshakeTimeout = options.handshakeTimeout ?? 10;
  if (!(handshakeTimeout > 0)) throw new VdiskError('EINVAL', `Invalid handshake limit: ${handshakeTimeout}`);
  if (options.maxBufferedBytes !== undefined && !(options.maxBufferedBytes > 0)) {
    throw new VdiskError('EINVAL', `Invalid data budget: ${options.maxBufferedBytes} bytes`);
  }

  const tls =
    options.tlsCreds !== undefined
      ? await loadTlsCredentials(options.tlsCreds, { verifyPeer: options.tlsVerifyPeer ?? true })
      : undefined;
  const cache = parseCacheMode(options.cache ?? 'writeback');
  const requested = options.format ?? 'probe';
  if (options.temporaryOverlay && options.snapshot !== undefined) {
    throw new VdiskError('EINVAL', 'A temporary overlay (-s) and an internal snapshot (-l) cannot be served together');
  }
  const overlay = options.temporaryOverlay
    ? await createSnapshotOverlay(options.filename, requested, { forceShare: options.forceShare })
    : undefined;
  let opened: Awaited<ReturnType<typeof openImageWithFormat>>;
  try {
    opened = await openImageWithFormat(overlay?.filename ?? options.filename, {
      format: overlay ? 'qcow2' : requested,
      cache,
      // A snapshot is exported read-only, as qemu-nbd -l implies -r.
      readOnly: Boolean(options.readOnly) || options.snapshot !== undefined,
      forceShare: overlay ? false : options.forceShare,
      snapshot: options.snapshot,
      confineBacking: options.confineBacking,
      allowBackingUris: options.allowBackingUris,
      nbd: options.nbd,
    });
  } finally {
    // Open (or failed): its name goes now, and the data with the server.
    await overlay?.remove();
  }
  const { backend, format } = opened;

  let server: NbdServer | undefined;
  let resolveClosed!: () => void;
  let rejectClosed!: (err: unknown) => void;
  const closed = new Promise<void>((resolve, reject) => {
    resolveClosed = resolve;
    rejectClosed = reject;
  });
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      try {
        await server?.close();
      } finally {
        await backend.close();
      }
    })().then(resolveClosed, (err) => {
      rejectClosed(err);
      throw err;
    });
    return closing;
  };
  // Nobody may be awaiting `closed` (close() reports the same failure).
  closed.catch(() => {});

  try {
    const exp = createExport(backend, {
      name: exportName,
      description: options.description,
      readOnly: options.readOnly,
      // Every connection shares this one open image, so flushes are visible to all (qemu-nbd: -e > 1).
      multiConn: shared !== 1,
      allocationDepth: options.allocationDepth,
      bitmaps: options.bitmaps,
      discard,
      detectZeroes,
    });
    server = new NbdServer({
      export: exp,
      tls,
      shared,
      persistent: options.persistent,
      handshakeTimeoutMs: handshakeTimeout * 1000,
      limits: options.limits,
      maxBufferedBytes: options.maxBufferedBytes,
      log: options.log,
      onIdle: () => {
        close().catch(() => {});
      },
    });
    const address = await server.listen(
      options.socket !== undefined ? { socket: options.socket } : { host: options.bind ?? '0.0.0.0', port },
    );
    return {
      uri: nbdUri(address, exportName, tls !== undefined),
      address,
      format,
      probedRaw: requested === 'probe' && format === 'raw' && !exp.readOnly,
      size: backend.length,
      backend,
      closed,
      close,
    };
  } catch (err) {
    await close().catch(() => {});
    throw err;
  }
}

/** The NBD URI (as libnbd and QEMU read it) of an export at an address; nbds… when TLS is required. */
export function nbdUri(address: ListenAddress, exportName: string, tls = false): string {
  const name = encodeURIComponent(exportName).replace(/%2F/g, '/');
  const scheme = tls ? 'nbds' : 'nbd';
  if ('socket' in address)
    return `${scheme}+unix:///${name}?socket=${encodeURIComponent(address.socket).replace(/%2F/g, '/')}`;
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `${scheme}://${host}:${address.port}/${name}`;
}
