/**
 * The host file lent to an image opened inside amend: everything goes to the file, except
 * close, which flushes and leaves the file open for the header changes that follow.
 */
import type {
  Alignment,
  BlockDriver,
  DriverCapabilities,
  Extent,
  WriteFlags,
  ZeroFlags,
} from '../../../block/driver.js';
import type { Preallocation } from '../../../block/preallocation.js';

export class BorrowedFile implements BlockDriver {
  readonly driverName: string;
  readonly #file: BlockDriver;

  constructor(file: BlockDriver) {
    this.#file = file;
    this.driverName = file.driverName;
  }

  get filename(): string | undefined {
    return this.#file.filename;
  }
  get capabilities(): DriverCapabilities {
    return this.#file.capabilities;
  }
  get alignment(): Alignment {
    return this.#file.alignment;
  }
  get readOnly(): boolean {
    return this.#file.readOnly;
  }
  length(): number {
    return this.#file.length();
  }
  read(offset: number, buf: Buffer): Promise<void> {
    return this.#file.read(offset, buf);
  }
  write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void> {
    return this.#file.write(offset, buf, flags);
  }
  writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    return this.#file.writeZeroes(offset, length, flags);
  }
  discard(offset: number, length: number): Promise<void> {
    return this.#file.discard(offset, length);
  }
  flush(): Promise<void> {
    return this.#file.flush();
  }
  blockStatus(offset: number, length: number): Promise<Extent> {
    return this.#file.blockStatus(offset, length);
  }
  truncate(length: number, preallocation: Preallocation): Promise<void> {
    return this.#file.truncate(length, preallocation);
  }
  close(): Promise<void> {
    return this.#file.flush();
  }
}
