/** `vdisk bitmap`: qemu-img bitmap's arguments; the operations run in the order given. */
import { VdiskError } from '../block/errors.js';
import { formatDefinition } from '../engine/formats.js';
import { type BitmapAction, changeBitmap } from '../tools/bitmap.js';
import { parseSize } from '../tools/size.js';
import { type CliCommand, type CommandSpec, parseCommandLine } from './args.js';

const SPEC: CommandSpec = {
  name: 'bitmap',
  operands: 'filename bitmap',
  purpose: 'add, remove, clear, enable, disable or merge a persistent dirty bitmap (qemu-img bitmap)',
  description: `
Changes one persistent dirty bitmap of a qcow2 image, as qemu-img bitmap does. The operations run
in the order given; the bitmaps are stored when the image is closed. An enabled bitmap records
every range the guest writes from then on (incremental backups read it back: vdisk serve -B,
vdisk convert --bitmaps).`,
  options: {
    add: { type: 'boolean', help: 'create the bitmap, empty and enabled' },
    remove: { type: 'boolean', help: 'delete the bitmap' },
    clear: { type: 'boolean', help: 'clear every bit of the bitmap' },
    enable: { type: 'boolean', help: 'let writes set bits of the bitmap' },
    disable: { type: 'boolean', help: 'stop writes from setting bits of the bitmap' },
    merge: { type: 'string', arg: 'SOURCE', multiple: true, help: 'set every bit that is set in bitmap SOURCE' },
    granularity: {
      type: 'string',
      short: 'g',
      arg: 'GRANULARITY',
      help: 'bytes per bit for --add: a power of 2, at least 512 (default: the cluster size, 4k..64k)',
    },
    'source-file': { type: 'string', short: 'b', arg: 'SOURCE_FILE', help: 'the image that holds SOURCE of --merge' },
    'source-format': { type: 'string', short: 'F', arg: 'SOURCE_FMT', help: 'the format of SOURCE_FILE' },
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'image format; without it the format is probed' },
  },
  exitStatus: [
    [0, 'every operation succeeded'],
    [1, 'an operation failed or the image could not be opened'],
  ],
};

const OPERATIONS = new Set(['add', 'remove', 'clear', 'enable', 'disable', 'merge']);

function granularityOf(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  try {
    return parseSize(value as string);
  } catch {
    throw new VdiskError('EINVAL', 'Invalid granularity specified');
  }
}

export const bitmapCommand: CliCommand = {
  spec: SPEC,
  async run(args) {
    const { values, positionals, order } = parseCommandLine(SPEC, args);
    const sourceFile = values['source-file'] as string | undefined;
    const sourceFormat = values['source-format'] as string | undefined;
    const merges = order.includes('merge');
    if (sourceFile !== undefined && !merges) {
      throw new VdiskError('EINVAL', 'Merge bitmap source file only supported with --merge');
    }
    if (sourceFormat !== undefined && sourceFile === undefined) {
      throw new VdiskError('EINVAL', '-F only supported with -b');
    }
    // Each --merge takes its own SOURCE, in the order given.
    const sources = [...((values.merge as string[] | undefined) ?? [])];
    const actions: BitmapAction[] = order
      .filter((name) => OPERATIONS.has(name))
      .map((op) =>
        op === 'merge'
          ? {
              op,
              source: sources.shift()!,
              sourceFile,
              sourceFormat: sourceFormat === undefined ? undefined : formatDefinition(sourceFormat).name,
            }
          : { op: op as Exclude<BitmapAction['op'], 'merge'> },
      );
    if (actions.length === 0) {
      throw new VdiskError('EINVAL', 'Need at least one of --add, --remove, --clear, --enable, --disable, or --merge');
    }
    if (positionals.length !== 2) throw new VdiskError('EINVAL', 'Expecting filename and bitmap name');
    const [filename, bitmap] = positionals as [string, string];
    const format = values.format as string | undefined;
    await changeBitmap(filename, bitmap, {
      format: format === undefined ? 'probe' : formatDefinition(format).name,
      actions,
      granularity: granularityOf(values.granularity),
    });
    return 0;
  },
};
