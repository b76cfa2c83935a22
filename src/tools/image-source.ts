/**
 * Tools take an image as a path (or an NBD URI) or as an open image. A path is opened for the
 * call (and closed after it); an open image is used as it is and left open. An NBD URI is
 * reported under the name QEMU gives it (nbd://127.0.0.1:10809, nbd+unix://?socket=…).
 */
import { BlockBackend } from '../block/backend.js';
import { VdiskError } from '../block/errors.js';
import { type OpenImageOptions, openImageWithFormat } from '../engine/open.js';
import type { FormatName } from '../format/format.js';
import { isNbdUri } from '../remote/nbd/uri.js';

export type ImageSource = string | BlockBackend;

export async function withImage<T>(
  image: ImageSource,
  options: OpenImageOptions,
  fn: (backend: BlockBackend, filename: string, format: FormatName) => Promise<T>,
): Promise<T> {
  if (image instanceof BlockBackend) {
    const d = image.describe();
    return fn(image, d.filename ?? '', d.format as FormatName);
  }
  if (typeof image !== 'string') {
    throw new VdiskError('EINVAL', 'The image must be a file name or an image opened with openImage');
  }
  const { backend, format } = await openImageWithFormat(image, options);
  try {
    const shown = isNbdUri(image) ? (backend.describe().filename ?? image) : image;
    return await fn(backend, shown, format);
  } finally {
    await backend.close();
  }
}
