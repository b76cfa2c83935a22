/**
 * zstd through the native helper (Node 20's zlib has none), for formats that store clusters so.
 * The opener hands it to the format (OpenContext.zstd), which never loads the helper itself.
 */
import { VdiskError } from '../block/errors.js';
import { native } from './native.js';

export interface ZstdCodec {
  /** One zstd frame of `plain`, or null when it does not fit in `capacity` bytes. */
  compress(plain: Buffer, capacity: number): Buffer | null;
  /**
   * The `size` bytes the stream at the start of `stored` inflates to; what follows the stream
   * is ignored. Throws ECORRUPT when the stream is broken, shorter, or goes on past `size` bytes.
   */
  decompress(stored: Buffer, size: number): Buffer;
}

export const nativeZstd: ZstdCodec = {
  compress: (plain, capacity) => native().zstdCompress(plain, capacity),
  decompress: (stored, size) => {
    try {
      return native().zstdDecompress(stored, size);
    } catch (err) {
      throw new VdiskError('ECORRUPT', `does not decompress (${(err as Error).message})`, { cause: err });
    }
  },
};
