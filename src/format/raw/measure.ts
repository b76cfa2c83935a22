/** qemu-img measure for raw: the virtual size, whole sectors; unallocated sectors count too. */
import type { MeasureRequest, MeasureResult } from '../format.js';

export async function measureRaw(request: MeasureRequest): Promise<MeasureResult> {
  const required = request.source ? request.source.length : Math.ceil((request.size ?? 0) / 512) * 512;
  return { required, fullyAllocated: required };
}
