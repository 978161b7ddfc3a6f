// Shared set-up for the browser tests: the test server with the package,
// the fixtures and a blank page mounted, and a headless Debian Chromium
// driven by playwright-core.

import { chromium } from 'playwright-core';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
