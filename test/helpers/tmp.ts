/** Temporary directories for tests, removed afterwards even when the test fails. */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export async function withTempDir<T>(fn: (dir: string) => Promise<T>, parent = os.tmpdir()): Promise<T> {
  const dir = await mkdtemp(path.join(parent, 'vdisk-test-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** What a file is now: enough to tell that a failed command left it alone. */
export interface FileState {
  exists: boolean;
  size?: number;
  mtimeNs?: bigint;
  sha256?: string;
}

export async function fileState(file: string): Promise<FileState> {
  try {
    const st = await stat(file, { bigint: true });
    const sha256 = createHash('sha256')
      .update(await readFile(file))
      .digest('hex');
    return { exists: true, size: Number(st.size), mtimeNs: st.mtimeNs, sha256 };
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return { exists: false };
    throw err;
  }
}

/** Bytes a file occupies on disk (st_blocks * 512). */
export async function allocatedBytes(file: string): Promise<number> {
  return Number((await stat(file, { bigint: true })).blocks) * 512;
}
