/**
 * `map`: where an image's guest ranges are, as qemu-img map reports them (img_map and
 * get_block_status in qemu-img.c): block status is asked in pieces of at most 1 GiB and
 * neighbouring answers are merged when they agree in everything and their host offsets continue.
 */
import type { BlockBackend } from '../block/backend.js';
import type { Extent } from '../block/driver.js';
import { VdiskError } from '../block/errors.js';

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

/** The image's map: merged entries covering [start, end) (one empty entry for an empty range). */
export async function mapImage(backend: BlockBackend, options: MapOptions = {}): Promise<MapEntry[]> {
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

/** qemu-img map --output=json, byte for byte (with the final newline). */
export function formatMapJson(entries: readonly MapEntry[]): string {
  const lines = entries.map((e) => {
    let text =
      `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth},` +
      ` "present": ${e.present}, "zero": ${e.zero}, "data": ${e.data}`;
    if (e.offset !== undefined) text += `, "offset": ${e.offset}`;
    return `${text}}`;
  });
  return `[${lines.join(',\n')}]\n`;
}

/** C's "%#-16" PRIx64: hex with 0x (but plain "0" for zero), padded to 16 columns. */
function hexColumn(value: number): string {
  return (value === 0 ? '0' : `0x${value.toString(16)}`).padEnd(16);
}

/**
 * qemu-img map's human output: a table of the ranges that hold data, with where they are in
 * which file. Fails as qemu-img does when data has no host offset (compressed, encrypted).
 */
export function formatMapHuman(entries: readonly MapEntry[]): string {
  let text = `${'Offset'.padEnd(16)}${'Length'.padEnd(16)}${'Mapped to'.padEnd(16)}File\n`;
  for (const e of entries) {
    if (e.data && e.offset === undefined) {
      throw new VdiskError('ENOTSUP', 'File contains external, encrypted or compressed clusters.');
    }
    if (e.data && !e.zero)
      text += `${hexColumn(e.start)}${hexColumn(e.length)}${hexColumn(e.offset ?? 0)}${e.filename ?? ''}\n`;
  }
  return text;
}
