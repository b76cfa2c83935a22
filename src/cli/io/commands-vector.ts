/**
 * qemu-io's vectored and asynchronous requests: readv and writev (several lengths, one request),
 * aio_read and aio_write (the same, left in flight: their reports print when they complete,
 * and aio_flush, close or the end of the session waits for them).
 */
import { type CommandInfo, errorText, type IoContext, usageOf } from './command-info.js';
import {
  CommandError,
  cvtnum,
  getopt,
  hexDump,
  parsePattern,
  patternMismatch,
  reportText,
  timed,
  vectorLengths,
} from './text.js';

interface VectorRequest {
  flags: Map<string, string>;
  offset: number;
  /** The lengths given, one buffer each in qemu-io; vdisk sends them as one request too. */
  lengths: number[];
  total: number;
  pattern?: number;
}

function parseVector(session: IoContext, command: CommandInfo, argv: string[], spec: string): VectorRequest | false {
  const { flags, rest } = getopt(argv, spec, usageOf(command));
  const map = new Map(flags);
  if (rest.length < 2) return session.usage(command);
  const pattern = map.has('P') ? parsePattern(map.get('P')!) : undefined;
  const offset = cvtnum(rest[0]!);
  const lengths = vectorLengths(rest.slice(1));
  return { flags: map, offset, lengths, total: lengths.reduce((a, b) => a + b, 0), pattern };
}

/** What a completed read prints: the pattern check, the dump (-v) and the report (unless -q). */
function readDone(session: IoContext, request: VectorRequest, buf: Buffer, seconds: number): boolean {
  const mismatch = patternMismatch(buf, request.pattern, request.offset);
  if (mismatch) session.out(mismatch);
  if (request.flags.has('q')) return mismatch === undefined;
  if (request.flags.has('v')) session.out(hexDump(buf, request.offset));
  session.out(reportText('read', seconds, request.offset, request.total, request.flags.has('C')));
  return mismatch === undefined;
}

function writeDone(session: IoContext, request: VectorRequest, count: number, seconds: number): void {
  if (!request.flags.has('q')) session.out(reportText('wrote', seconds, request.offset, count, request.flags.has('C')));
}

export const readvCommand: CommandInfo = {
  name: 'readv',
  args: '[-Cqv] [-P pattern] off len [len..]',
  oneline: 'reads a number of bytes at a specified offset',
  argmin: 2,
  argmax: -1,
  async run(session, argv) {
    const request = parseVector(session, this, argv, 'CP:qv');
    if (!request) return false;
    const buf = Buffer.alloc(request.total, 0xab);
    let seconds: number;
    try {
      seconds = await timed(() => session.backend.readInto(request.offset, buf));
    } catch (err) {
      throw new CommandError(`readv failed: ${errorText(err)}`);
    }
    return readDone(session, request, buf, seconds);
  },
};

export const writevCommand: CommandInfo = {
  name: 'writev',
  args: '[-Cfq] [-P pattern] off len [len..]',
  oneline: 'writes a number of bytes at a specified offset',
  argmin: 2,
  argmax: -1,
  writes: true,
  async run(session, argv) {
    const request = parseVector(session, this, argv, 'CfqP:');
    if (!request) return false;
    const buf = Buffer.alloc(request.total, request.pattern ?? 0xcd);
    let seconds: number;
    try {
      seconds = await timed(() => session.backend.write(request.offset, buf, { fua: request.flags.has('f') }));
    } catch (err) {
      throw new CommandError(`writev failed: ${errorText(err)}`);
    }
    writeDone(session, request, request.total, seconds);
    return true;
  },
};

/**
 * Leaves `op` in flight. As in qemu-io, the command succeeds once the request is submitted: a
 * failure or a pattern mismatch is printed when it completes and does not change the exit status.
 */
function submit(session: IoContext, op: () => Promise<void>, done: (seconds: number) => void, failed: string): void {
  session.track(
    timed(op).then(done, (err) => {
      session.err(`${failed}: ${errorText(err)}\n`);
    }),
  );
}

export const aioReadCommand: CommandInfo = {
  name: 'aio_read',
  args: '[-Ciqv] [-P pattern] off len [len..]',
  oneline: 'asynchronously reads a number of bytes',
  argmin: 2,
  argmax: -1,
  async run(session, argv) {
    const request = parseVector(session, this, argv, 'CiP:qv');
    if (!request) return false;
    if (request.flags.has('i')) {
      // qemu-io counts an invalid request in its statistics; vdisk only says so.
      session.out('injecting invalid read request\n');
      return true;
    }
    const buf = Buffer.alloc(request.total, 0xab);
    const backend = session.backend;
    submit(
      session,
      () => backend.readInto(request.offset, buf),
      (seconds) => readDone(session, request, buf, seconds),
      'readv failed',
    );
    return true;
  },
};

export const aioWriteCommand: CommandInfo = {
  name: 'aio_write',
  args: '[-Cfiquz] [-P pattern] off len [len..]',
  oneline: 'asynchronously writes a number of bytes',
  argmin: 2,
  argmax: -1,
  writes: true,
  async run(session, argv) {
    const request = parseVector(session, this, argv, 'CfiP:quz');
    if (!request) return false;
    const zero = request.flags.has('z');
    if (request.flags.has('u') && !zero) throw new CommandError('-u requires -z to be specified');
    if (zero && request.lengths.length > 1) throw new CommandError('-z supports only a single length parameter');
    if (request.flags.has('i')) {
      session.out('injecting invalid write request\n');
      return true;
    }
    const backend = session.backend;
    const fua = request.flags.has('f');
    // -z ignores -P, as in qemu-io.
    const count = request.total;
    const mayUnmap = request.flags.has('u') && session.unmap;
    const op = zero
      ? () => backend.writeZeroes(request.offset, count, { fua, mayUnmap })
      : () => backend.write(request.offset, Buffer.alloc(count, request.pattern ?? 0xcd), { fua });
    submit(session, op, (seconds) => writeDone(session, request, count, seconds), 'aio_write failed');
    return true;
  },
};

export const aioFlushCommand: CommandInfo = {
  name: 'aio_flush',
  args: '',
  oneline: 'completes all outstanding aio requests',
  argmin: 0,
  argmax: 0,
  async run(session) {
    await session.drain();
    return true;
  },
};
