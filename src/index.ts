/** vdisk's public API: open and create images, and the types and errors they use. */

export type { BackendCounters, BackendOptions } from './block/backend.js';
export { BlockBackend } from './block/backend.js';
export type { CacheMode, CacheModeName } from './block/cache-mode.js';
export { CACHE_MODE_NAMES, parseCacheMode } from './block/cache-mode.js';
export type { BlockDriver, Extent, WriteFlags, ZeroFlags } from './block/driver.js';
export type { ErrorCode } from './block/errors.js';
export { ERROR_CODES, isVdiskError, VdiskError } from './block/errors.js';
export type { Preallocation } from './block/preallocation.js';
export { PREALLOCATIONS, parsePreallocation } from './block/preallocation.js';
export type { OpenImageOptions } from './engine/open.js';
export { openImage } from './engine/open.js';
export type { FormatName } from './format/format.js';
export { MemoryDriver } from './io/memory.js';
export type { CheckImageOptions, CheckOutcome, ImageCheck } from './tools/check.js';
export { checkExitCode, checkImage } from './tools/check.js';
export type { CompareOptions, CompareResult } from './tools/compare.js';
export { compareImages } from './tools/compare.js';
export type { ConvertOptions } from './tools/convert.js';
export { convertImage } from './tools/convert.js';
export type { CreateImageOptions } from './tools/create.js';
export { createImage } from './tools/create.js';
export { imageInfo } from './tools/info.js';
export { mapImage } from './tools/map.js';
export { resizeImage } from './tools/resize.js';
export type { ServeHandle, ServeOptions } from './tools/serve.js';
export { serveImage } from './tools/serve.js';
