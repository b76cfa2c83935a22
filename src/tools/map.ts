/**
 * `map`: where an image's guest ranges are, as qemu-img map reports them (img_map and
 * get_block_status in qemu-img.c): block status is asked in pieces of at most 1 GiB and
 * neighbouring answers are merged when they agree in everything and their host offsets continue.
 */
import type { BlockBackend } from '../block/backend.js';
import type { Extent } from '../block/driver.js';
import { VdiskError } from '../block/errors.js';
import type { FormatName } from '../format/format.js';
import type { NbdClientOptions } from '../remote/nbd/client-options.js';
import { type ImageSource, withImage } from './image-source.js';

export interface MapEntry {
  start: number;
  length: number;
  /** How many backing layers down the data was found (0: this image). */
  depth: number;
  /** Some layer of the chain decides what the range reads as. */
  present: boolean;
  zero: boolean;
  data: boolean;
  /** Host offset of the range in `filename`, when the bytes are stored there as is. */
  offset?: number;
  /** The host file holding the range (only with an offset). */
  filename?: string;
}

export interface MapOptions {
  /** First guest offset to report (qemu-img map --start-offset). */
  start?: number;
  /** Report at most this many bytes (--max-length). */
  length?: number;
  /** For a path: the format (default: probed). */
  format?: FormatName | 'probe';
  /** For a path: read an image another process holds writable (qemu-img's -U). */
  forceShare?: boolean;
  /** Settings for the NBD client, for every NBD URI the call opens. */
  nbd?: NbdClientOptions;
}

const PROBE_LIMIT = 1 << 30;

function toEntry(extent: Extent): MapEntry {
  const hasOffset = extent.hostOffset !== undefined;
  const entry: MapEntry = {
    start: extent.offset,
    length: extent.length,
    depth: extent.depth ?? 0,
    present: extent.allocated,
    zero: extent.zero,
    data: extent.data,
  };
  if (hasOffset) {
    entry.offset = extent.hostOffset;
    if (extent.hostFile !== undefined) entry.filename = extent.hostFile;
  }
  return entry;
}

/** QEMU's entry_mergeable. */
function mergeable(curr: MapEntry, next: MapEntry): boolean {
  if (curr.length === 0) return false;
  if (
    curr.zero !== next.zero ||
    curr.data !== next.data ||
    curr.depth !== next.depth ||
    curr.present !== next.present ||
    (curr.filename === undefined) !== (next.filename === undefined) ||
    (curr.offset === undefined) !== (next.offset === undefined)
  ) {
    return false;
  }
  if (curr.filename !== undefined && curr.filename !== next.filename) return false;
  if (curr.offset !== undefined && curr.offset + curr.length !== next.offset) return false;
  return true;
}

/**
 * The image's map: merged entries covering [start, end) (one empty entry for an empty range).
 * A path is opened read-only with its backing chain.
 */
export function mapImage(image: ImageSource, options: MapOptions = {}): Promise<MapEntry[]> {
  return withImage(
    image,
    { format: options.format, readOnly: true, forceShare: options.forceShare, nbd: options.nbd },
    (backend) => mapBackend(backend, options),
  );
}

async function mapBackend(backend: BlockBackend, options: MapOptions): Promise<MapEntry[]> {
  const start = options.start ?? 0;
  let end = backend.length;
  if (options.length !== undefined) end = Math.min(start + options.length, end);
  const entries: MapEntry[] = [];
  let curr: MapEntry = { start, length: 0, depth: 0, present: false, zero: false, data: false };
  while (curr.start + curr.length < end) {
    const offset = curr.start + curr.length;
    const extent = await backend.blockStatus(offset, Math.min(PROBE_LIMIT, end - offset));
    if (extent.length <= 0) {
      throw new VdiskError('EIO', `Could not read file metadata: empty block status at offset ${offset}`);
    }
    const next = toEntry({ ...extent, offset, length: Math.min(extent.length, end - offset) });
    if (mergeable(curr, next)) {
      curr.length += next.length;
      continue;
    }
    if (curr.length > 0) entries.push(curr);
    curr = next;
  }
  entries.push(curr);
  return entries;
}
