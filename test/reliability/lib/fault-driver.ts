/**
 * A fault-injecting filter: forwards every request to its child and makes the Nth host
 * operation (counting reads, writes, write-zeroes, discards, flushes and truncates) fail the way
 * the file driver reports a host error: a VdiskError with the errno's code (EIO or ENOSPC).
 * `once` fails that operation only; `sticky` fails it and every later one (a dead disk, a full
 * filesystem, a failed fdatasync whose pages are gone).
 */
import type {
  Alignment,
  BlockDriver,
  DriverCapabilities,
  Extent,
  WriteFlags,
  ZeroFlags,
} from '../../../src/block/driver.js';
import { fromSystemError } from '../../../src/block/errors.js';
import type { Preallocation } from '../../../src/block/preallocation.js';

export type HostOpKind = 'read' | 'write' | 'zero' | 'discard' | 'flush' | 'truncate';

export interface FaultPlan {
  /** 1-based index of the host operation that fails (0: none). */
  at: number;
  errno: 'EIO' | 'ENOSPC';
  mode: 'once' | 'sticky';
  /** Only operations of these kinds are counted (default: all). */
  kinds?: readonly HostOpKind[];
  /** Only operations this accepts are counted (default: all). */
  match?: (kind: HostOpKind, offset: number, length: number) => boolean;
}

export class FaultDriver implements BlockDriver {
  readonly driverName = 'file';
  readonly child: BlockDriver;
  plan: FaultPlan;
  /** Operations counted so far. */
  count = 0;
  /** Operations that failed because of the plan. */
  injected = 0;
  /** What the first injected failure hit. */
  firstFault: string | undefined;

  constructor(child: BlockDriver, plan: FaultPlan = { at: 0, errno: 'EIO', mode: 'once' }) {
    this.child = child;
    this.plan = plan;
  }

  get filename(): string | undefined {
    return this.child.filename;
  }
  get capabilities(): DriverCapabilities {
    return this.child.capabilities;
  }
  get alignment(): Alignment {
    return this.child.alignment;
  }
  get readOnly(): boolean {
    return this.child.readOnly;
  }

  length(): number {
    return this.child.length();
  }

  async read(offset: number, buf: Buffer): Promise<void> {
    this.#gate('read', `read ${offset}+${buf.length}`, offset, buf.length);
    return this.child.read(offset, buf);
  }

  async write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void> {
    this.#gate('write', `write ${offset}+${buf.length}`, offset, buf.length);
    await this.child.write(offset, buf);
    if (flags?.fua) await this.flush();
  }

  async writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    this.#gate('zero', `write-zeroes ${offset}+${length}`, offset, length);
    await this.child.writeZeroes(offset, length, { ...flags, fua: false });
    if (flags?.fua) await this.flush();
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#gate('discard', `discard ${offset}+${length}`, offset, length);
    return this.child.discard(offset, length);
  }

  async flush(): Promise<void> {
    this.#gate('flush', 'flush', 0, 0);
    return this.child.flush();
  }

  blockStatus(offset: number, length: number): Promise<Extent> {
    return this.child.blockStatus(offset, length);
  }

  async truncate(length: number, preallocation: Preallocation): Promise<void> {
    this.#gate('truncate', `truncate ${length}`, length, 0);
    return this.child.truncate(length, preallocation);
  }

  close(): Promise<void> {
    return this.child.close();
  }

  #gate(kind: HostOpKind, what: string, offset: number, length: number): void {
    const p = this.plan;
    if (p.kinds && !p.kinds.includes(kind)) return;
    if (p.match && !p.match(kind, offset, length)) return;
    this.count++;
    const hit = p.at > 0 && (this.count === p.at || (p.mode === 'sticky' && this.count > p.at));
    if (!hit) return;
    this.injected++;
    this.firstFault ??= `${what} (host operation ${this.count})`;
    const err = Object.assign(new Error(p.errno), { code: p.errno });
    throw fromSystemError(err, `Injected fault on ${what}`);
  }
}
