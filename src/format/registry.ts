/**
 * The formats vdisk knows, each with how to recognise it, open it over a child node and
 * create it. Everything that picks a format goes through here.
 */
import type { CacheMode } from '../block/cache-mode.js';
import type { BlockDriver } from '../block/driver.js';
import { VdiskError } from '../block/errors.js';
import type { FormatCreator } from './create-options.js';
import { qcow2Creator } from './qcow2/create.js';
import { openQcow2 } from './qcow2/open.js';
import { RawDriver } from './raw.js';
import { rawCreator } from './raw-create.js';

export type FormatName = 'raw' | 'qcow2';

/** What a format needs to open the images an image refers to (backing files). */
export interface OpenContext {
  filename: string | undefined;
  cache: CacheMode;
  readOnly: boolean;
  /** qcow2: bytes of L2 tables to cache. */
  l2CacheSize?: number;
  /** Opens another image through the open policy (relative names, depth, loops). */
  openBacking?: (name: string, format: FormatName | undefined) => Promise<BlockDriver>;
}

export interface FormatDefinition {
  name: FormatName;
  /** True when the first bytes of a file are this format's. Raw matches everything, so it is tried last. */
  probe(head: Buffer): boolean;
  open(child: BlockDriver, context: OpenContext): Promise<BlockDriver>;
  /** How to make a new image of this format (its -o options and the creation itself). */
  create?: FormatCreator;
}

const QCOW2_MAGIC = 0x514649fb;

const formats = new Map<FormatName, FormatDefinition>([
  [
    'raw',
    {
      name: 'raw',
      probe: () => true,
      open: async (child) => new RawDriver(child),
      create: rawCreator,
    },
  ],
  [
    'qcow2',
    {
      name: 'qcow2',
      probe: (head) => head.length >= 4 && head.readUInt32BE(0) === QCOW2_MAGIC,
      open: (child, context) => openQcow2(child, context, { l2CacheSize: context.l2CacheSize }),
      create: qcow2Creator,
    },
  ],
]);

/** Makes a format available (qcow2 registers itself from its module). */
export function registerFormat(definition: FormatDefinition): void {
  formats.set(definition.name, definition);
}

export function formatDefinition(name: string): FormatDefinition {
  const definition = formats.get(name as FormatName);
  if (!definition) throw new VdiskError('EINVAL', `Unknown file format '${name}'`);
  return definition;
}

/** Names a format from an image's first bytes, as qemu-img does when no format is given. */
export function probeFormat(head: Buffer): FormatName {
  if (head.length >= 4 && head.readUInt32BE(0) === QCOW2_MAGIC && formats.has('qcow2')) return 'qcow2';
  return 'raw';
}

/** The names of the registered formats, sorted (for help texts). */
export function formatNames(): FormatName[] {
  return [...formats.keys()].sort();
}
