import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type BudgetHolder, DataBudget, FAIR_SHARE } from '../../src/nbd/data-budget.js';

const MiB = 1024 * 1024;

/** A session as the budget sees it, with the bytes it holds set by the test. */
function holder(): BudgetHolder & { reserved: number; unread: number } {
  return {
    reserved: 0,
    unread: 0,
    unreadBytes() {
      return this.unread;
    },
    reservedBytes() {
      return this.reserved;
    },
  };
}

function take(budget: DataBudget, h: ReturnType<typeof holder>, bytes: number): boolean {
  const ok = budget.tryReserve(bytes, h);
  if (ok) h.reserved += bytes;
  return ok;
}

const tick = () => new Promise((r) => setImmediate(r));

describe('DataBudget', () => {
  it('gives room to the oldest waiter first, and wakes it when room is freed', async () => {
    const budget = new DataBudget(10 * MiB);
    const [a, b, c] = [holder(), holder(), holder()];
    for (const h of [a, b, c]) budget.addHolder(h);
    assert.ok(take(budget, a, 6 * MiB));
    assert.ok(!take(budget, b, 6 * MiB), 'does not fit');
    let woken = 0;
    budget.wait(b, () => woken++);
    assert.ok(budget.contended);
    assert.ok(!take(budget, c, 3 * MiB), 'fits, but b has waited longer');
    budget.release(6 * MiB);
    a.reserved = 0;
    await tick();
    assert.equal(woken, 1, 'b is told to try again');
    assert.ok(take(budget, b, 6 * MiB));
    assert.ok(!budget.contended, 'b left the queue');
    assert.ok(take(budget, c, 3 * MiB));
    assert.equal(budget.used, 9 * MiB);
  });

  it('counts unread replies, admits a fair share to a client holding nothing, and anything when idle', () => {
    const budget = new DataBudget(4 * MiB);
    const [deaf, other, big] = [holder(), holder(), holder()];
    for (const h of [deaf, other, big]) budget.addHolder(h);
    deaf.unread = 4 * MiB;
    assert.equal(budget.used, 4 * MiB);
    assert.ok(!take(budget, other, 2 * MiB), 'no room');
    assert.ok(take(budget, other, FAIR_SHARE), 'a fair share for a client that holds nothing');
    assert.ok(!take(budget, other, FAIR_SHARE), 'but only one while it holds it');
    budget.removeHolder(deaf);
    budget.release(FAIR_SHARE);
    other.reserved = 0;
    assert.equal(budget.used, 0);
    assert.ok(take(budget, big, 32 * MiB), 'a request larger than the budget runs when nothing is held');
  });

  it('a waiter that leaves lets the next one go', async () => {
    const budget = new DataBudget(2 * MiB);
    const [a, b, c] = [holder(), holder(), holder()];
    for (const h of [a, b, c]) budget.addHolder(h);
    assert.ok(take(budget, a, 2 * MiB));
    const woken: string[] = [];
    budget.wait(b, () => woken.push('b'));
    budget.wait(c, () => woken.push('c'));
    budget.leave(b);
    await tick();
    assert.deepEqual(woken, ['c']);
    budget.removeHolder(c);
    assert.ok(!budget.contended);
  });
});
