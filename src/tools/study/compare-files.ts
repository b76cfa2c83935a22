/**
 * `vdisk study --compare A.json [B.json]`: how far the rankings in two study files agree, so a
 * user can check on their own machine whether a ranking repeats (two runs of one engine) or
 * carries over (vdisk against QEMU). Runs are paired by engine; one file with several engines
 * compares its engines with each other.
 */
import { readFile } from 'node:fs/promises';
import { fromSystemError, VdiskError } from '../../block/errors.js';
import { type Agreement, agreement } from './agreement.js';
import { reportsOf, type StudyDocument } from './engines-report.js';
import type { StudyReport } from './report-json.js';

export interface ComparedSide {
  file: string;
  report: StudyReport;
}

export interface FileComparison {
  a: ComparedSide;
  b: ComparedSide;
  agreement: Agreement[];
}

/** Reads a study's JSON file, or says in one line why it is not one. */
export async function readStudyFile(file: string): Promise<StudyDocument> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw fromSystemError(err, `Could not read '${file}'`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new VdiskError('EINVAL', `'${file}' is not JSON`);
  }
  const d = doc as Partial<StudyReport> & { engines?: unknown };
  const valid =
    d !== null &&
    typeof d === 'object' &&
    d.tool === 'vdisk study' &&
    (Array.isArray(d.results) || (Array.isArray(d.engines) && d.engines.every((e) => Array.isArray(e?.results))));
  if (!valid) throw new VdiskError('EINVAL', `'${file}' is not the JSON of a vdisk study`);
  return doc as StudyDocument;
}

/** The pairs of runs to compare: the same engine in both files, or each file's only run. */
export function pairRuns(
  files: ReadonlyArray<{ file: string; doc: StudyDocument }>,
): Array<[ComparedSide, ComparedSide]> {
  const sides = files.map(({ file, doc }) => reportsOf(doc).map((report) => ({ file, report })));
  if (sides.length === 1) {
    const [only] = sides;
    if (only!.length < 2) {
      throw new VdiskError('EINVAL', `'${files[0]!.file}' holds one study: give a second file to compare it with`);
    }
    return [[only![0]!, only![1]!]];
  }
  const [a, b] = sides as [ComparedSide[], ComparedSide[]];
  const common = a.filter((x) => b.some((y) => y.report.engine === x.report.engine));
  if (common.length > 0) return common.map((x) => [x, b.find((y) => y.report.engine === x.report.engine)!]);
  if (a.length === 1 && b.length === 1) return [[a[0]!, b[0]!]];
  throw new VdiskError('EINVAL', `'${files[0]!.file}' and '${files[1]!.file}' have no engine in common`);
}

export async function compareStudyFiles(files: readonly string[]): Promise<FileComparison[]> {
  if (files.length < 1 || files.length > 2) throw new VdiskError('EINVAL', '--compare takes one or two study files');
  const docs = await Promise.all(files.map(async (file) => ({ file, doc: await readStudyFile(file) })));
  return pairRuns(docs).map(([a, b]) => ({ a, b, agreement: agreement(a.report, b.report) }));
}
