/** The raw format, as the engine sees it: it matches any file, so probing tries it last. */
import type { FormatDefinition } from '../format.js';
import { rawCreator } from './create.js';
import { RawDriver } from './driver.js';
import { measureRaw } from './measure.js';

export const rawFormat: FormatDefinition = {
  name: 'raw',
  probe: () => true,
  open: async (child) => new RawDriver(child),
  create: rawCreator,
  measure: measureRaw,
};
