/**
 * A raw image whose format was probed must not be turned into another format by a guest write:
 * the next probe would then take the guest's bytes for a qcow2 header (and, say, its backing
 * file name for a file to open). As QEMU does for probed raw images, a write that would make the
 * first sector probe as anything but raw is refused. The open policy puts this filter above
 * every writable raw image it probed.
 */
import type { WriteFlags } from '../block/driver.js';
import { VdiskError } from '../block/errors.js';
import { ForwardingDriver } from '../block/forwarding-driver.js';
import { probeFormat } from './formats.js';

const SECTOR = 512;

export class ProbedRawGuard extends ForwardingDriver {
  override async write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void> {
    if (offset < SECTOR) await this.#checkFirstSector(offset, buf);
    return this.child.write(offset, buf, flags);
  }

  // writeZeroes passes: zeros never make a header.

  async #checkFirstSector(offset: number, data: Buffer): Promise<void> {
    const head = Buffer.alloc(Math.min(SECTOR, this.child.length()));
    await this.child.read(0, head);
    data.copy(head, offset, 0, Math.min(data.length, head.length - offset));
    if (probeFormat(head) !== 'raw') {
      throw new VdiskError(
        'EACCES',
        'Writes that would make the probed raw image look like another format are refused; give the format as raw',
      );
    }
  }
}
