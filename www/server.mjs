// The local HTTP server of the demo, the browser tests and the benchmark
// (127.0.0.1 only).
//
// Static mounts map URL prefixes to directories. A path may start with
// `/s/<faults>/`, a comma-separated list that shapes the response of the
// rest of the path:
//   rate=BYTES_PER_S   bandwidth limit (per response)
//   link=BYTES_PER_S   one link shared by every response with the same
//                      link rate, as a first visit's downloads share the
//                      user's connection (16 KiB pieces, first come first
//                      served)
//   drop=N             the first request for this file closes the connection
//                      once the response reaches file byte N
//   drops=K            … the first K requests do (with drop; default 1)
//   dropdelay=MS       how long after its last byte a drop closes (default 20)
//   stall=N            the first request stops sending after file byte N and
//                      keeps the connection open
//   fail=K             the first K requests for this file answer 503
//   failrange=K        the first K Range requests for this file answer 503
//   badrange           a Range answer starts up to 4 KiB before the asked
//                      byte (aligned, with the matching Content-Range)
//   swap=PATH          Range requests are answered from the file at PATH (a
//                      file changed on the server between request and resume;
//                      its own ETag, so If-Range sees the change)
//   corrupt=N          flips byte N of every .p2u response
//   corruptbase=N      flips byte N of every .onnx response
//   norange            ignores Range headers (always 200, whole file)
//   chunked            no Content-Length (chunked transfer encoding)
//   on=EXT             the faults above apply only to files ending in .EXT
// Range requests (`bytes=N-` / `bytes=N-M`) are honoured otherwise, with
// If-Range against the ETag (size and mtime) or Last-Modified. Like
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

/** Faults ending in `swap=PATH` (PATH URI-encoded, `%2F` for slashes). */
function parseSwap(spec) {
  const at = spec.indexOf('swap=');
  return { ...(at > 0 ? parseFaults(spec.slice(0, at - 1)) : {}), swap: decodeURIComponent(spec.slice(at + 5)) };
}

function parseFaults(spec) {
  const f = {};
  for (const part of spec.split(',')) {
    const [k, v] = part.split('=');
    f[k] = v === undefined ? true : k === 'on' ? v : Number(v);
  }
  return f;
}

/** Starts the server; resolves with `{ origin, requests, close }`. */
export function startServer({ mounts, port = 0, defaultFaults = {} }) {
  const requests = [];
  // per link rate: the time its last reserved byte leaves
  const links = new Map();
  /** Milliseconds to wait before sending `n` more bytes on link `rate`. */
  const reserve = (rate, n) => {
    const now = Date.now();
    const start = Math.max(now, links.get(rate) ?? 0);
    links.set(rate, start + (n / rate) * 1000);
    return start + (n / rate) * 1000 - now;
  };
  // per fault spec and path: how many requests were dropped, stalled, failed
  const seen = new Map();
  const count = (key) => {
    const n = seen.get(key) ?? 0;
    seen.set(key, n + 1);
    return n;
  };
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let path = decodeURIComponent(url.pathname);
    let faults = { ...defaultFaults };
    const m = url.pathname.match(/^\/s\/([^/]+)(\/.*)$/);
    if (m) {
      faults = { ...faults, ...(m[1].includes('swap=') ? parseSwap(m[1]) : parseFaults(m[1])) };
      path = decodeURIComponent(m[2]);
    }
    const entry = { method: req.method, path: url.pathname, range: req.headers.range ?? null, status: 0 };
    requests.push(entry);
    const headers = {
      'access-control-allow-origin': '*',
      'access-control-allow-headers': 'range, if-range',
      'access-control-expose-headers': 'content-length, content-range, accept-ranges, content-encoding, etag, last-modified',
      'cross-origin-resource-policy': 'cross-origin',
      'cache-control': 'no-store',
    };
    if (req.method === 'OPTIONS') {
      entry.status = 204;
      res.writeHead(204, headers).end();
      return;
    }
    const resolve = (p) => {
      const mount = Object.keys(mounts).filter((x) => p.startsWith(x)).sort((a, b) => b.length - a.length)[0];
      let f = mount && normalize(join(mounts[mount], p.slice(mount.length)));
      if (f && existsSync(f) && statSync(f).isDirectory()) f = join(f, 'index.html');
      return f && f.startsWith(normalize(mounts[mount])) && existsSync(f) ? f : null;
    };
    let file = resolve(path);
    if (file && faults.swap && req.headers.range) file = resolve(faults.swap);
    if (!file) {
      entry.status = 404;
      res.writeHead(404, { ...headers, 'content-type': 'text/plain' }).end(`not found: ${path}`);
      return;
    }
    if (faults.on !== undefined && !file.endsWith(`.${faults.on}`)) faults = { rate: faults.rate, link: faults.link };
    const key = `${m?.[1] ?? ''}|${url.pathname}`;
    if (faults.fail && count(`fail|${key}`) < faults.fail) {
      entry.status = 503;
      res.writeHead(503, { ...headers, 'content-type': 'text/plain', 'retry-after': '0' }).end('busy');
      return;
    }
    if (faults.failrange && req.headers.range && count(`failrange|${key}`) < faults.failrange) {
      entry.status = 503;
      res.writeHead(503, { ...headers, 'content-type': 'text/plain' }).end('busy');
      return;
    }
    const accepts = (req.headers['accept-encoding'] ?? '').split(',').map((e) => e.trim().split(';')[0]);
    const faulty = faults.drop !== undefined || faults.stall !== undefined || faults.corrupt !== undefined || faults.corruptbase !== undefined;
    const plain = !req.headers.range && !faulty && !faults.norange && !faults.swap;
    const encoding = plain ? [['br', '.br'], ['gzip', '.gz']].find(([e, ext]) => accepts.includes(e) && existsSync(file + ext)) : undefined;
    const type = TYPES[extname(file)] ?? 'application/octet-stream';
    if (encoding) {
      file += encoding[1];
      headers['content-encoding'] = encoding[0];
      headers.vary = 'accept-encoding';
      entry.encoding = encoding[0];
    }
    const stat = statSync(file);
    const size = stat.size;
    headers.etag = `"${size.toString(16)}-${Math.floor(stat.mtimeMs).toString(16)}"`;
    headers['last-modified'] = stat.mtime.toUTCString();
    let start = 0;
    let end = size - 1;
    let status = 200;
    if (!faults.norange) headers['accept-ranges'] = 'bytes';
    const ifRange = req.headers['if-range'];
    const unchanged = !ifRange || ifRange === headers.etag || ifRange === headers['last-modified'];
    const r = req.headers.range?.match(/^bytes=(\d+)-(\d*)$/);
    if (r && !faults.norange && unchanged) {
      start = Number(r[1]);
      end = r[2] ? Math.min(Number(r[2]), size - 1) : size - 1;
      if (start >= size || start > end) {
        entry.status = 416;
        res.writeHead(416, { ...headers, 'content-range': `bytes */${size}` }).end();
        return;
      }
      if (faults.badrange) start = Math.max(0, start - 1 - ((start - 1) % 4096));
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${size}`;
    }
    entry.status = status;
    res.writeHead(status, { ...headers, 'content-type': type, ...(faults.chunked ? {} : { 'content-length': end - start + 1 }) });
    if (req.method === 'HEAD') return res.end();
    const dropAt = faults.drop !== undefined && count(`drop|${key}`) < (faults.drops ?? 1) ? faults.drop : Infinity;
    const stallAt = faults.stall !== undefined && count(`stall|${key}`) < 1 ? faults.stall : Infinity;
    const corruptAt =
      extname(file) === '.p2u' && faults.corrupt !== undefined
        ? faults.corrupt
        : extname(file) === '.onnx' && faults.corruptbase !== undefined
          ? faults.corruptbase
          : -1;
    const rate = faults.rate ?? Infinity;
    const stream = createReadStream(file, { start, end, highWaterMark: 16384 });
    let sent = 0;
    let stalled = false;
    let ended = false;
    let linkWrites = 0; // pieces waiting for the shared link
    const t0 = Date.now();
    stream.on('data', (buf) => {
      if (corruptAt >= start + sent && corruptAt < start + sent + buf.length) {
        buf = Buffer.from(buf);
        buf[corruptAt - start - sent] ^= 0x5a;
      }
      if (start + sent + buf.length >= dropAt) {
        res.write(buf.subarray(0, Math.max(0, dropAt - start - sent)));
        stream.destroy();
        entry.dropped = true;
        setTimeout(() => res.socket?.destroy(), faults.dropdelay ?? 20);
        return;
      }
      if (start + sent + buf.length >= stallAt) {
        res.write(buf.subarray(0, Math.max(0, stallAt - start - sent)));
        stream.destroy();
        stalled = true;
        entry.stalled = true; // the connection stays open, silent, until the client gives up
        return;
      }
      sent += buf.length;
      if (faults.link) {
        // the piece leaves when the shared link has carried it
        stream.pause();
        linkWrites++;
        setTimeout(() => {
          linkWrites--;
          const ok = res.write(buf);
          if (ended && linkWrites === 0) res.end();
          else if (ok) stream.resume();
          else res.once('drain', () => stream.resume());
        }, reserve(faults.link, buf.length));
        return;
      }
      const ok = res.write(buf);
      const wait = rate === Infinity ? 0 : (sent / rate) * 1000 - (Date.now() - t0);
      if (wait > 0 || !ok) {
        stream.pause();
        const resume = () => setTimeout(() => stream.resume(), Math.max(0, wait));
        if (ok) resume();
        else res.once('drain', resume);
      }
    });
    stream.on('end', () => {
      ended = true;
      if (!stalled && linkWrites === 0) res.end();
    });
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
