/**
 * The study as one JSON document: every measurement (each round's samples and their medians),
 * the machine and filesystem it ran on, the command, the ranking and the recommendation. The
 * HTML report is made from this document alone.
 */
import { writeFile } from 'node:fs/promises';
import { fromSystemError } from '../../block/errors.js';
import { rankResults } from './rank.js';
import { type Recommendation, recommend } from './recommend.js';
import type { StudyRun } from './runner.js';
import { WORKLOADS, type Workload } from './workloads.js';

export const STUDY_SCHEMA = 1;

export interface StudyReport extends StudyRun {
  tool: 'vdisk study';
  schema: typeof STUDY_SCHEMA;
  /** The command line that made it. */
  command: string;
  workloadDefinitions: Array<
    Pick<Workload, 'name' | 'title' | 'description' | 'writes' | 'phase' | 'queueDepth' | 'metric'>
  >;
  /** Combination ids best first, with their scores (null: did not run). */
  ranking: Array<{
    id: string;
    rank: number | null;
    score: number | null;
    writes: number | null;
    firstTouch: number | null;
    steady: number | null;
    reads: number | null;
  }>;
  recommendation: Recommendation;
}

export function studyReport(run: StudyRun, command: string): StudyReport {
  return {
    tool: 'vdisk study',
    schema: STUDY_SCHEMA,
    command,
    ...run,
    workloadDefinitions: WORKLOADS.filter((w) => run.workloads.includes(w.name)).map(
      ({ name, title, description, writes, phase, queueDepth, metric }) => ({
        name,
        title,
        description,
        writes,
        phase,
        queueDepth,
        metric,
      }),
    ),
    ranking: rankResults(run).map((r) => ({
      id: r.result.id,
      rank: r.rank,
      score: r.score,
      writes: r.writes,
      firstTouch: r.firstTouch,
      steady: r.steady,
      reads: r.reads,
    })),
    recommendation: recommend(run),
  };
}

export async function writeJsonReport(file: string, report: StudyReport): Promise<void> {
  try {
    await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
  } catch (err) {
    throw fromSystemError(err, `Could not write '${file}'`);
  }
}
