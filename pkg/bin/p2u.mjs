#!/usr/bin/env node
// `npx p2u-onnx encode model.onnx -o public/model`: the p2u command line
// (the native CLI's code, compiled to WebAssembly for WASI) run by Node, so
// a web project needs no Rust toolchain. Same flags and output bytes as the
// native build; single-threaded, so slower on big models.

import { readFile } from 'node:fs/promises';
import v8 from 'node:v8';

// Node's WASI functions are V8 "fast API" calls from optimised code, and a
// GC they trigger inside such a call crashes the process (SIGSEGV, often
// as it exits): nodejs/node#46777 and #53087, open in Node 20 and 22. The
// encoder hit it in every run once its allocations changed. Without fast
// calls WASI is a plain call: 0 crashes in 10 encodes against 10 in 10.
v8.setFlagsFromString('--no-turbo-fast-api-calls');

// Node 20 flags WASI as experimental on every start; that is not news to users.
const emitWarning = process.emitWarning;
process.emitWarning = (warning, ...rest) => (/WASI/.test(String(warning)) ? undefined : emitWarning.call(process, warning, ...rest));
const { WASI } = await import('node:wasi');

const wasi = new WASI({
  version: 'preview1',
  args: ['p2u', ...process.argv.slice(2)],
  env: { ...process.env, P2U_WASI_CWD: process.cwd() },
  // the whole file system as it is; relative paths from the caller's directory
  preopens: { '/': '/' },
  returnOnExit: true,
});
const wasm = await WebAssembly.compile(await readFile(new URL('../cli/p2u-cli.wasm', import.meta.url)));
const instance = await WebAssembly.instantiate(wasm, wasi.getImportObject());
process.exitCode = wasi.start(instance);
