/**
 * The host file of hostile-image tests: a FlatDriver that records every read reaching outside
 * the file (past its end, negative, or not an integer) and caps how far writes may grow it.
 * The engine must never read outside the image, whatever the image says.
 */
import { FlatDriver } from './flat-driver.js';

export class BoundedFile extends FlatDriver {
  readonly violations: string[] = [];

  constructor(content: Buffer, options: { name?: string; readOnly?: boolean; maxLength?: number } = {}) {
    super(content, { maxLength: 64 * 1024 * 1024, ...options });
  }

  override async read(offset: number, buf: Buffer): Promise<void> {
    const end = offset + buf.length;
    if (!Number.isSafeInteger(offset) || offset < 0 || end > this.length()) {
      if (this.violations.length < 10) {
        const stack = (new Error().stack ?? '')
          .split('\n')
          .slice(2, 7)
          .map((l) => l.trim())
          .join(' < ');
        this.violations.push(`read ${offset}+${buf.length} outside the file (length ${this.length()}) at ${stack}`);
      }
    }
    return super.read(offset, buf);
  }
}
