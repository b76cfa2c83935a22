/**
 * The qcow2 check at the path src/tools/check.ts imports it from. The rest of vdisk reaches
 * qcow2 through index.ts; this file only forwards until that importer does too.
 */
export { type CheckResult, checkQcow2, type RepairMode } from './check/check.js';
