// Shared set-up for the browser tests: the test server with the package,
// the fixtures and a blank page mounted, and a headless Debian Chromium
// driven by playwright-core.

import { chromium } from 'playwright-core';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import { tmpdir, homedir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../www/server.mjs';

export const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const fixtures = process.env.P2U_WEB_FIXTURES ?? join(homedir(), '.cache', 'p2u', 'web-fixtures');

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** Raw little-endian f32 file → array of bit patterns (for exact comparisons). */
export function f32Bits(path) {
  const b = readFileSync(path);
  return Array.from(new Uint32Array(b.buffer, b.byteOffset, b.length / 4));
}

/** Starts server + browser; returns `{ server, browser, page, origin,
 * offsite (requests that left the server), close }`. */
export async function open(extraMounts = {}, { viewport } = {}) {
  const server = await startServer({
    mounts: { '/pkg/': join(repo, 'pkg'), '/fx/': fixtures, '/blank/': join(repo, 'tests', 'browser', 'blank'), ...extraMounts },
  });
  const profile = mkdtempSync(join(tmpdir(), 'p2u-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
    headless: true,
    ...(viewport ? { viewport } : {}),
  });
  const page = browser.pages()[0] ?? (await browser.newPage());
  const offsite = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(server.origin) && !r.url().startsWith('data:') && !r.url().startsWith('blob:')) offsite.push(r.url());
  });
  page.on('console', (m) => process.env.P2U_TEST_VERBOSE && console.log('page:', m.text()));
  page.on('pageerror', (e) => console.log('page error:', e.message));
  await page.goto(`${server.origin}/blank/`);
  return {
    server,
    browser,
    page,
    origin: server.origin,
    offsite,
    async close() {
      await browser.close();
      await server.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** `inPage(fn, arg)` runs `fn(p2u, { f32, bits, arg })` in `h`'s page with
 * the package imported (`f32(url)` fetches a raw f32 file, `bits(a)` gives
 * a Float32Array's bit patterns for exact comparisons). */
export function pageRunner(h) {
  return (fn, arg) =>
    h.page.evaluate(
      async ([src, arg]) => {
        const p2u = await import('/pkg/p2u.js');
        const f32 = async (url) => new Float32Array(await (await fetch(url)).arrayBuffer());
        const bits = (a) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
        const fn = new Function(`return (${src})`)();
        return fn(p2u, { f32, bits, arg });
      },
      [fn.toString(), arg],
    );
}

/** `npm pack`s pkg/ into `dir` (a scratch app) and returns the tarball's file name. */
export function packPackage(dir) {
  execFileSync('npm', ['pack', join(repo, 'pkg'), '--pack-destination', dir], { stdio: 'pipe' });
  return readdirSync(dir).find((f) => f.endsWith('.tgz'));
}

/** Starts `vite ARGS` (the app's own node_modules/vite) in `app` on a free
 * port of 127.0.0.1, adds the process to `children` (to kill after the
 * tests), and resolves with the URL it prints. */
export function startVite(app, args, children) {
  const child = spawn(process.execPath, [join(app, 'node_modules', 'vite', 'bin', 'vite.js'), ...args, '--port', '0', '--host', '127.0.0.1'], {
    cwd: app,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  children.push(child);
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`vite ${args.join(' ')} printed no URL:\n${out}`)), 60000);
    const scan = (d) => {
      out += d;
      const m = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout.on('data', scan);
    child.stderr.on('data', scan);
    child.on('exit', (code) => reject(new Error(`vite ${args.join(' ')} exited with ${code}:\n${out}`)));
  });
}
