import { runFaultCase } from './lib/faults.js';
import { allWorkloads } from './lib/workloads.js';

if (!process.env.NODE_TEST_CONTEXT) {
  const only = process.argv[2];
  const caches = (process.argv[3] ?? 'writeback').split(',');
  for (const w of allWorkloads()) {
    if (only && !w.name.includes(only)) continue;
    for (const cache of caches) {
      const t0 = Date.now();
      const dry = await runFaultCase(w, cache as 'writeback', { at: 0, errno: 'EIO', mode: 'once' });
      let cases = 0;
      const problems: string[] = [...dry.problems];
      for (let at = 1; at <= dry.hostOps; at += Math.max(1, Math.floor(dry.hostOps / 150))) {
        for (const errno of ['EIO', 'ENOSPC'] as const)
          for (const mode of ['once', 'sticky'] as const) {
            const r = await runFaultCase(w, cache as 'writeback', { at, errno, mode });
            cases++;
            problems.push(...r.problems);
          }
      }
      console.log(
        `${w.name} ${cache}: hostOps=${dry.hostOps} cases=${cases} problems=${problems.length} ${Date.now() - t0}ms`,
      );
      for (const p of problems.slice(0, 8)) console.log('  ' + p.slice(0, 600));
    }
  }
}
