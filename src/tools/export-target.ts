/**
 * A new image made inside an existing NBD export, as qemu-img does for protocols that cannot
 * create files ("simple create"): the export keeps its size, so the format's creator sees a
 * target that cannot shrink or grow. Truncating to at most the export's size changes nothing
 * (bytes past the image's end are never read as part of it: every table the creator writes is
 * written whole); more than that is ENOSPC. Preallocation would need the export's bytes zeroed
 * or allocated, which an export does not promise, so it is refused.
 */
import type { Alignment, BlockDriver, DriverCapabilities, Extent, WriteFlags, ZeroFlags } from '../block/driver.js';
import { VdiskError } from '../block/errors.js';
import type { Preallocation } from '../block/preallocation.js';
import type { CreateTarget } from '../format/create-options.js';
import type { NbdClientOptions } from '../remote/nbd/client-options.js';
import { NbdDriver } from '../remote/nbd/nbd-driver.js';

/** The export behind `uri`, as a create target. */
export async function openExportTarget(uri: string, nbd?: NbdClientOptions): Promise<CreateTarget> {
  return exportTarget(await NbdDriver.open(uri, { ...nbd, readOnly: false }));
}

/** A fixed-size node as a create target: requests go to it, truncate is as above. */
export function exportTarget(node: BlockDriver): CreateTarget {
  return new ExportTarget(node);
}

class ExportTarget implements CreateTarget {
  readonly driverName: string;
  readonly filename: string | undefined;
  readonly capabilities: DriverCapabilities;
  readonly alignment: Alignment;
  readonly readOnly: boolean;
  readonly #node: BlockDriver;

  constructor(node: BlockDriver) {
    this.#node = node;
    this.driverName = node.driverName;
    this.filename = node.filename;
    this.capabilities = { ...node.capabilities, resize: false };
    this.alignment = node.alignment;
    this.readOnly = node.readOnly;
  }

  length(): number {
    return this.#node.length();
  }
  read(offset: number, buf: Buffer): Promise<void> {
    return this.#node.read(offset, buf);
  }
  write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void> {
    return this.#node.write(offset, buf, flags);
  }
  writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    return this.#node.writeZeroes(offset, length, flags);
  }
  discard(offset: number, length: number): Promise<void> {
    return this.#node.discard(offset, length);
  }
  flush(): Promise<void> {
    return this.#node.flush();
  }
  blockStatus(offset: number, length: number): Promise<Extent> {
    return this.#node.blockStatus(offset, length);
  }
  close(): Promise<void> {
    return this.#node.close();
  }
  truncate(length: number, preallocation: Preallocation): Promise<void> {
    return this.truncateWithProgress(length, preallocation);
  }

  async truncateWithProgress(length: number, preallocation: Preallocation): Promise<void> {
    if (preallocation !== 'off') {
      throw new VdiskError('ENOTSUP', `Preallocation mode '${preallocation}' is not supported inside an NBD export`);
    }
    if (length > this.#node.length()) {
      throw new VdiskError(
        'ENOSPC',
        `The NBD export is smaller (${this.#node.length()} bytes) than the image needs (${length} bytes)`,
      );
    }
  }
}
