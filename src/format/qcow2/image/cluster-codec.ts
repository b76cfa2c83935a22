/**
 * How an image's compressed clusters are coded (its header's compression_type): deflate without
 * a zlib header and a 4 KiB window, or zstd. Either way the stored length is known only to the
 * sector, so bytes after the stream are normal and are ignored.
 */
import { constants, createInflateRaw, deflateRawSync, inflateRawSync } from 'node:zlib';
import { VdiskError } from '../../../block/errors.js';
import type { ZstdCodec } from '../../../io/zstd.js';
import { COMPRESSION_ZSTD } from '../codec/constants.js';

export interface ClusterCodec {
  /** The stored form of one whole cluster, or null when it saves nothing (QEMU then stores it plainly). */
  compress(plain: Buffer): Buffer | null;
  /** The cluster that `stored` (the entry's sectors) inflates to; throws when it cannot. */
  decompress(stored: Buffer): Promise<Buffer>;
}

export function clusterCodec(compressionType: number, clusterSize: number, zstd: ZstdCodec | undefined): ClusterCodec {
  // QEMU gives the compressor one byte less than a cluster: a stream must save at least one.
  const capacity = clusterSize - 1;
  if (compressionType === COMPRESSION_ZSTD) {
    if (!zstd) throw new VdiskError('ENOTSUP', 'qcow2: zstd compression needs the native helper');
    return {
      compress: (plain) => zstd.compress(plain, capacity),
      // QEMU refuses a zstd frame that goes on past the cluster; the codec does the same.
      decompress: async (stored) => zstd.decompress(stored, clusterSize),
    };
  }
  return {
    compress(plain) {
      const packed = deflateRawSync(plain, { level: constants.Z_DEFAULT_COMPRESSION, windowBits: 12 });
      return packed.length <= capacity ? packed : null;
    },
    decompress: (stored) => inflateCluster(stored, clusterSize),
  };
}

async function inflateCluster(stored: Buffer, clusterSize: number): Promise<Buffer> {
  let plain: Buffer;
  try {
    plain = inflateRawSync(stored, { finishFlush: constants.Z_SYNC_FLUSH, maxOutputLength: clusterSize });
  } catch (err) {
    // QEMU keeps the first cluster's worth of a deflate stream that goes on past it.
    if ((err as { code?: string }).code !== 'ERR_BUFFER_TOO_LARGE') throw corrupt(err);
    plain = await inflatePrefix(stored, clusterSize);
  }
  if (plain.length !== clusterSize) {
    throw new VdiskError('ECORRUPT', `decompresses to ${plain.length} bytes, not ${clusterSize}`);
  }
  return plain;
}

/** The first `size` bytes a deflate stream inflates to, without inflating the rest. */
function inflatePrefix(stored: Buffer, size: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const inflater = createInflateRaw({ finishFlush: constants.Z_SYNC_FLUSH });
    const parts: Buffer[] = [];
    let have = 0;
    inflater.on('data', (chunk: Buffer) => {
      parts.push(chunk);
      have += chunk.length;
      if (have >= size) {
        inflater.destroy();
        resolve(Buffer.concat(parts).subarray(0, size));
      }
    });
    inflater.on('error', (err) => reject(corrupt(err)));
    inflater.on('end', () => resolve(Buffer.concat(parts)));
    inflater.end(stored);
  });
}

function corrupt(err: unknown): VdiskError {
  return new VdiskError('ECORRUPT', 'does not decompress', { cause: err });
}
