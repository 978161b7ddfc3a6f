// p2u Web Worker entry: runs the model (download, patching, inference) off
// the main thread. Started by `loadInWorker()` in p2u.js; the message
// protocol is internal to the package.

import { load, P2uError } from './p2u.js';

let model = null;
const stop = new AbortController();

const errorOf = (e) => ({ message: String(e?.message ?? e), kind: e?.kind ?? 'internal' });

self.onmessage = async ({ data: msg }) => {
  switch (msg.type) {
    case 'load': {
      try {
        model = await load(msg.source, {
          ...msg.options,
          signal: stop.signal,
          onProgress: (p) => self.postMessage({ type: 'progress', progress: p }),
          onStage: (s) => self.postMessage({ type: 'stage', status: s }),
          onRetry: (r) => self.postMessage({ type: 'retry', retry: { file: r.file, attempt: r.attempt, offset: r.offset, error: errorOf(r.error) } }),
          onCacheError: (c) => self.postMessage({ type: 'cacheError', cacheError: { url: c.url, error: errorOf(c.error) } }),
        });
      } catch (e) {
        self.postMessage({ type: 'loadError', error: errorOf(e) });
        return;
      }
      self.postMessage({
        type: 'loaded',
        status: model.status,
        manifest: model.manifest,
        source: model.source,
        timeToFirstRun: model.timeToFirstRun,
      });
      model.finalized.then(
        (status) => self.postMessage({ type: 'final', status, rebuildMs: model.rebuildMs, longestStepMs: model.longestStepMs }),
        (e) => self.postMessage({ type: 'failed', status: model.status, error: errorOf(e) }),
      );
      break;
    }
    case 'run': {
      try {
        if (!model) throw new P2uError('model is not loaded', 'invalid');
        const r = await model.run(msg.input, msg.dims, msg.options);
        self.postMessage({ type: 'result', id: msg.id, result: r }, r.outputs.map((o) => o.data.buffer));
      } catch (e) {
        self.postMessage({ type: 'runError', id: msg.id, error: errorOf(e) });
      }
      break;
    }
    case 'stop':
      stop.abort(new P2uError('stream stopped', 'abort'));
      break;
  }
};
