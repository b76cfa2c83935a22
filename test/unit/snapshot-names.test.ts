/**
 * How snapshots are named and numbered, as QEMU does it: the -l parameter of convert and serve,
 * matching by id or name, and the id of a new snapshot.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Qcow2Snapshot } from '../../src/format/qcow2/codec/snapshot-table.js';
import { findSnapshot, nextSnapshotId } from '../../src/format/qcow2/snapshot/find.js';
import { parseSnapshotParam } from '../../src/tools/snapshot-param.js';

function snapshot(id: string, name: string): Qcow2Snapshot {
  return {
    l1TableOffset: 0,
    l1Size: 0,
    id,
    name,
    dateSec: 0,
    dateNsec: 0,
    vmClockNs: 0n,
    vmStateSize: 0,
    diskSize: 0,
    unknownExtra: Buffer.alloc(0),
    extraDataSize: 24,
  };
}

describe('snapshot names and ids', () => {
  it('reads the -l parameter as qemu-img and qemu-nbd do', () => {
    assert.deepEqual(parseSnapshotParam('before'), { idOrName: 'before' });
    assert.deepEqual(parseSnapshotParam('3'), { idOrName: '3' });
    assert.deepEqual(parseSnapshotParam('snapshot.id=2'), { id: '2' });
    assert.deepEqual(parseSnapshotParam('snapshot.id=2,snapshot.name=x'), { id: '2', name: 'x' });
    assert.throws(() => parseSnapshotParam('snapshot.id=2,size=3'), /Invalid parameter 'size'/);
  });

  it('matches an id first, then a name; id and name together must both match', () => {
    const list = [snapshot('1', '2'), snapshot('2', 'x'), snapshot('3', 'x')];
    assert.equal(findSnapshot(list, { idOrName: '2' }), 1, 'an id wins over a name');
    assert.equal(findSnapshot(list, { idOrName: 'x' }), 1, 'the first of a name');
    assert.equal(findSnapshot(list, { name: 'x', id: '3' }), 2);
    assert.equal(findSnapshot(list, { name: 'x', id: '1' }), -1);
    assert.equal(findSnapshot(list, { name: '2' }), 0);
    assert.equal(findSnapshot(list, {}), -1);
    assert.equal(findSnapshot(list, { idOrName: 'nope' }), -1);
  });

  it('numbers a new snapshot one past the largest id, read as strtoul reads it', () => {
    assert.equal(nextSnapshotId([]), '1');
    assert.equal(nextSnapshotId([snapshot('1', 'a'), snapshot('7', 'b'), snapshot('3', 'c')]), '8');
    assert.equal(nextSnapshotId([snapshot('12abc', 'a'), snapshot('name', 'b')]), '13');
  });
});
