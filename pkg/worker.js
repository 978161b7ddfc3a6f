// p2u Web Worker entry: runs the model (download, patching, inference) off
// the main thread. Started by `loadInWorker()` in p2u.js; the messages are
// the ones lib/protocol.js describes.

import { load } from './lib/model.js';
import { P2uError } from './lib/errors.js';
import { errorRecord, loadedMessage } from './lib/protocol.js';

let model = null;
const stop = new AbortController();

self.onmessage = async ({ data: msg }) => {
  switch (msg.type) {
    case 'load': {
      try {
        model = await load(msg.source, {
          ...msg.options,
          signal: stop.signal,
          onProgress: (p) => self.postMessage({ type: 'progress', progress: p }),
          onStage: (s) => self.postMessage({ type: 'stage', status: s }),
          onRetry: (r) => self.postMessage({ type: 'retry', retry: { file: r.file, attempt: r.attempt, offset: r.offset, error: errorRecord(r.error) } }),
          onCacheError: (c) => self.postMessage({ type: 'cacheError', cacheError: { url: c.url, error: errorRecord(c.error) } }),
        });
      } catch (e) {
        self.postMessage({ type: 'loadError', error: errorRecord(e) });
        return;
      }
      self.postMessage(loadedMessage(model));
      model.finalized.then(
        (status) => self.postMessage({ type: 'final', status, rebuildMs: model.rebuildMs, longestStepMs: model.longestStepMs }),
        (e) => self.postMessage({ type: 'failed', status: model.status, error: errorRecord(e) }),
      );
      break;
    }
    case 'run': {
      try {
        if (!model) throw new P2uError('model is not loaded', 'invalid');
        const r = await model.run(msg.input, msg.dims, msg.options);
        delete r.byName; // rebuilt on the page side (same objects as outputs)
        self.postMessage({ type: 'result', id: msg.id, result: r }, r.outputs.map((o) => o.data.buffer));
      } catch (e) {
        self.postMessage({ type: 'runError', id: msg.id, error: errorRecord(e) });
      }
      break;
    }
    case 'stop':
      stop.abort(new P2uError('stream stopped', 'abort'));
      break;
  }
};
