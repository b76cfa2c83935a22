import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VdiskError } from '../../src/block/errors.js';
import { RAW_CREATE_OPTIONS } from '../../src/format/raw/create.js';
import {
  formatOptionHelp,
  formatOptionSummary,
  hasHelpOption,
  isValidOptionList,
  joinOptionLists,
  resolveOptions,
  splitOptionList,
} from '../../src/tools/options.js';

describe('option lists (QemuOpts)', () => {
  it('splits key=value pairs with ",," escaping', () => {
    assert.deepEqual(splitOptionList('a=1,b=x,,y,c'), [
      { name: 'a', value: '1' },
      { name: 'b', value: 'x,y' },
      { name: 'c', value: 'on' },
    ]);
    assert.deepEqual(splitOptionList('nofoo'), [{ name: 'foo', value: 'off' }]);
    assert.deepEqual(splitOptionList('=off'), [{ name: '', value: 'off' }]);
    assert.deepEqual(splitOptionList('id=x,a=1'), [{ name: 'a', value: '1' }]);
  });

  it("checks lists as qemu-img's is_valid_option_list", () => {
    assert.equal(isValidOptionList(''), false);
    assert.equal(isValidOptionList(','), false);
    assert.equal(isValidOptionList('a=1,'), false);
    assert.equal(isValidOptionList('a=1,,'), true);
    assert.equal(isValidOptionList('a=1'), true);
    assert.throws(() => joinOptionLists(['a=1', '']), /^VdiskError: Invalid option list: $/);
    assert.equal(joinOptionLists(['a=1', 'b=2']), 'a=1,b=2');
  });

  it('finds help requests', () => {
    assert.equal(hasHelpOption('help'), true);
    assert.equal(hasHelpOption('size=1M,?'), true);
    assert.equal(hasHelpOption('help=1'), false);
  });

  it('resolves raw options with QEMU messages', () => {
    const r = resolveOptions('preallocation=falloc,size=2M,preallocation=full', RAW_CREATE_OPTIONS);
    assert.equal(r.get('preallocation')?.value, 'full');
    assert.equal(r.get('size')?.value, 2097152);
    const fails: Array<[string, string]> = [
      ['foo=bar', "Invalid parameter 'foo'"],
      ['foo', "Invalid parameter 'foo'"],
      ['preallocation=bogus', 'invalid parameter value: bogus'],
      ['preallocation', 'invalid parameter value: on'],
      ['preallocation=off,,x', 'invalid parameter value: off,x'],
      ['size=bogus', "Parameter 'size' expects a non-negative number below 2^64"],
      ['size=16E', "Value '16E' is out of range for parameter 'size'"],
    ];
    for (const [text, message] of fails) {
      assert.throws(
        () => resolveOptions(text, RAW_CREATE_OPTIONS),
        (err: unknown) => err instanceof VdiskError && err.message.startsWith(message),
        text,
      );
    }
    assert.equal(resolveOptions({ preallocation: 'full' }, RAW_CREATE_OPTIONS).get('preallocation')?.value, 'full');
  });

  it('prints help and the Formatting summary as qemu-img', () => {
    assert.equal(
      formatOptionHelp(RAW_CREATE_OPTIONS),
      '  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)\n' +
        '  size=<size>            - Virtual disk size\n',
    );
    const given = resolveOptions('preallocation=off,size=1M', RAW_CREATE_OPTIONS);
    assert.equal(formatOptionSummary(RAW_CREATE_OPTIONS, given), 'size=1048576 preallocation=off');
  });
});
