/**
 * What the server exports: one open image with its name, description and the policies that
 * the handshake and the sessions share (read-only, discard, detect-zeroes, allocation depth).
 */
import type { BlockBackend } from '../block/backend.js';
import type { DirtyBitmapView } from '../block/driver.js';
import { VdiskError } from '../block/errors.js';
import { MAX_PAYLOAD, TF } from '../nbd-wire/protocol.js';

export type DiscardMode = 'ignore' | 'unmap';
export type DetectZeroes = 'off' | 'on' | 'unmap';

export interface NbdExport {
  readonly name: string;
  readonly description: string | undefined;
  readonly backend: BlockBackend;
  readonly readOnly: boolean;
  /** Transmission flags without SEND_DF (which depends on the client's structured replies). */
  readonly flags: number;
  /** qemu:allocation-depth can be selected (qemu-nbd -A). */
  readonly allocationDepth: boolean;
  /** The persistent dirty bitmaps exported as qemu:dirty-bitmap:NAME contexts (qemu-nbd -B). */
  readonly bitmaps: readonly DirtyBitmapView[];
  readonly discard: DiscardMode;
  readonly detectZeroes: DetectZeroes;
  /** The NBD minimum block size for clients that ask for it: the image's request alignment. */
  readonly minimumBlockSize: number;
  /** The largest READ/WRITE the server accepts. */
  readonly maximumPayload: number;
  /** Buffers should be 4096-aligned (the image bypasses the host page cache). */
  readonly alignedBuffers: boolean;
}

export interface ExportOptions {
  name?: string;
  description?: string;
  readOnly?: boolean;
  /** Advertise NBD_FLAG_CAN_MULTI_CONN (safe here: every connection shares one open image). */
  multiConn?: boolean;
  allocationDepth?: boolean;
  /** Names of persistent dirty bitmaps of the image to export. */
  bitmaps?: readonly string[];
  discard?: DiscardMode;
  detectZeroes?: DetectZeroes;
}

/** The transmission flags qemu-nbd 7.2 sends for the same settings (without SEND_DF). */
export function exportFlags(readOnly: boolean, multiConn: boolean): number {
  let flags = TF.HAS_FLAGS | TF.SEND_FLUSH | TF.SEND_FUA | TF.SEND_CACHE;
  if (readOnly) flags |= TF.READ_ONLY;
  else flags |= TF.SEND_TRIM | TF.SEND_WRITE_ZEROES | TF.SEND_FAST_ZERO;
  if (multiConn) flags |= TF.CAN_MULTI_CONN;
  return flags;
}

export function createExport(backend: BlockBackend, options: ExportOptions = {}): NbdExport {
  const readOnly = Boolean(options.readOnly) || backend.readOnly;
  const alignment = backend.describe().alignment;
  const request = alignment.request;
  return {
    name: options.name ?? '',
    description: options.description,
    backend,
    readOnly,
    flags: exportFlags(readOnly, Boolean(options.multiConn)),
    allocationDepth: Boolean(options.allocationDepth),
    bitmaps: (options.bitmaps ?? []).map((name) => exportedBitmap(backend, name, readOnly)),
    discard: options.discard ?? 'ignore',
    detectZeroes: options.detectZeroes ?? 'off',
    // The spec caps the minimum at 64 KiB and wants a power of two.
    minimumBlockSize: request > 1 && request <= 65536 && (request & (request - 1)) === 0 ? request : 1,
    maximumPayload: MAX_PAYLOAD,
    alignedBuffers: alignment.memory > 1,
  };
}

/** A bitmap for -B, refused as qemu-nbd refuses it. */
function exportedBitmap(backend: BlockBackend, name: string, readOnly: boolean): DirtyBitmapView {
  const bitmaps = backend.persistentBitmaps();
  const list = bitmaps?.list() ?? [];
  if (!bitmaps || !list.some((b) => b.name === name)) throw new VdiskError('EINVAL', `Bitmap '${name}' is not found`);
  const bitmap = bitmaps.get(name);
  // A read-only export of an image others may write would show a bitmap that keeps changing.
  if (readOnly && !backend.readOnly && bitmap.enabled) {
    throw new VdiskError('EINVAL', `Enabled bitmap '${name}' incompatible with readonly export`);
  }
  return bitmap;
}
