/**
 * The NBD codec, byte for byte against the spec's layouts (NetworkBlockDevice doc/proto.md),
 * the context selection rules qemu-nbd follows, and the byte queue the parser reads from.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { exportFlags } from '../../src/nbd/export.js';
import { addExtent, allocationDepth, isZero, zeroRuns } from '../../src/nbd/extents.js';
import { selectContexts } from '../../src/nbd/handshake/reply-options.js';
import {
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoRequest,
  encodeInfoString,
  encodeMetaContextReply,
  encodeMetaContextRequest,
  encodeOption,
  encodeOptionError,
  encodeOptionReply,
  encodeServerReply,
} from '../../src/nbd-wire/handshake-codec.js';
import { ByteQueue } from '../../src/nbd-wire/input.js';
import { CHUNK, CMD, encodeString, INFO, OPT, REP, TF } from '../../src/nbd-wire/protocol.js';
import {
  decodeReply,
  decodeRequest,
  encodeBlockStatusChunk,
  encodeDataChunkHeader,
  encodeErrorChunk,
  encodeHoleChunk,
  encodeNoneChunk,
  encodeRequest,
  encodeSimpleReply,
  newRequest,
} from '../../src/nbd-wire/transmission-codec.js';

const hex = (b: Buffer) => b.toString('hex');

describe('NBD handshake messages', () => {
  it('greets with NBDMAGIC, IHAVEOPT and the handshake flags', () => {
    assert.equal(hex(encodeGreeting(3)), '4e42444d41474943' + '49484156454f5054' + '0003');
  });

  it('decodes option headers and notices a bad magic', () => {
    const opt = encodeOption(OPT.GO, Buffer.from([1, 2, 3]));
    assert.equal(hex(opt), '49484156454f5054' + '00000007' + '00000003' + '010203');
    assert.deepEqual(decodeOptionHeader(opt), { magicOk: true, option: 7, length: 3 });
    opt[0] = 0;
    assert.equal(decodeOptionHeader(opt).magicOk, false);
  });

  it('encodes option replies with the reply magic', () => {
    assert.equal(hex(encodeOptionReply(OPT.LIST, REP.ACK)), '0003e889045565a9' + '00000003' + '00000001' + '00000000');
    assert.equal(
      hex(encodeOptionError(99, REP.ERR_UNSUP, 'no')),
      '0003e889045565a9' + '00000063' + '80000001' + '00000002' + '6e6f',
    );
  });

  it('encodes NBD_REP_SERVER with name length, name and description', () => {
    const r = encodeServerReply('ab', 'desc');
    assert.equal(hex(r.subarray(8, 20)), '00000003' + '00000002' + '0000000a');
    assert.equal(hex(r.subarray(20)), '00000002' + '6162' + '64657363');
  });

  it('encodes the information replies', () => {
    assert.equal(
      hex(encodeInfoExport(OPT.GO, 2 ** 40 + 5, TF.HAS_FLAGS | TF.SEND_FLUSH).subarray(12)),
      '00000003' + '0000000c' + '0000' + '0000010000000005' + '0005',
    );
    assert.equal(
      hex(encodeInfoBlockSize(OPT.INFO, { minimum: 1, preferred: 4096, maximum: 32 << 20 }).subarray(16)),
      '0000000e' + '0003' + '00000001' + '00001000' + '02000000',
    );
    assert.equal(hex(encodeInfoString(OPT.GO, INFO.DESCRIPTION, 'hi').subarray(16)), '00000004' + '0002' + '6869');
    assert.equal(
      hex(encodeMetaContextReply(OPT.SET_META_CONTEXT, 1, 'base:allocation').subarray(12, 24)),
      '00000004' + '00000013' + '00000001',
    );
  });

  it('answers NBD_OPT_EXPORT_NAME with 134 bytes, or 10 with NO_ZEROES', () => {
    const full = encodeExportNameReply(1024, 0x1234, false);
    assert.equal(full.length, 134);
    assert.equal(hex(full.subarray(0, 10)), '0000000000000400' + '1234');
    assert.ok(full.subarray(10).every((b) => b === 0));
    assert.equal(encodeExportNameReply(1024, 0x1234, true).length, 10);
  });
});

describe('NBD option data', () => {
  it('decodes INFO/GO requests', () => {
    assert.deepEqual(decodeInfoRequest(encodeInfoRequest('exp', [INFO.NAME, INFO.BLOCK_SIZE])), {
      ok: true,
      name: 'exp',
      requests: [1, 3],
    });
  });

  it('refuses names over 4096 bytes, inconsistent lengths and NUL bytes', () => {
    const long = decodeInfoRequest(encodeInfoRequest('x'.repeat(4097)));
    assert.equal(long.ok, false);
    assert.match((long as { message: string }).message, /Invalid export name length: 4097/);
    assert.equal(decodeInfoRequest(encodeInfoRequest('x'.repeat(4096))).ok, true);
    const huge = Buffer.alloc(10);
    huge.writeUInt32BE(0xffffffff, 0);
    assert.equal(decodeInfoRequest(huge).ok, false);
    const short = encodeInfoRequest('abc', [1, 2]).subarray(0, 11);
    assert.equal(decodeInfoRequest(short).ok, false);
    assert.equal(decodeInfoRequest(Buffer.alloc(2)).ok, false);
    assert.equal(decodeInfoRequest(encodeInfoRequest('a\0b')).ok, false);
  });

  it('decodes meta context requests and skips over-long queries as qemu-nbd does', () => {
    const r = decodeMetaContextRequest(encodeMetaContextRequest('', ['base:allocation', 'q'.repeat(5000), 'qemu:']));
    assert.deepEqual(r, { ok: true, exportName: '', queries: ['base:allocation', null, 'qemu:'] });
    const bad = Buffer.alloc(8);
    bad.writeUInt32BE(0, 0);
    bad.writeUInt32BE(0xffffffff, 4); // 4 billion queries in 0 bytes
    assert.equal(decodeMetaContextRequest(bad).ok, false);
    const trailing = Buffer.concat([encodeMetaContextRequest('', []), Buffer.from([1])]);
    assert.equal(decodeMetaContextRequest(trailing).ok, false);
  });

  it('selects contexts as qemu-nbd: names when setting, wildcards only when listing', () => {
    assert.deepEqual(selectContexts([], true, true), { base: true, depth: true, bitmaps: [] });
    assert.deepEqual(selectContexts([], true, false), { base: true, depth: false, bitmaps: [] });
    assert.deepEqual(selectContexts([], false, true), { base: false, depth: false, bitmaps: [] });
    assert.deepEqual(selectContexts(['base:'], true, true), { base: true, depth: false, bitmaps: [] });
    assert.deepEqual(selectContexts(['base:'], false, true), { base: false, depth: false, bitmaps: [] });
    assert.deepEqual(selectContexts(['qemu:'], true, true), { base: false, depth: true, bitmaps: [] });
    assert.deepEqual(selectContexts(['qemu:allocation-depth'], false, false), {
      base: false,
      depth: false,
      bitmaps: [],
    });
    assert.deepEqual(selectContexts(['qemu:allocation-depth', 'base:allocation'], false, true), {
      base: true,
      depth: true,
      bitmaps: [],
    });
    assert.deepEqual(selectContexts(['x-foo:bar', 'base:other', null, 'qemu:dirty-bitmap:b'], true, true), {
      base: false,
      depth: false,
      bitmaps: [],
    });
    const names = ['a', 'b'];
    assert.deepEqual(selectContexts([], true, false, names).bitmaps, [0, 1]);
    assert.deepEqual(selectContexts(['qemu:'], true, false, names).bitmaps, [0, 1]);
    assert.deepEqual(selectContexts(['qemu:dirty-bitmap:'], true, false, names).bitmaps, [0, 1]);
    assert.deepEqual(selectContexts(['qemu:dirty-bitmap:'], false, false, names).bitmaps, []);
    assert.deepEqual(selectContexts(['qemu:dirty-bitmap:b'], false, false, names).bitmaps, [1]);
    assert.deepEqual(selectContexts(['qemu:dirty-bitmap:c', 'qemu:'], false, false, names).bitmaps, []);
  });

  it('cuts strings to 4096 bytes at a character boundary', () => {
    assert.equal(encodeString('a'.repeat(5000)).length, 4096);
    const s = encodeString('a' + 'é'.repeat(3000)); // 1 + 6000 bytes; 'é' is 2 bytes
    assert.equal(s.length, 4095);
    assert.doesNotThrow(() => new TextDecoder('utf-8', { fatal: true }).decode(s));
  });
});

describe('NBD transmission messages', () => {
  it('decodes request headers, keeping the cookie opaque', () => {
    const req = newRequest();
    const buf = encodeRequest(CMD.WRITE, 1, 0xdeadbeef_01020304n, 2 ** 40, 4096);
    assert.equal(hex(buf), '25609513' + '0001' + '0001' + 'deadbeef01020304' + '0000010000000000' + '00001000');
    assert.equal(decodeRequest(buf, 0, req), true);
    assert.deepEqual(req, {
      flags: 1,
      type: 1,
      cookieHi: 0xdeadbeef,
      cookieLo: 0x01020304,
      offset: 2 ** 40,
      length: 4096,
    });
    buf[0] = 0;
    assert.equal(decodeRequest(buf, 0, req), false);
  });

  it('reads offsets beyond 2^53 as numbers larger than any export', () => {
    const req = newRequest();
    decodeRequest(encodeRequest(CMD.READ, 0, 1n, 0xffff_ffff_ffff_ffffn, 1), 0, req);
    assert.ok(req.offset > 2 ** 53);
    assert.ok(!(req.offset <= 2 ** 53 - 1));
  });

  it('encodes simple replies and structured chunks', () => {
    assert.equal(hex(encodeSimpleReply(22, 1, 2)), '67446698' + '00000016' + '00000001' + '00000002');
    assert.equal(hex(encodeNoneChunk(0, 7)), '668e33ef' + '0001' + '0000' + '0000000000000007' + '00000000');
    assert.equal(
      hex(encodeDataChunkHeader(0, 7, 4096, 512, false)),
      '668e33ef' + '0000' + '0001' + '0000000000000007' + '00000208' + '0000000000001000',
    );
    assert.equal(
      hex(encodeHoleChunk(0, 7, 0, 65536, true)),
      '668e33ef' + '0001' + '0002' + '0000000000000007' + '0000000c' + '0000000000000000' + '00010000',
    );
    assert.equal(
      hex(encodeErrorChunk(0, 7, 22, 'bad')),
      '668e33ef' + '0001' + '8001' + '0000000000000007' + '00000009' + '00000016' + '0003' + '626164',
    );
    assert.equal(
      hex(encodeBlockStatusChunk(0, 7, 1, { lengths: [4096, 8192], flags: [3, 0], count: 2 }, true)),
      '668e33ef' +
        '0001' +
        '0005' +
        '0000000000000007' +
        '00000014' +
        '00000001' +
        '00001000' +
        '00000003' +
        '00002000' +
        '00000000',
    );
  });

  it('caps error messages at 4096 bytes', () => {
    const chunk = encodeErrorChunk(0, 1, 5, 'x'.repeat(10000));
    assert.equal(chunk.readUInt16BE(24), 4096);
    assert.equal(chunk.length, 20 + 6 + 4096);
  });

  it('decodes replies as a client would', () => {
    const r = decodeReply(Buffer.concat([encodeHoleChunk(0, 9, 0, 512, true), Buffer.from([1])]));
    assert.equal(r?.kind, 'chunk');
    assert.equal(r?.size, 32);
    assert.equal(decodeReply(encodeSimpleReply(0, 0, 1).subarray(0, 10)), undefined);
    assert.throws(() => decodeReply(Buffer.alloc(16)), /Bad reply magic/);
    assert.equal(CHUNK.OFFSET_HOLE, 2);
  });
});

describe('NBD export policy', () => {
  it('sends the transmission flags qemu-nbd 7.2 sends', () => {
    // qemu-nbd (observed with nbdinfo): cache, df (with structured replies), fast_zero, flush,
    // fua, trim, zero when writable; read_only without trim/zero/fast_zero; multi_conn with -e > 1.
    assert.equal(exportFlags(false, false), 0x0001 | 0x0004 | 0x0008 | 0x0020 | 0x0040 | 0x0400 | 0x0800);
    assert.equal(exportFlags(true, false), 0x0001 | 0x0002 | 0x0004 | 0x0008 | 0x0400);
    assert.equal(exportFlags(true, true) & TF.CAN_MULTI_CONN, TF.CAN_MULTI_CONN);
  });

  it('computes qemu:allocation-depth values', () => {
    const base = { offset: 0, length: 1, zero: false, data: true };
    assert.equal(allocationDepth({ ...base, allocated: true, depth: 0 }), 1);
    assert.equal(allocationDepth({ ...base, allocated: true }), 1);
    assert.equal(allocationDepth({ ...base, allocated: true, depth: 1 }), 2);
    assert.equal(allocationDepth({ ...base, allocated: false, data: false, zero: true, depth: 1 }), 0);
  });

  it('tells all-zero ranges', () => {
    const b = Buffer.alloc(8192);
    assert.equal(isZero(b, 0, 8192), true);
    b[8191] = 1;
    assert.equal(isZero(b, 0, 8192), false);
    assert.equal(isZero(b, 0, 8191), true);
    assert.equal(isZero(b, 5, 5), true);
    b[0] = 1;
    assert.equal(isZero(b, 0, 1), false);
    assert.equal(isZero(b, 1, 2), true);
  });

  it('finds the zero runs of a read buffer in blocks aligned to guest offsets', () => {
    const b = Buffer.alloc(5 * 1024);
    b.fill(1, 1024, 2048);
    // Read at guest offset 1024 with 1 KiB blocks: [0,1k) zero, [1k,2k) data, [2k,5k) zero.
    assert.deepEqual(zeroRuns(b, 1024, 1024), { starts: [0, 1024, 2048], zeros: [true, false, true] });
    // 2 KiB blocks aligned to guest offsets: [0,1k) is the end of a block, then [1k,3k), [3k,5k).
    assert.deepEqual(zeroRuns(b, 1024, 2048), { starts: [0, 1024, 3072], zeros: [true, false, true] });
  });

  it('merges equal neighbouring extents', () => {
    const list = { lengths: [] as number[], flags: [] as number[], count: 0 };
    addExtent(list, 4096, 3);
    addExtent(list, 4096, 3);
    addExtent(list, 512, 0);
    addExtent(list, 0xffffffff - 511, 0); // 512 more would overflow 32 bits: a new extent
    assert.deepEqual(list, { lengths: [8192, 512, 0xffffffff - 511], flags: [3, 0, 0], count: 3 });
  });
});

describe('ByteQueue', () => {
  it('hands out views inside one chunk and copies across chunks', () => {
    const q = new ByteQueue();
    const a = Buffer.from([1, 2, 3, 4]);
    q.push(a);
    q.push(Buffer.from([5, 6, 7, 8]));
    assert.equal(q.length, 8);
    const v = q.take(2);
    assert.equal(v.buffer, a.buffer); // a view, no copy
    assert.deepEqual([...v], [1, 2]);
    const [p, off] = q.peekSmall(4);
    assert.deepEqual([...p.subarray(off, off + 4)], [3, 4, 5, 6]);
    assert.equal(q.length, 6);
    assert.deepEqual([...q.take(4)], [3, 4, 5, 6]);
    const dst = Buffer.alloc(3);
    q.push(Buffer.from([9]));
    q.takeInto(dst, 0, 3);
    assert.deepEqual([...dst], [7, 8, 9]);
    assert.equal(q.length, 0);
  });

  it('skips across many chunks and keeps its bookkeeping small', () => {
    const q = new ByteQueue();
    for (let i = 0; i < 1000; i++) q.push(Buffer.from([i & 255, 0]));
    assert.equal(q.skip(1001), 1001);
    assert.equal(q.length, 999);
    // Bytes 1001..1003: the odd byte of chunk 500, then chunk 501 = [501 & 255, 0].
    assert.deepEqual([...q.take(3)], [0, 501 & 255, 0]);
    assert.equal(q.skip(5000), 996);
    assert.equal(q.length, 0);
  });
});
