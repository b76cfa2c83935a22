/**
 * Reading an image's backing chain for the chain commands (commit, rebase): which layers there
 * are, and where a name the user gives for one of them lies in the chain.
 */
import { VdiskError } from '../../block/errors.js';
import { backingPath, chainKey } from '../../engine/backing.js';
import { openImageWithFormat } from '../../engine/open.js';
import type { FormatName } from '../../format/format.js';

export interface ChainLayer {
  /** The name the layer above stores for it. */
  name: string;
  format?: string;
  /** The path it opens from. */
  filename: string;
}

/** The backing layers below `filename`, top down (empty: no backing file). */
export async function backingLayers(filename: string, format: FormatName | 'probe'): Promise<ChainLayer[]> {
  const { backend } = await openImageWithFormat(filename, { format, readOnly: true, forceShare: true });
  try {
    return backend.describe().backingChain.map((layer) => ({
      name: layer.name,
      format: layer.format,
      filename: layer.filename ?? layer.name,
    }));
  } finally {
    await backend.close();
  }
}

/**
 * How many layers below `top` the image `name` is (1: the backing file): `name` matches a layer
 * by the name stored for it, or by the file it names (relative to the working directory, or to
 * the image above the layer, as QEMU's bdrv_find_backing_image compares them).
 */
export async function depthOf(top: string, layers: readonly ChainLayer[], name: string): Promise<number> {
  const wanted = new Set([await chainKey(name)]);
  for (let i = 0; i < layers.length; i++) {
    const layer = layers[i]!;
    if (layer.name === name) return i + 1;
    const parent = i === 0 ? top : layers[i - 1]!.filename;
    const relative = backingPath(parent, name);
    if (relative !== undefined) wanted.add(await chainKey(relative));
    if (wanted.has(await chainKey(layer.filename))) return i + 1;
  }
  throw new VdiskError('ENOENT', `Did not find '${name}' in the backing chain of '${top}'`);
}
