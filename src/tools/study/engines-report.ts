/**
 * `--engine both` as one document: each engine's full report (every measurement, its ranking and
 * its recommendation), the engines that could not be measured and why, and how far the engines'
 * rankings agree. The HTML report draws the engines side by side from it.
 */
import { type Agreement, agreement } from './agreement.js';
import { STUDY_SCHEMA, type StudyReport } from './report-json.js';
import type { StudyEngine } from './results.js';

export interface EnginesReport {
  tool: 'vdisk study';
  schema: typeof STUDY_SCHEMA;
  command: string;
  /** One report per engine measured, in the order they ran. */
  engines: StudyReport[];
  /** Engines asked for that were not measured (qemu-nbd missing), and why. */
  notMeasured: Array<{ engine: StudyEngine; reason: string }>;
  /** ρ between the first two engines' rankings; empty with fewer than two. */
  agreement: Agreement[];
}

/** What a study's JSON file holds: one engine's report, or several engines'. */
export type StudyDocument = StudyReport | EnginesReport;

export function isEnginesReport(doc: StudyDocument): doc is EnginesReport {
  return Array.isArray((doc as EnginesReport).engines);
}

/** The single-engine reports in a document. */
export function reportsOf(doc: StudyDocument): StudyReport[] {
  return isEnginesReport(doc) ? doc.engines : [doc];
}

export function enginesReport(
  reports: readonly StudyReport[],
  notMeasured: EnginesReport['notMeasured'],
  command: string,
): EnginesReport {
  return {
    tool: 'vdisk study',
    schema: STUDY_SCHEMA,
    command,
    engines: [...reports],
    notMeasured: [...notMeasured],
    agreement: reports.length >= 2 ? agreement(reports[0]!, reports[1]!) : [],
  };
}

/** How an engine is named in text: what was measured, not only its key. */
export function engineTitle(engine: StudyEngine): string {
  if (engine === 'qemu') return 'QEMU (qemu-nbd)';
  if (engine === 'nbd') return 'NBD export';
  return 'vdisk';
}
