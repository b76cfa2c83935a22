/**
 * What a format declares to be creatable: its `-o` options (QEMU's create_opts) and the function
 * that makes a new image. The option list is data, so the generic parser (src/tools/options.ts)
 * validates, prints help and prints the "Formatting …" line for every format alike.
 */
import type { BlockDriver } from '../block/driver.js';
import type { Preallocation } from '../block/preallocation.js';

/** QEMU's option types: QEMU_OPT_STRING, _BOOL, _NUMBER, _SIZE. */
export type CreateOptionType = 'str' | 'bool' | 'num' | 'size';

export interface CreateOptionDesc {
  name: string;
  type: CreateOptionType;
  /** One line for `-o help`. */
  help: string;
  /** For 'str' options with a closed set of values; anything else is "invalid parameter value: X". */
  values?: readonly string[];
  /** The value shown in the "Formatting …" line when the option is not given (QEMU's def_value_str). */
  defaultValue?: string;
}

export type CreateOptionValue = string | number | boolean;

/** Progress of a long creation (full preallocation): bytes done out of total. */
export type ProgressCallback = (done: number, total: number) => void;

/** What to create: checked before anything on disk is touched. */
export interface CreateSpec {
  filename: string;
  /** The virtual size in bytes, as the user asked for it. */
  size: number;
  /** The options the user gave, checked against the format's list and converted; never `size`. */
  options: Readonly<Record<string, CreateOptionValue>>;
}

/**
 * What a creator writes a new image into: a host file (the file driver), or an existing export
 * of a fixed size (an NBD export), which truncate cannot shrink or grow.
 */
export interface CreateTarget extends BlockDriver {
  /** truncate, reporting (bytes done, bytes total) as 'full' preallocation writes zeros. */
  truncateWithProgress(
    length: number,
    preallocation: Preallocation,
    onProgress?: (done: number, total: number) => void,
  ): Promise<void>;
}

export interface CreateRequest extends CreateSpec {
  onProgress?: ProgressCallback;
  /**
   * Opens the file the image goes into. The caller decides where that is (an unnamed file that
   * gets the name only when the image is complete) and what happens to it on failure.
   */
  openTarget(): Promise<CreateTarget>;
  /**
   * The virtual size of the backing image `name` (relative to the new image) of `format`; it
   * must open. Absent when the backing file is not to be opened (create -u).
   */
  backingSize?(name: string, format: string): Promise<number>;
}

export interface FormatCreator {
  /** Every option `-o` accepts for this format, `size` included. */
  readonly options: readonly CreateOptionDesc[];
  /** Refuses requests the format cannot make, before anything on disk is touched. */
  validate?(request: CreateSpec): void;
  /** Makes the image in the file openTarget() gives: writes the metadata, preallocates. */
  create(request: CreateRequest): Promise<void>;
}

/** The `size` option every format has, as QEMU's BLOCK_OPT_SIZE. */
export const SIZE_OPTION: CreateOptionDesc = { name: 'size', type: 'size', help: 'Virtual disk size' };
