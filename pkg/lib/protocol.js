// The one message protocol between loadInWorker() (page side, p2u.js) and
// the worker (worker.js). Page → worker: `load`, `run`, `stop`. Worker →
// page: `progress`, `stage`, `retry`, `cacheError`, `loaded`, `loadError`,
// `final`, `failed`, `result`, `runError`. Errors cross as plain
// `{ message, kind }` records and become P2uErrors again on arrival.

import { P2uError } from './errors.js';

/** A P2uError (or anything thrown) as a structured-cloneable record. */
export const errorRecord = (e) => ({ message: String(e?.message ?? e), kind: e?.kind ?? 'internal' });

/** The P2uError an error record stands for. */
export const errorFromRecord = (r) => new P2uError(r.message, r.kind);

/** What the worker says once the model runs (`loaded`). */
export const loadedMessage = (model) => ({
  type: 'loaded',
  status: model.status,
  manifest: model.manifest,
  source: model.source,
  timeToFirstRun: model.timeToFirstRun,
  inputMetadata: model.inputMetadata,
  outputMetadata: model.outputMetadata,
});
