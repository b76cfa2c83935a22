/**
 * What one qemu-io command is (its name, usage and operand counts) and what it may ask of the
 * session that runs it, so that each group of commands can live in its own file.
 */
import type { BlockBackend } from '../../block/backend.js';
import type { IoOpenRequest } from './open-options.js';

/** The session as the commands see it. */
export interface IoContext {
  /** The open image; only commands marked noFile run without one. */
  readonly backend: BlockBackend;
  /** The image format, for `info`. */
  readonly format: string;
  /** Discards and zero writes may free space (qemu-io's -d unmap, its default). */
  readonly unmap: boolean;
  readonly hasImage: boolean;
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  quit: boolean;
  /** Reports a wrong number of operands with the command's usage, and fails. */
  usage(command: CommandInfo): false;
  /** Keeps an asynchronous request (aio_read, aio_write) until it completes. */
  track(request: Promise<void>): void;
  /** Waits for every tracked request. */
  drain(): Promise<void>;
  openImage(filename: string, request: IoOpenRequest): Promise<void>;
  closeImage(): Promise<void>;
}

export interface CommandInfo {
  name: string;
  alias?: string;
  args: string;
  oneline: string;
  argmin: number;
  /** -1: no upper limit. */
  argmax: number;
  writes?: boolean;
  /** Runs without an open image (open, help, quit). */
  noFile?: boolean;
  run(session: IoContext, argv: string[]): Promise<boolean>;
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function usageOf(command: CommandInfo): string {
  return `${command.name} ${command.args}`.trimEnd();
}
