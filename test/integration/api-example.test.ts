/**
 * docs/api.md's example runs as it is written: it is taken from the page, run as a module that
 * imports 'vdisk' (the package itself, built), and every line it prints with a `// expected`
 * comment must appear, in order.
 */
import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { run } from '../helpers/run.js';

/** dist/test/integration/ -> the repository root. */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

describe('docs/api.md', () => {
  it('its example runs and prints what its comments say', async () => {
    const page = await readFile(path.join(ROOT, 'docs/api.md'), 'utf8');
    const code = /```js\n([\s\S]*?)```/.exec(page)?.[1];
    assert.ok(code, 'docs/api.md has no js example');
    const expected = [...code.matchAll(/console\.log\(.*\); \/\/ (.+)$/gm)].map((m) => m[1]!.trim());
    assert.ok(expected.length >= 5, 'the example states what it prints');
    // Inside the package, so that `import … from 'vdisk'` resolves to this package.
    const file = path.join(ROOT, 'dist', `api-example-${process.pid}.mjs`);
    await writeFile(file, code);
    try {
      const r = await run(process.execPath, [file]);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.split('\n');
      let at = 0;
      for (const want of expected) {
        const found = lines.indexOf(want, at);
        assert.ok(found >= 0, `expected the line '${want}' in:\n${r.stdout}`);
        at = found + 1;
      }
    } finally {
      await rm(file, { force: true });
    }
  });
});
