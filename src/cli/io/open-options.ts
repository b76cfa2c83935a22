/**
 * How `vdisk io` opens an image, at start and with `open`: qemu-io's -t/-n (cache), -d
 * (discard), -i (aio), -r, -U and vdisk's -f, checked with qemu-io's messages.
 */
import type { BlockBackend } from '../../block/backend.js';
import { type CacheMode, cacheMode, parseCacheMode } from '../../block/cache-mode.js';
import { VdiskError } from '../../block/errors.js';
import { formatDefinition } from '../../engine/formats.js';
import { openImageWithFormat } from '../../engine/open.js';
import type { NbdClientOptions } from '../../remote/nbd/client-options.js';

/** qemu-io's default cache mode: every write is durable before it is reported. */
export const IO_DEFAULT_CACHE = 'writethrough';

/** qemu-io's AIO back ends; vdisk runs every one on libuv's file I/O (see `vdisk io --help`). */
export const AIO_MODES = ['threads', 'native', 'io_uring'] as const;
export type AioMode = (typeof AIO_MODES)[number];

export interface IoOpenRequest {
  /** The format name, or undefined to probe. */
  format?: string;
  cache: CacheMode;
  readOnly: boolean;
  forceShare: boolean;
  /** Discards and zero writes with -u may free space (qemu-io's default, -d unmap). */
  unmap: boolean;
  aio: AioMode;
  /** How an NBD URI is connected (timeouts, connections). */
  nbd?: NbdClientOptions;
}

export interface IoOpenText {
  format?: string;
  cache?: string;
  nocache?: boolean;
  discard?: string;
  aio?: string;
  readOnly?: boolean;
  forceShare?: boolean;
  nbd?: NbdClientOptions;
}

/** qemu's discard modes: ignore/off keep discards from freeing anything, unmap/on let them. */
export function parseDiscard(text: string): boolean {
  if (text === 'unmap' || text === 'on') return true;
  if (text === 'ignore' || text === 'off') return false;
  throw new VdiskError('EINVAL', `Invalid discard option: ${text}`);
}

export function parseAio(text: string, cache: CacheMode): AioMode {
  if (!(AIO_MODES as readonly string[]).includes(text)) throw new VdiskError('EINVAL', `Invalid aio option: ${text}`);
  // Linux AIO needs O_DIRECT; qemu-io refuses the combination, and so does vdisk.
  if (text === 'native' && !cache.direct) {
    throw new VdiskError(
      'EINVAL',
      'aio=native was specified, but it requires cache.direct=on, which was not specified.',
    );
  }
  return text as AioMode;
}

/** Checks the options as qemu-io does; the default cache is writethrough, as in qemu-io. */
export function ioOpenRequest(text: IoOpenText): IoOpenRequest {
  const cache = text.nocache ? cacheMode('none') : parseCacheMode(text.cache ?? IO_DEFAULT_CACHE);
  return {
    format: text.format === undefined ? undefined : formatDefinition(text.format).name,
    cache,
    readOnly: Boolean(text.readOnly),
    forceShare: Boolean(text.forceShare),
    unmap: parseDiscard(text.discard ?? 'unmap'),
    aio: parseAio(text.aio ?? 'threads', cache),
    nbd: text.nbd,
  };
}

export interface OpenedForIo {
  backend: BlockBackend;
  format: string;
  /** The format was probed and found raw: block 0 is guarded. */
  probedRaw: boolean;
}

export async function openForIo(filename: string, request: IoOpenRequest): Promise<OpenedForIo> {
  const { backend, format } = await openImageWithFormat(filename, {
    format: request.format === undefined ? 'probe' : formatDefinition(request.format).name,
    cache: request.cache,
    readOnly: request.readOnly,
    forceShare: request.forceShare,
    nbd: request.nbd,
  });
  return { backend, format, probedRaw: request.format === undefined && format === 'raw' };
}

/** The warning qemu-io gives for a probed raw image, in vdisk's words. */
export function probedRawWarning(filename: string): string {
  return `vdisk: warning: Image format was not specified for '${filename}' and probing guessed raw; writes that would change how block 0 probes are refused (use -f raw)\n`;
}
