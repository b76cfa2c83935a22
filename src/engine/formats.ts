/**
 * The formats vdisk knows. Everything that names or recognises a format asks here; probing asks
 * each format's own probe(), in the order FORMAT_NAMES gives (raw, which matches anything, last).
 */
import { VdiskError } from '../block/errors.js';
import { FORMAT_NAMES, type FormatDefinition, type FormatName } from '../format/format.js';
import { qcow2Format } from '../format/qcow2/index.js';
import { rawFormat } from '../format/raw/index.js';

const FORMATS: ReadonlyMap<FormatName, FormatDefinition> = new Map([
  ['qcow2', qcow2Format],
  ['raw', rawFormat],
]);

/** The definition of the format called `name`; EINVAL for a name vdisk does not know. */
export function formatDefinition(name: string): FormatDefinition {
  const definition = FORMATS.get(name as FormatName);
  if (!definition) throw new VdiskError('EINVAL', `Unknown file format '${name}'`);
  return definition;
}

/** Whether `name` is a format vdisk knows. */
export function isFormatName(name: unknown): name is FormatName {
  return typeof name === 'string' && FORMATS.has(name as FormatName);
}

/** Names a format from an image's first bytes, as qemu-img does when no format is given. */
export function probeFormat(head: Buffer): FormatName {
  for (const name of FORMAT_NAMES) if (FORMATS.get(name)!.probe(head)) return name;
  return 'raw';
}

/** The names of the known formats, sorted (for help texts). */
export function formatNames(): FormatName[] {
  return [...FORMATS.keys()].sort();
}
