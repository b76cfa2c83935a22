/** Rank correlations as the terminal shows them: a line after `--engine both`, a table for `--compare`. */
import type { Agreement } from './agreement.js';
import type { ComparedSide, FileComparison } from './compare-files.js';
import { engineTitle } from './engines-report.js';

/** The bar for a ranking that repeats: ρ of at least 0.9. */
export const REPEATABLE_RHO = 0.9;

function rhoText(rho: number | null): string {
  return rho === null ? '-' : rho.toFixed(2);
}

/**
 * ρ with ties, or why there is none: "all tied" when one side has every combination in one group
 * (no order to compare), "-" when there are too few combinations.
 */
export function tiedRhoText(r: Agreement): string {
  if (r.rho === null && r.strictRho !== null) return 'all tied';
  return rhoText(r.rho);
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** ρ per workload and overall, as a short paragraph. */
export function agreementLine(rows: readonly Agreement[]): string {
  const n = Math.max(0, ...rows.map((r) => r.n));
  const cell = (r: Agreement) => `${r.what} ${tiedRhoText(r)}`;
  return (
    `vdisk against QEMU on this storage: Spearman's ρ of the rankings of ${plural(n, 'combination')}, ` +
    `ties shared (1: the same order): ${rows.map(cell).join(', ')}\n`
  );
}

function sideText(side: ComparedSide): string {
  const r = side.report;
  const date = r.startedAt.replace('T', ' ').replace(/:\d\d(\.\d+)?Z$/, ' UTC');
  return `${engineTitle(r.engine)} (${side.file}, ${r.profile.name}, ${date})`;
}

/** One comparison as a small table and a verdict line. */
export function comparisonText(c: FileComparison): string {
  const n = Math.max(0, ...c.agreement.map((r) => r.n));
  const lines = [`${sideText(c.a)} against ${sideText(c.b)}: ${plural(n, 'combination')} in both`];
  if (c.a.report.profile.name !== c.b.report.profile.name) {
    lines.push(`Note: different profiles (${c.a.report.profile.name}, ${c.b.report.profile.name}).`);
  }
  const width = Math.max(8, ...c.agreement.map((r) => r.what.length));
  lines.push(`${'workload'.padEnd(width)}  ρ with ties  ρ strict`);
  for (const r of c.agreement) {
    lines.push(`${r.what.padEnd(width)}  ${tiedRhoText(r).padStart(11)}  ${rhoText(r.strictRho).padStart(8)}`);
  }
  const ranked = c.agreement.filter((r) => r.rho !== null);
  const agree = ranked.filter((r) => r.rho! >= REPEATABLE_RHO).map((r) => r.what);
  const below = ranked.filter((r) => r.rho! < REPEATABLE_RHO).map((r) => `${r.what} ${rhoText(r.rho)}`);
  if (ranked.length === 0) lines.push('Too few combinations in common to rank.');
  else {
    lines.push(
      `ρ ≥ ${REPEATABLE_RHO} (with ties): ${agree.length ? agree.join(', ') : 'none'}` +
        (below.length ? `; below: ${below.join(', ')}` : ''),
    );
  }
  return `${lines.join('\n')}\n`;
}
