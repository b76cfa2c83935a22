/** qemu-io's commands that describe the image: length, info, map and alloc. */
import type { BlockBackend, ImageDescription } from '../../block/backend.js';
import { VdiskError } from '../../block/errors.js';
import { formatIoSize } from '../../tools/size.js';
import { dumpQobject } from '../render/qemu-json.js';
import { type CommandInfo, errorText } from './command-info.js';
import { CommandError, cvtnum } from './text.js';

export const lengthCommand: CommandInfo = {
  name: 'length',
  alias: 'l',
  args: '',
  oneline: 'gets the length of the current file',
  argmin: 0,
  argmax: 0,
  async run(session) {
    session.out(`${formatIoSize(session.backend.length)}\n`);
    return true;
  },
};

/** The vm state offset QEMU reports for qcow2: the guest size rounded up to what one L2 table maps. */
function vmStateOffset(d: ImageDescription): number {
  if (d.clusterSize === undefined) return 0;
  const extended = d.formatSpecific?.data['extended-l2'] === true;
  const span = (d.clusterSize * d.clusterSize) / (extended ? 16 : 8);
  return Math.ceil(d.virtualSize / span) * span;
}

export const infoCommand: CommandInfo = {
  name: 'info',
  alias: 'i',
  args: '',
  oneline: 'prints information about the current file',
  argmin: 0,
  argmax: 0,
  async run(session) {
    const d = session.backend.describe();
    session.out(`format name: ${session.format}\n`);
    session.out(`cluster size: ${formatIoSize(d.clusterSize ?? 0)}\n`);
    session.out(`vm state offset: ${formatIoSize(vmStateOffset(d))}\n`);
    if (d.formatSpecific) session.out(`Format specific information:\n${dumpQobject(d.formatSpecific.data, 1)}`);
    return true;
  },
};

/** Whether the start of a range is allocated in the image itself (not its backing file), and for how long. */
async function layerExtent(
  backend: BlockBackend,
  offset: number,
  length: number,
): Promise<{ allocated: boolean; length: number }> {
  const extent = await backend.blockStatus(offset, length);
  if (extent.length <= 0) throw new VdiskError('EIO', 'Unexpected end of image');
  return { allocated: extent.allocated && (extent.depth ?? 0) === 0, length: Math.min(extent.length, length) };
}

export const mapCommand: CommandInfo = {
  name: 'map',
  args: '',
  oneline: 'prints the allocated areas of a file',
  argmin: 0,
  argmax: 0,
  async run(session) {
    const backend = session.backend;
    let offset = 0;
    let remaining = backend.length;
    try {
      while (remaining > 0) {
        // Runs of equal allocation at this layer, as qemu-io's map_is_allocated merges them.
        let first: boolean | undefined;
        let run = 0;
        while (run < remaining) {
          const extent = await layerExtent(backend, offset + run, remaining - run);
          if (first === undefined) first = extent.allocated;
          else if (extent.allocated !== first) break;
          run += extent.length;
        }
        const state = first ? '    allocated' : 'not allocated';
        session.out(
          `${formatIoSize(run)} (0x${run.toString(16)}) bytes ${state} at offset ${formatIoSize(offset)} (0x${offset.toString(16)})\n`,
        );
        offset += run;
        remaining -= run;
      }
      return true;
    } catch (err) {
      throw new CommandError(`vdisk: Failed to get allocation status: ${errorText(err)}`);
    }
  },
};

export const allocCommand: CommandInfo = {
  name: 'alloc',
  args: 'offset [count]',
  oneline: 'checks if offset is allocated in the file',
  argmin: 1,
  argmax: 2,
  async run(session, argv) {
    const backend = session.backend;
    const offset = cvtnum(argv[1]!);
    // One sector unless told; a range past the end counts only up to the end, as in qemu-io.
    let count = argv.length > 2 ? cvtnum(argv[2]!) : 512;
    let allocated = 0;
    let at = offset;
    let remaining = count;
    try {
      while (remaining > 0) {
        if (at >= backend.length) {
          count -= remaining;
          break;
        }
        const extent = await layerExtent(backend, at, Math.min(remaining, backend.length - at));
        if (extent.allocated) allocated += extent.length;
        at += extent.length;
        remaining -= extent.length;
      }
    } catch (err) {
      throw new CommandError(`is_allocated failed: ${errorText(err)}`);
    }
    session.out(`${allocated}/${count} bytes allocated at offset ${formatIoSize(offset)}\n`);
    return true;
  },
};
