import { VdiskError } from './errors.js';

/** The five host cache modes of QEMU, plus "default". */
export const CACHE_MODE_NAMES = ['none', 'writethrough', 'writeback', 'directsync', 'unsafe'] as const;
export type CacheModeName = (typeof CACHE_MODE_NAMES)[number];

export interface CacheMode {
  readonly name: CacheModeName;
  /** The host page cache is bypassed: the file is opened with O_DIRECT. */
  readonly direct: boolean;
  /**
   * The guest-visible write cache is on. When off (writethrough, directsync), BlockBackend makes
   * every write durable before it completes.
   */
  readonly writeCache: boolean;
  /** Flushes are ignored: nothing is ever forced to stable storage. */
  readonly noFlush: boolean;
}

const MODES: Record<CacheModeName, CacheMode> = {
  writeback: { name: 'writeback', direct: false, writeCache: true, noFlush: false },
  none: { name: 'none', direct: true, writeCache: true, noFlush: false },
  writethrough: { name: 'writethrough', direct: false, writeCache: false, noFlush: false },
  directsync: { name: 'directsync', direct: true, writeCache: false, noFlush: false },
  unsafe: { name: 'unsafe', direct: false, writeCache: true, noFlush: true },
};

/** "default" is writeback, as in qemu-img and qemu-nbd today. */
export const DEFAULT_CACHE_MODE: CacheModeName = 'writeback';

export function parseCacheMode(text: string): CacheMode {
  const name = text === 'default' ? DEFAULT_CACHE_MODE : text;
  const mode = MODES[name as CacheModeName];
  if (!mode) {
    throw new VdiskError(
      'EINVAL',
      `Invalid cache option: ${text} (use none, writethrough, writeback, directsync, unsafe or default)`,
    );
  }
  return mode;
}

/** The name of a cache mode given as text ("default" is writeback); EINVAL for anything else. */
export function parseCacheModeName(text: string): CacheModeName {
  return parseCacheMode(text).name;
}

export function cacheMode(name: CacheModeName): CacheMode {
  return MODES[name];
}
