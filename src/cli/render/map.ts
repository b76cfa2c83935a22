/** qemu-img map's two layouts: the JSON lines of --output=json and the human table. */
import { VdiskError } from '../../block/errors.js';
import type { MapEntry } from '../../tools/map.js';

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
