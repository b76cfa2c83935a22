/**
 * `io`: an analogue of qemu-io over a BlockBackend. An IoSession runs command lines such as
 * "write -P 0xab 0 64k" and prints what qemu-io 7.2 prints for them, line for line: the same
 * reports, hex dumps, pattern checks and usage errors. Where qemu-io only says "Input/output
 * error", vdisk prints its own reason ("read failed: Request past the end of the image: …").
 * The commands are in commands-*.ts; this file holds the open image and the requests in flight.
 *
 * One difference on purpose: every diagnostic of a failed command is one line on the err
 * stream (qemu-io prints some of them, and usage texts, on stdout), so that stdout carries only
 * results: reports, dumps, "Pattern verification failed …", info, map and length.
 */
import type { BlockBackend } from '../../block/backend.js';
import { VdiskError } from '../../block/errors.js';
import { type CommandInfo, type IoContext, usageOf } from './command-info.js';
import { findCommand } from './commands.js';
import { type IoOpenRequest, type OpenedForIo, openForIo, probedRawWarning } from './open-options.js';
import { CommandError } from './text.js';

export { ioCommandNames } from './commands.js';
export { CommandError, hexDump, MAX_REQUEST_BYTES } from './text.js';

export interface IoSessionOptions {
  /** The open image; without one, commands other than open, help and quit fail until `open`. */
  backend?: BlockBackend;
  /** The image format, for `info`. */
  format?: string;
  /** The format was probed, not given (shown in the warning only). */
  probed?: boolean;
  /** Discards and zero writes with -u may free space (qemu-io's default). Default true. */
  unmap?: boolean;
  /** How `open` opens an image (default: the engine's open policy). */
  opener?: (filename: string, request: IoOpenRequest) => Promise<OpenedForIo>;
  /** Command output (qemu-io's stdout). Default: process.stdout. */
  out?: (text: string) => void;
  /** Diagnostics (qemu-io's stderr). Default: process.stderr. */
  err?: (text: string) => void;
}

export class IoSession implements IoContext {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  /** Set by `quit`. */
  quit = false;
  /** Commands that failed so far. */
  failures = 0;
  #backend: BlockBackend | undefined;
  #format: string;
  #unmap: boolean;
  readonly #opener: (filename: string, request: IoOpenRequest) => Promise<OpenedForIo>;
  readonly #inFlight = new Set<Promise<void>>();

  constructor(options: IoSessionOptions) {
    this.#backend = options.backend;
    this.#format = options.format ?? '';
    this.#unmap = options.unmap ?? true;
    this.#opener = options.opener ?? openForIo;
    this.out = options.out ?? ((text) => process.stdout.write(text));
    this.err = options.err ?? ((text) => process.stderr.write(text));
  }

  get backend(): BlockBackend {
    if (!this.#backend) throw new VdiskError('EINVAL', 'no file open');
    return this.#backend;
  }

  get format(): string {
    return this.#format;
  }

  get unmap(): boolean {
    return this.#unmap;
  }

  get hasImage(): boolean {
    return this.#backend !== undefined;
  }

  track(request: Promise<void>): void {
    this.#inFlight.add(request);
    request.finally(() => this.#inFlight.delete(request)).catch(() => {});
  }

  async drain(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.all([...this.#inFlight]);
  }

  async openImage(filename: string, request: IoOpenRequest): Promise<void> {
    const opened = await this.#opener(filename, request);
    if (opened.probedRaw) this.err(probedRawWarning(filename));
    this.#backend = opened.backend;
    this.#format = opened.format;
    this.#unmap = request.unmap;
  }

  /** Waits for requests in flight, flushes a writable image (as QEMU does when it closes one), closes it. */
  async closeImage(): Promise<void> {
    const backend = this.backend;
    await this.drain();
    this.#backend = undefined;
    try {
      if (!backend.readOnly) await backend.flush();
    } finally {
      await backend.close();
    }
  }

  /** Runs one command line; resolves true when the command succeeded. */
  async run(line: string): Promise<boolean> {
    const argv = line.split(' ').filter((word) => word.length > 0);
    if (argv.length === 0) return true;
    const ok = await this.#dispatch(argv);
    if (!ok) this.failures++;
    return ok;
  }

  /** The end of the session: the image, if one is open, is closed as `close` does. */
  async finish(): Promise<void> {
    if (this.#backend) await this.closeImage();
  }

  usage(command: CommandInfo): false {
    this.err(`${command.name}: wrong arguments (usage: ${usageOf(command)})\n`);
    return false;
  }

  async #dispatch(argv: string[]): Promise<boolean> {
    const name = argv[0]!;
    const command = findCommand(name);
    if (!command) {
      this.err(`command "${name}" not found\n`);
      return false;
    }
    if (!command.noFile && !this.#backend) {
      this.err("no file open, try 'help open'\n");
      return false;
    }
    const count = argv.length - 1;
    if (count < command.argmin || (command.argmax !== -1 && count > command.argmax)) {
      const expected =
        command.argmax === -1
          ? `at least ${command.argmin} arguments`
          : command.argmin === command.argmax
            ? `${command.argmin} arguments`
            : `between ${command.argmin} and ${command.argmax} arguments`;
      this.err(`bad argument count ${count} to ${name}, expected ${expected}\n`);
      return false;
    }
    if (command.writes && this.backend.readOnly) {
      this.err('vdisk: The image is opened read-only\n');
      return false;
    }
    try {
      return await command.run(this, argv);
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      this.err(`${err.message}\n`);
      return false;
    }
  }
}
