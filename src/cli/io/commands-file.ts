/** qemu-io's commands for the session itself: open, close, sleep and quit. */
import { type CommandInfo, errorText, usageOf } from './command-info.js';
import { type IoOpenText, ioOpenRequest } from './open-options.js';
import { CommandError, getopt } from './text.js';

export const openCommand: CommandInfo = {
  name: 'open',
  args: '[-rnU] [-t cache] [-d discard] [-i aio] [-f fmt] [-o driver=fmt] path',
  oneline: 'open the file specified by path',
  argmin: 1,
  argmax: -1,
  noFile: true,
  async run(session, argv) {
    const { flags, rest } = getopt(argv, 'rnUt:d:i:f:o:', usageOf(this));
    const text: IoOpenText = {};
    for (const [c, arg] of flags) {
      if (c === 'r') text.readOnly = true;
      else if (c === 'n') text.nocache = true;
      else if (c === 'U') text.forceShare = true;
      else if (c === 't') text.cache = arg;
      else if (c === 'd') text.discard = arg;
      else if (c === 'i') text.aio = arg;
      else if (c === 'f') text.format = arg;
      else if (c === 'o') text.format = driverOption(arg);
    }
    if (rest.length !== 1) return session.usage(this);
    if (session.hasImage) throw new CommandError("vdisk: file open already, try 'help close'");
    try {
      await session.openImage(rest[0]!, ioOpenRequest(text));
    } catch (err) {
      throw new CommandError(`vdisk: ${errorText(err)}`);
    }
    return true;
  },
};

/** qemu-io's `-o driver=FMT`, the one block option vdisk takes there. */
function driverOption(text: string): string {
  let format: string | undefined;
  for (const item of text.split(',')) {
    const [key, value] = item.split('=', 2);
    if (key !== 'driver' || !value)
      throw new CommandError(`vdisk: Unsupported open option '${item}' (only driver=FMT)`);
    format = value;
  }
  return format!;
}

export const closeCommand: CommandInfo = {
  name: 'close',
  args: '',
  oneline: 'close the current open file',
  argmin: 0,
  argmax: 0,
  async run(session) {
    try {
      await session.closeImage();
    } catch (err) {
      throw new CommandError(`vdisk: ${errorText(err)}`);
    }
    return true;
  },
};

export const sleepCommand: CommandInfo = {
  name: 'sleep',
  args: '',
  oneline: 'waits for the given value in milliseconds',
  argmin: 1,
  argmax: 1,
  noFile: true,
  async run(_session, argv) {
    const text = argv[1]!;
    if (!/^[0-9]+$/.test(text)) throw new CommandError(`${text} is not a valid number`);
    // Requests in flight go on completing meanwhile, as in qemu-io's main loop.
    await new Promise((resolve) => setTimeout(resolve, Number(text)));
    return true;
  },
};

export const quitCommand: CommandInfo = {
  name: 'quit',
  alias: 'q',
  args: '',
  oneline: 'exit the program',
  argmin: 0,
  argmax: 0,
  noFile: true,
  async run(session) {
    session.quit = true;
    return true;
  },
};
