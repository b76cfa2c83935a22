/** `vdisk snapshot`: qemu-img snapshot's arguments, its "Snapshot list:" table and its exit statuses. */
import { VdiskError } from '../block/errors.js';
import { formatDefinition } from '../engine/formats.js';
import { applySnapshot, createSnapshot, deleteSnapshot, listSnapshots } from '../tools/snapshot.js';
import { type CliCommand, type CommandSpec, oneFilename, parseCommandLine, usageError } from './args.js';
import { formatSnapshotList } from './render/snapshots.js';

const SPEC: CommandSpec = {
  name: 'snapshot',
  operands: 'filename',
  purpose: 'list, create, apply or delete internal snapshots (qemu-img snapshot)',
  description: `
Manages the internal snapshots of a qcow2 image, as qemu-img snapshot does: -l lists them (the
table info prints), -c records the image's content now under a name (names need not be unique;
the id is the next number), -a makes the image's content and size those of a snapshot (named by
id or name), -d removes the first snapshot of a name and frees what only it used. A snapshot
shares every cluster with the image until one side writes it (copy-on-write). An operation
interrupted by a crash leaves the image as it was before or after, with leaked clusters at worst.`,
  options: {
    list: { type: 'boolean', short: 'l', help: 'list the snapshots' },
    create: { type: 'string', short: 'c', arg: 'snapshot', help: 'create a snapshot of this name' },
    apply: {
      type: 'string',
      short: 'a',
      arg: 'snapshot',
      help: "apply a snapshot (its id or name): the image's content goes back to it",
    },
    delete: { type: 'string', short: 'd', arg: 'snapshot', help: 'delete the first snapshot of this name' },
    format: { type: 'string', short: 'f', arg: 'fmt', help: 'image format; without it the format is probed' },
    quiet: { type: 'boolean', short: 'q', help: 'quiet: print nothing but the list and errors' },
    'force-share': {
      type: 'boolean',
      short: 'U',
      help: 'list the snapshots of an image another process holds (only with -l)',
    },
  },
  exitStatus: [
    [0, 'success'],
    [1, 'failure (one line on stderr says why: no such snapshot, a format without snapshots)'],
  ],
};

export const snapshotCommand: CliCommand = {
  spec: SPEC,
  async run(args, streams) {
    const { values, positionals } = parseCommandLine(SPEC, args);
    const actions = (['list', 'create', 'apply', 'delete'] as const).filter((a) => values[a] !== undefined);
    if (actions.length > 1) throw usageError('snapshot', "Cannot mix '-l', '-a', '-c', '-d'");
    const filename = oneFilename('snapshot', positionals);
    const format = values.format as string | undefined;
    const options = {
      format: format === undefined ? ('probe' as const) : formatDefinition(format).name,
      forceShare: Boolean(values['force-share']),
    };
    const action = actions[0];
    if (action === undefined || action === 'list') {
      // Without an action qemu-img opens the image and does nothing more.
      const snapshots = await listSnapshots(filename, options);
      if (action === 'list' && snapshots.length > 0) streams.out(formatSnapshotList(snapshots));
      return 0;
    }
    if (options.forceShare) {
      throw new VdiskError(
        'EINVAL',
        `Could not open '${filename}': force-share (-U) can only be used with read-only images`,
      );
    }
    const name = values[action] as string;
    if (action === 'create') await createSnapshot(filename, name, options);
    else if (action === 'apply') await applySnapshot(filename, name, options);
    else await deleteSnapshot(filename, name, options);
    return 0;
  },
};
