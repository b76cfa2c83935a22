/**
 * A driver that passes every request to the node below it: the base of filters that change one
 * or two requests and leave the rest alone (a guard on probed raw images, a file lent to an
 * image opened inside another operation).
 */
import type {
  Alignment,
  BlockDriver,
  DriverCapabilities,
  Extent,
  NodeDescription,
  WriteFlags,
  ZeroFlags,
} from './driver.js';
import type { Preallocation } from './preallocation.js';

export class ForwardingDriver implements BlockDriver {
  readonly driverName: string;
  protected readonly child: BlockDriver;

  constructor(child: BlockDriver) {
    this.child = child;
    this.driverName = child.driverName;
  }

  get filename(): string | undefined {
    return this.child.filename;
  }
  get capabilities(): DriverCapabilities {
    return this.child.capabilities;
  }
  get alignment(): Alignment {
    return this.child.alignment;
  }
  get readOnly(): boolean {
    return this.child.readOnly;
  }
  length(): number {
    return this.child.length();
  }
  read(offset: number, buf: Buffer): Promise<void> {
    return this.child.read(offset, buf);
  }
  write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void> {
    return this.child.write(offset, buf, flags);
  }
  writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    return this.child.writeZeroes(offset, length, flags);
  }
  discard(offset: number, length: number): Promise<void> {
    return this.child.discard(offset, length);
  }
  flush(): Promise<void> {
    return this.child.flush();
  }
  blockStatus(offset: number, length: number): Promise<Extent> {
    return this.child.blockStatus(offset, length);
  }
  truncate(length: number, preallocation: Preallocation): Promise<void> {
    return this.child.truncate(length, preallocation);
  }
  close(): Promise<void> {
    return this.child.close();
  }
  allocatedSize(): Promise<number | undefined> {
    return this.child.allocatedSize?.() ?? Promise.resolve(undefined);
  }
  describe(): NodeDescription {
    return this.child.describe?.() ?? { format: this.driverName };
  }
}
