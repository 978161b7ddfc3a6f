// The local HTTP server of the demo, the browser tests and the benchmark
// (127.0.0.1 only).
//
// Static mounts map URL prefixes to directories. A path may start with
// `/s/<faults>/`, a comma-separated list that shapes the response of the
// rest of the path:
//   rate=BYTES_PER_S   bandwidth limit (per response)
//   drop=N             the first request for this file closes the connection after N bytes
//   corrupt=N          flips byte N of every .p2u response
//   norange            ignores Range headers (always 200, whole file)
// Range requests (`bytes=N-` / `bytes=N-M`) are honoured otherwise. Like
// nginx's `brotli_static`/`gzip_static`, a request without Range whose
// Accept-Encoding allows it gets the pre-compressed sibling `FILE.br` or
// `FILE.gz` when one exists (with `Content-Encoding` and the compressed
// length: the rate limit then paces the bytes really sent). Every request
// is logged (method, path, range, encoding, status) for the tests to inspect.

import { createServer } from 'node:http';
import { createReadStream, statSync, existsSync } from 'node:fs';
import { extname, join, normalize } from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.onnx': 'application/octet-stream',
  '.p2u': 'application/octet-stream',
  '.css': 'text/css',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
};

function parseFaults(spec) {
  const f = {};
  for (const part of spec.split(',')) {
    const [k, v] = part.split('=');
    f[k] = v === undefined ? true : Number(v);
  }
  return f;
}

/** Starts the server; resolves with `{ origin, requests, close }`. */
export function startServer({ mounts, port = 0, defaultFaults = {} }) {
  const requests = [];
  const dropped = new Set();
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let path = decodeURIComponent(url.pathname);
    let faults = { ...defaultFaults };
    const m = path.match(/^\/s\/([^/]+)(\/.*)$/);
    if (m) {
      faults = { ...faults, ...parseFaults(m[1]) };
      path = m[2];
    }
    const entry = { method: req.method, path: url.pathname, range: req.headers.range ?? null, status: 0 };
    requests.push(entry);
    const headers = {
      'access-control-allow-origin': '*',
      'access-control-allow-headers': 'range',
      'access-control-expose-headers': 'content-length, content-range, accept-ranges, content-encoding',
      'cross-origin-resource-policy': 'cross-origin',
      'cache-control': 'no-store',
    };
    if (req.method === 'OPTIONS') {
      entry.status = 204;
      res.writeHead(204, headers).end();
      return;
    }
    const mount = Object.keys(mounts).filter((p) => path.startsWith(p)).sort((a, b) => b.length - a.length)[0];
    let file = mount && normalize(join(mounts[mount], path.slice(mount.length)));
    if (file && existsSync(file) && statSync(file).isDirectory()) file = join(file, 'index.html');
    if (!file || !file.startsWith(normalize(mounts[mount])) || !existsSync(file)) {
      entry.status = 404;
      res.writeHead(404, { ...headers, 'content-type': 'text/plain' }).end(`not found: ${path}`);
      return;
    }
    const accepts = (req.headers['accept-encoding'] ?? '').split(',').map((e) => e.trim().split(';')[0]);
    const plain = !req.headers.range && !faults.drop && faults.corrupt === undefined && !faults.norange;
    const encoding = plain ? [['br', '.br'], ['gzip', '.gz']].find(([e, ext]) => accepts.includes(e) && existsSync(file + ext)) : undefined;
    const type = TYPES[extname(file)] ?? 'application/octet-stream';
    if (encoding) {
      file += encoding[1];
      headers['content-encoding'] = encoding[0];
      headers.vary = 'accept-encoding';
      entry.encoding = encoding[0];
    }
    const size = statSync(file).size;
    let start = 0;
    let end = size - 1;
    let status = 200;
    if (!faults.norange) headers['accept-ranges'] = 'bytes';
    const r = req.headers.range?.match(/^bytes=(\d+)-(\d*)$/);
    if (r && !faults.norange) {
      start = Number(r[1]);
      end = r[2] ? Math.min(Number(r[2]), size - 1) : size - 1;
      if (start >= size || start > end) {
        entry.status = 416;
        res.writeHead(416, { ...headers, 'content-range': `bytes */${size}` }).end();
        return;
      }
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${size}`;
    }
    entry.status = status;
    res.writeHead(status, { ...headers, 'content-type': type, 'content-length': end - start + 1 });
    if (req.method === 'HEAD') return res.end();
    const dropAt = faults.drop !== undefined && !dropped.has(url.pathname) ? faults.drop : Infinity;
    if (dropAt !== Infinity) dropped.add(url.pathname);
    const corruptAt = extname(file) === '.p2u' && faults.corrupt !== undefined ? faults.corrupt : -1;
    const rate = faults.rate ?? Infinity;
    const stream = createReadStream(file, { start, end, highWaterMark: 16384 });
    let sent = 0;
    const t0 = Date.now();
    stream.on('data', (buf) => {
      if (corruptAt >= start + sent && corruptAt < start + sent + buf.length) {
        buf = Buffer.from(buf);
        buf[corruptAt - start - sent] ^= 0x5a;
      }
      if (start + sent + buf.length > dropAt) {
        res.write(buf.subarray(0, Math.max(0, dropAt - start - sent)));
        stream.destroy();
        entry.dropped = true;
        setTimeout(() => res.socket?.destroy(), 20);
        return;
      }
      sent += buf.length;
      const ok = res.write(buf);
      const wait = rate === Infinity ? 0 : (sent / rate) * 1000 - (Date.now() - t0);
      if (wait > 0 || !ok) {
        stream.pause();
        const resume = () => setTimeout(() => stream.resume(), Math.max(0, wait));
        if (ok) resume();
        else res.once('drain', resume);
      }
    });
    stream.on('end', () => res.end());
    res.on('close', () => stream.destroy());
  });
  return new Promise((resolve) => {
    server.listen(port, '127.0.0.1', () => {
      const origin = `http://127.0.0.1:${server.address().port}`;
      resolve({
        origin,
        requests,
        server,
        close: () =>
          new Promise((r) => {
            server.closeAllConnections?.();
            server.close(() => r());
          }),
      });
    });
  });
}

// `node server.mjs PORT /prefix=DIR ...` serves until killed.
if (import.meta.url === `file://${process.argv[1]}`) {
  const [portArg, ...mountArgs] = process.argv.slice(2);
  const mounts = Object.fromEntries(mountArgs.map((a) => a.split('=')));
  const s = await startServer({ mounts, port: Number(portArg ?? 0) });
  console.log(`serving on ${s.origin}`);
}
