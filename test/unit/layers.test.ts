/**
 * The shape of src/: layers import downward only (block/ below io/, format/ and nbd-wire/,
 * remote/ above nbd-wire/, all of them below engine/, engine/ below nbd/ and tools/, cli/ on
 * top), there is no import cycle, and no source file grows past 500 lines (400 in nbd/ and
 * nbd-wire/). Read from the TypeScript sources, so a change that
 * breaks the shape fails here.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

/** dist/test/unit/ -> the repository root. */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const SRC = path.join(ROOT, 'src');

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return sources(full);
    return name.endsWith('.ts') ? [full] : [];
  });
}

/** src-relative path -> the src-relative paths it imports (relative imports only). */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources(SRC)) {
    const text = readFileSync(file, 'utf8');
    const deps: string[] = [];
    for (const m of text.matchAll(/(?:import|export)\s[^;]*?from\s+['"](\.[^'"]+)['"]/g)) {
      const target = path.resolve(path.dirname(file), m[1]!).replace(/\.js$/, '.ts');
      deps.push(path.relative(SRC, target));
    }
    graph.set(path.relative(SRC, file), deps);
  }
  return graph;
}

const layer = (file: string) => file.split(path.sep)[0]!;

/** What each top-level folder of src/ may not import. */
const FORBIDDEN: Record<string, string[]> = {
  block: ['io', 'format', 'nbd-wire', 'remote', 'engine', 'nbd', 'tools', 'cli'],
  util: ['io', 'format', 'nbd-wire', 'remote', 'engine', 'nbd', 'tools', 'cli'],
  io: ['format', 'nbd-wire', 'remote', 'engine', 'nbd', 'tools', 'cli'],
  format: ['nbd-wire', 'remote', 'engine', 'nbd', 'tools', 'cli'],
  /** The NBD wire format, shared by the server and the client: only block/ and util/ below it. */
  'nbd-wire': ['io', 'format', 'remote', 'engine', 'nbd', 'tools', 'cli'],
  /** Protocol drivers that reach other hosts (the NBD client), beside io/: the wire format below them. */
  remote: ['io', 'format', 'engine', 'nbd', 'tools', 'cli'],
  engine: ['nbd', 'tools', 'cli'],
  nbd: ['tools', 'cli'],
  tools: ['cli'],
};

describe('the layers of src/', () => {
  const graph = importGraph();

  it('import downward only', () => {
    const wrong: string[] = [];
    for (const [file, deps] of graph) {
      for (const dep of deps) {
        if (FORBIDDEN[layer(file)]?.includes(layer(dep))) wrong.push(`${file} imports ${dep}`);
      }
    }
    assert.deepEqual(wrong, []);
  });

  it('have no import cycle', () => {
    const state = new Map<string, 'active' | 'done'>();
    const cycles: string[] = [];
    const visit = (file: string, stack: string[]): void => {
      state.set(file, 'active');
      for (const dep of graph.get(file) ?? []) {
        if (state.get(dep) === 'active') cycles.push([...stack.slice(stack.indexOf(dep)), dep].join(' -> '));
        else if (!state.has(dep) && graph.has(dep)) visit(dep, [...stack, dep]);
      }
      state.set(file, 'done');
    };
    for (const file of graph.keys()) if (!state.has(file)) visit(file, [file]);
    assert.deepEqual(cycles, []);
  });

  it('keep files small', () => {
    const large: string[] = [];
    for (const file of graph.keys()) {
      const lines = readFileSync(path.join(SRC, file), 'utf8').split('\n').length - 1;
      const limit = layer(file).startsWith('nbd') ? 400 : 500;
      if (lines > limit) large.push(`${file}: ${lines} lines (at most ${limit})`);
    }
    assert.deepEqual(large, []);
  });
});
