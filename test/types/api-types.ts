/**
 * Compile-time checks of the public API's types: the build (tsc) fails if a line marked
 * @ts-expect-error compiles. Never called; node's test runner only loads this module.
 */
import { type CacheModeName, type FormatName, openImage } from '../../src/index.js';

export function wrongFormatsAndCacheModesDoNotCompile(): void {
  // @ts-expect-error 'vmdk' is not a format vdisk knows
  void openImage('disk.vmdk', { format: 'vmdk' });
  // @ts-expect-error 'nocache' is not one of QEMU's cache modes
  void openImage('disk.img', { cache: 'nocache' });
  // @ts-expect-error the format name is a union of literals, not any string
  const format: FormatName = 'qcow3';
  // @ts-expect-error neither is a cache mode name
  const cache: CacheModeName = 'write-back';
  void openImage('disk.qcow2', { format: 'qcow2', cache: 'none', readOnly: true });
  void format;
  void cache;
}
