/**
 * The atomic header rewrite of rebase and amend: the last write is the first sector alone, and
 * every write before it lands only on bytes the header before it does not read, so a crash
 * between them leaves the old header whole. Long and short names in turn, and a version change.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { WriteFlags } from '../../src/block/driver.js';
import { ForwardingDriver } from '../../src/block/forwarding-driver.js';
import { setQcow2Backing } from '../../src/format/qcow2/amend/backing.js';
import { readHeaderCluster } from '../../src/format/qcow2/amend/header-rewrite.js';
import { encodeHeaderCluster } from '../../src/format/qcow2/codec/header.js';
import { planCreateLayout } from '../../src/format/qcow2/create/layout.js';
import { MemoryDriver } from '../../src/io/memory.js';

class WriteLog extends ForwardingDriver {
  readonly writes: { offset: number; length: number }[] = [];

  override write(offset: number, buf: Buffer, flags?: WriteFlags): Promise<void> {
    this.writes.push({ offset, length: buf.length });
    return super.write(offset, buf, flags);
  }
}

/** The bytes of cluster 0 a header reads: the fixed part and extensions, and the backing file name. */
async function readBytes(file: WriteLog): Promise<{ start: number; end: number }[]> {
  const { header, bytes } = await readHeaderCluster(file);
  let off = header.headerLength;
  while (off + 8 <= bytes.length) {
    const type = bytes.readUInt32BE(off);
    const len = bytes.readUInt32BE(off + 4);
    off += 8;
    if (type === 0) break;
    off += Math.ceil(len / 8) * 8;
  }
  const used = [{ start: 0, end: off }];
  if (header.backingFileOffset) {
    used.push({ start: header.backingFileOffset, end: header.backingFileOffset + header.backingFileSize });
  }
  return used;
}

async function imageWithBacking(clusterBits: number): Promise<WriteLog> {
  const layout = planCreateLayout({ size: 1 << 20, clusterBits });
  const cluster0 = encodeHeaderCluster(layout.header, { backingFile: 'old.raw', backingFormat: 'raw' });
  const memory = new MemoryDriver({ length: cluster0.length });
  await memory.write(0, cluster0);
  return new WriteLog(memory);
}

describe('qcow2 header rewrite', () => {
  for (const clusterBits of [16, 12]) {
    it(`switches in one first-sector write, names written first where the old header does not read (${2 ** clusterBits}-byte clusters)`, async () => {
      const file = await imageWithBacking(clusterBits);
      const names = ['new.raw', 'x'.repeat(600), `${'y'.repeat(599)}/z`, 'short.qcow2', 'w'.repeat(1000), 'a.raw'];
      for (const name of names) {
        const before = await readBytes(file);
        file.writes.length = 0;
        const format = name.endsWith('qcow2') ? 'qcow2' : 'raw';
        await setQcow2Backing(file, { name, format });
        const last = file.writes.at(-1)!;
        assert.deepEqual(last, { offset: 0, length: 512 }, 'the switch is the first sector alone');
        for (const w of file.writes.slice(0, -1)) {
          assert.ok(w.offset >= 512, 'earlier writes stay out of the first sector');
          for (const r of before) {
            assert.ok(
              w.offset + w.length <= r.start || r.end <= w.offset,
              `a write on bytes the old header reads: ${name}`,
            );
          }
        }
        const { extensions } = await readHeaderCluster(file);
        assert.equal(extensions.backingFile, name);
        assert.equal(extensions.backingFormat, format);
      }
      await setQcow2Backing(file, undefined);
      const { header, extensions } = await readHeaderCluster(file);
      assert.equal(extensions.backingFile, undefined);
      assert.equal(extensions.backingFormat, undefined);
      assert.equal(header.backingFileOffset, 0);
    });
  }
});
