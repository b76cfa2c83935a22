/**
 * The study as one JSON document: every measurement (each round's samples and their medians),
 * the machine and filesystem it ran on, the command, the ranking and the recommendation. The
 * HTML report is made from this document alone.
 */
import { writeFile } from 'node:fs/promises';
import { fromSystemError } from '../../block/errors.js';
import { rankResults } from './rank.js';
import { type Recommendation, recommend } from './recommend.js';
import type { StudyRun } from './results.js';
import { RANKED_WORKLOADS, WORKLOADS, type Workload, workloadTitle } from './workloads.js';

/**
 * 2: repeated workloads (samples per repetition), ties in the ranking, `server` for NBD studies.
 * 3: cold and warm reads (`pageCache` in the definitions, `evictedReads`), warm reads unscored.
 */
export const STUDY_SCHEMA = 3;

export interface StudyReport extends StudyRun {
  tool: 'vdisk study';
  schema: typeof STUDY_SCHEMA;
  /** The command line that made it. */
  command: string;
  workloadDefinitions: Array<
    Pick<Workload, 'name' | 'title' | 'description' | 'writes' | 'phase' | 'queueDepth' | 'metric'> & {
      /** Reads: 'cold' (host page cache dropped first) or 'warm' (data read into it first); null for writes. */
      pageCache: 'cold' | 'warm' | null;
      /** Whether the workload counts in the score (warm reads do not). */
      scored: boolean;
    }
  >;
  /** Combination ids best first, with their scores (null: did not run). */
  ranking: Array<{
    id: string;
    /** The strict order of the scores. */
    rank: number | null;
    /**
     * The places it could take, best and worst, given the combinations within its measured spread
     * (ties.ts): [3, 3] for a place of its own, [3, 7] when it ties with four others.
     */
    rankRange: [number, number] | null;
    score: number | null;
    /** The score over the low and high ends of each figure's spread. */
    scoreLow: number | null;
    scoreHigh: number | null;
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
      ({ name, description, writes, phase, queueDepth, metric, pageCache }) => ({
        name,
        title: workloadTitle(name, run.evictedReads),
        description,
        writes,
        phase,
        queueDepth,
        metric,
        pageCache: pageCache ?? null,
        scored: RANKED_WORKLOADS.includes(name),
      }),
    ),
    ranking: rankResults(run).map((r) => ({
      id: r.result.id,
      rank: r.rank,
      rankRange: r.tie ? [r.tie.best, r.tie.worst] : null,
      score: r.score,
      scoreLow: r.scoreSpread?.low ?? null,
      scoreHigh: r.scoreSpread?.high ?? null,
      writes: r.writes,
      firstTouch: r.firstTouch,
      steady: r.steady,
      reads: r.reads,
    })),
    recommendation: recommend(run),
  };
}

export async function writeJsonReport(file: string, report: object): Promise<void> {
  try {
    await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
  } catch (err) {
    throw fromSystemError(err, `Could not write '${file}'`);
  }
}
