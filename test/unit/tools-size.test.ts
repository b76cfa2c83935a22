import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VdiskError } from '../../src/block/errors.js';
import { formatIoSize, formatSize, formatSizeWithBytes, parseSize, strtosz } from '../../src/tools/size.js';
import { formatFixed, formatGeneral } from '../../src/util/printf.js';

const INVALID =
  'Invalid image size specified. You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.';
const RANGE = 'Invalid image size specified. Must be between 0 and 9223372036854775807.';

describe('parseSize (qemu_strtosz as qemu-img create reads sizes)', () => {
  // Every value here was checked against qemu-img 7.2's "Formatting …, size=N".
  const accepted: Array<[string, number]> = [
    ['512', 512],
    ['64k', 65536],
    ['10M', 10485760],
    ['1G', 1073741824],
    ['2T', 2199023255552],
    ['1.5G', 1610612736],
    ['1b', 1],
    ['1B', 1],
    ['1K', 1024],
    ['1g', 1073741824],
    ['0', 0],
    ['0.5k', 512],
    ['1.00001k', 1024],
    ['  5M', 5242880],
    ['0x10', 16],
    ['1P', 1125899906842624],
    ['1.k', 1024],
    ['1.', 1],
    ['1.0', 1],
    ['+5', 5],
  ];
  for (const [text, value] of accepted) {
    it(`reads ${JSON.stringify(text)} as ${value}`, () => assert.equal(parseSize(text), value));
  }

  const refused = [
    '1.5',
    'abc',
    '10x',
    '',
    '1kk',
    '5M ',
    '1e3',
    '4096.7',
    '-1',
    '-0',
    '0x1k',
    '0x1.5',
    '1.5b',
    '1.5e3k',
  ];
  for (const text of refused) {
    it(`refuses ${JSON.stringify(text)} with qemu-img's message`, () => {
      assert.throws(
        () => parseSize(text),
        (err: unknown) => err instanceof VdiskError && err.code === 'EINVAL' && err.message === INVALID,
      );
    });
  }

  for (const text of ['16E', '8E', '99999999999999999999']) {
    it(`refuses ${text} as out of range`, () => {
      assert.throws(
        () => parseSize(text),
        (err: unknown) => err instanceof VdiskError && err.message === RANGE,
      );
    });
  }

  it('refuses sizes QEMU takes but vdisk cannot represent (above 2^53)', () => {
    assert.deepEqual(strtosz('7E'), { ok: true, value: 8070450532247928832n });
    assert.throws(
      () => parseSize('7E'),
      (err: unknown) => err instanceof VdiskError && err.code === 'EOVERFLOW',
    );
  });

  it('names the value in its messages', () => {
    assert.throws(() => parseSize('x', 'start offset'), /Invalid start offset specified/);
  });

  it('takes numbers as bytes', () => {
    assert.equal(parseSize(4096), 4096);
    assert.throws(() => parseSize(-1), VdiskError);
    assert.throws(() => parseSize(1.5), VdiskError);
  });
});

describe('formatSize (qemu-img size_to_str)', () => {
  const cases: Array<[number, string]> = [
    [0, '0 B'],
    [512, '512 B'],
    [1000, '0.977 KiB'],
    [4096, '4 KiB'],
    [1048576, '1 MiB'],
    [200704, '196 KiB'],
    [1572864000, '1.46 GiB'],
    [1179648, '1.12 MiB'], // 1.125 MiB: glibc rounds the tie to even
    [1310720, '1.25 MiB'],
    [1023999, '1e+03 KiB'],
    [2 ** 40, '1 TiB'],
    [2 ** 62, '4 EiB'],
  ];
  for (const [bytes, text] of cases) {
    it(`prints ${bytes} as ${text}`, () => assert.equal(formatSize(bytes), text));
  }
  it('adds the byte count for virtual size', () => {
    assert.equal(formatSizeWithBytes(1048576), '1 MiB (1048576 bytes)');
  });
});

describe('formatIoSize (qemu-io cvtstr)', () => {
  const cases: Array<[number, string]> = [
    [0, '0 bytes'],
    [64, '64 bytes'],
    [350.429995, '350.429995 bytes'],
    [4096, '4 KiB'],
    [1536, '1.500 KiB'],
    [1048576, '1 MiB'],
    [2 ** 20 * 1.0625, '1.062 MiB'],
    [2 ** 30 * 3, '3 GiB'],
  ];
  for (const [value, text] of cases) {
    it(`prints ${value} as ${text}`, () => assert.equal(formatIoSize(value), text));
  }
});

describe('C number formatting', () => {
  it('rounds exact ties to even like glibc', () => {
    assert.equal(formatFixed(0.125, 2), '0.12');
    assert.equal(formatFixed(0.375, 2), '0.38');
    assert.equal(formatFixed(2.5, 0), '2');
    assert.equal(formatFixed(1.005, 2), '1.00'); // 1.005 is below the tie in binary
  });
  it('formats %g', () => {
    assert.equal(formatGeneral(1, 3), '1');
    assert.equal(formatGeneral(1.5, 3), '1.5');
    assert.equal(formatGeneral(0.977, 3), '0.977');
    assert.equal(formatGeneral(123456, 3), '1.23e+05');
    assert.equal(formatGeneral(0.0001234, 3), '0.000123');
    assert.equal(formatGeneral(0.00001234, 3), '1.23e-05');
    assert.equal(formatGeneral(999.5, 3), '1e+03');
    assert.equal(formatGeneral(100, 3), '100');
  });
});
