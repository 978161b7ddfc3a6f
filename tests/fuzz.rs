//! Mutation fuzzing on stable Rust: the stream parser, the runtime's
//! `push`/`step`, and the base loader, fed mutated copies of a real encode.
//!
//! Each case is classed as a typed error, ok (loaded or bit-exact), a panic
//! (any panic, also one tract raised and p2u caught: in wasm it would have
//! aborted), slow (ended, but after [`SLOW`]), a hang (over [`HANG`]), or
//! an over-allocation (peak heap over
//! twice the input plus the weights it declares plus [`OVERHEAD`]). The
//! suite runs a few seconds of it; for longer:
//!
//! ```text
//! P2U_FUZZ_SECONDS=1200 cargo test --release --test fuzz -- --ignored --nocapture
//! ```
//!
//! (`P2U_FUZZ_SEED` picks the seed; a failing case prints the
//! `P2U_FUZZ_REPLAY=TARGET:CASE_SEED` that replays it (test `replay`);
//! `P2U_FUZZ_TRACE=1` prints every case before it runs, to find one that
//! kills the process; `P2U_FUZZ_DUMP=FILE` writes a replayed base case's
//! bytes. `P2U_FUZZ_BASE=NAME.base.onnx` mutates the
//! structure of that real base instead of the fixture's.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use common::*;
use p2u::format::stream::{FrameReader, StreamHeader, CHUNK_PREFIX, HEADER_PREFIX};
use p2u_encode::onnx::{decode_model, int64_tensor};
use p2u::{ProgressiveModel, RuntimeOptions};
use p2u_encode::Encoded;
use prost::Message;
use tract_onnx::pb::ModelProto;

/// A case that ends slower than this is slow (counted, not a failure).
const SLOW: Duration = Duration::from_secs(5);
/// A case slower than this is a hang.
const HANG: Duration = Duration::from_secs(60);
/// Heap a load may use beyond its input and declared weights (tract's
/// model structures).
const OVERHEAD: usize = 64 << 20;

/// Counts live and peak heap bytes.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let live = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(live, Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            let live = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(live, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Relaxed);
            let live = LIVE.fetch_add(new, Relaxed) + new;
            PEAK.fetch_max(live, Relaxed);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Set by the panic hook: a panic happened, caught or not.
static PANICKED: AtomicBool = AtomicBool::new(false);
/// The last panic's message and location.
static PANIC_MESSAGE: Mutex<String> = Mutex::new(String::new());
/// One fuzz run at a time (the allocator counters are global).
static SERIAL: Mutex<()> = Mutex::new(());

fn quiet_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            PANICKED.store(true, Relaxed);
            if let Ok(mut m) = PANIC_MESSAGE.lock() {
                *m = info.to_string();
            }
        }))
    });
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Typed,
    Ok,
    Panic,
    Hang,
    OverAllocation,
    Slow,
}

#[derive(Default)]
struct Tally {
    counts: [usize; 6],
    failures: Vec<String>,
}

impl Tally {
    fn add(&mut self, target: &str, seed: u64, case: u64, o: Outcome, detail: &str) {
        self.counts[o as usize] += 1;
        if !matches!(o, Outcome::Typed | Outcome::Ok | Outcome::Slow) && self.failures.len() < 20 {
            self.failures.push(format!("{target} seed {seed} case {case}: {o:?} {detail}"));
        }
    }
    fn tried(&self) -> usize {
        self.counts.iter().sum()
    }
    fn row(&self, target: &str) -> String {
        let [t, o, p, h, a, s] = self.counts;
        format!("| {target} | {} | {t} | {o} | {s} | {p} | {h} | {a} |", self.tried())
    }
}

/// Runs one case, classing its outcome; `f` returns the heap bound and
/// whether it ended in a typed error.
fn case(f: impl FnOnce() -> (usize, bool)) -> (Outcome, String) {
    PANICKED.store(false, Relaxed);
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let t = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(f));
    let (elapsed, peak) = (t.elapsed(), PEAK.load(Relaxed).saturating_sub(before));
    match r {
        _ if PANICKED.load(Relaxed) => (Outcome::Panic, PANIC_MESSAGE.lock().map(|m| m.clone()).unwrap_or_default()),
        Err(_) => (Outcome::Panic, String::new()),
        Ok(_) if elapsed > HANG => (Outcome::Hang, format!("{elapsed:?}")),
        Ok((bound, _)) if peak > bound => (Outcome::OverAllocation, format!("peak {peak} > {bound}")),
        Ok(_) if elapsed > SLOW => (Outcome::Slow, format!("{elapsed:?}")),
        Ok((_, typed)) => (if typed { Outcome::Typed } else { Outcome::Ok }, String::new()),
    }
}

/// What the fuzzer mutates: a real encode of the fixture model.
struct Corpus {
    enc: Encoded,
    chunk_ends: Vec<usize>,
    /// The base whose structure is mutated: the fixture's, or
    /// `P2U_FUZZ_BASE` (a real base, loaded at its declared input shape).
    base_proto: ModelProto,
    base_options: RuntimeOptions,
}

fn corpus() -> Corpus {
    let enc = encode(&fixture_model(), "fixture", &fixture_uniform(3));
    let header_len = StreamHeader::total_len(enc.stream[..HEADER_PREFIX].try_into().unwrap()).unwrap();
    let mut chunk_ends = vec![];
    let mut pos = header_len;
    while pos < enc.stream.len() {
        pos += CHUNK_PREFIX + u32::from_le_bytes(enc.stream[pos + 12..pos + 16].try_into().unwrap()) as usize + 4;
        chunk_ends.push(pos);
    }
    let (base_proto, base_options) = match std::env::var("P2U_FUZZ_BASE") {
        Ok(path) => (decode_model(&std::fs::read(&path).expect("P2U_FUZZ_BASE")).unwrap(), RuntimeOptions::default()),
        Err(_) => (decode_model(&enc.base).unwrap(), load_options()),
    };
    Corpus { enc, chunk_ends, base_proto, base_options }
}

/// Byte-level mutations: flips, overwrites with interesting values,
/// truncation, duplication and removal of ranges.
fn mutate_bytes(r: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    for _ in 0..1 + r.below(4) {
        if d.is_empty() {
            break;
        }
        let at = r.below(d.len());
        match r.below(6) {
            0 => d[at] ^= 1 << r.below(8),
            1 => d[at] = [0, 0xff, 0x7f, 0x80, 1][r.below(5)],
            2 => {
                let v = [0u32, u32::MAX, 1 << 31, 0x7fff_ffff, 1 << 20][r.below(5)].to_le_bytes();
                let n = v.len().min(d.len() - at);
                d[at..at + n].copy_from_slice(&v[..n]);
            }
            3 => d.truncate(at),
            4 => {
                let end = (at + 1 + r.below(64)).min(d.len());
                let copy = d[at..end].to_vec();
                let to = r.below(d.len());
                d.splice(to..to, copy);
            }
            _ => {
                let end = (at + 1 + r.below(64)).min(d.len());
                d.drain(at..end);
            }
        }
    }
    d
}

/// Structure-aware mutations of a base: shapes, attributes, graph wiring
/// and inserted size-driven ops.
fn mutate_base(r: &mut Rng, proto: &ModelProto) -> Vec<u8> {
    let mut m = proto.clone();
    let g = m.graph.as_mut().unwrap();
    let big = [0i64, -1, 1 << 20, 1 << 31, 1 << 40, i64::MAX, i64::MIN, 3];
    for _ in 0..1 + r.below(3) {
        match r.below(8) {
            0 => {
                let i = r.below(g.initializer.len());
                let t = &mut g.initializer[i];
                if !t.dims.is_empty() {
                    let k = r.below(t.dims.len());
                    t.dims[k] = big[r.below(big.len())];
                } else {
                    t.dims.push(big[r.below(big.len())]);
                }
            }
            1 => {
                let i = r.below(g.node.len());
                let n = &mut g.node[i];
                if let Some(a) = n.attribute.iter_mut().find(|a| !a.ints.is_empty()) {
                    match r.below(3) {
                        0 => a.ints.clear(),
                        1 => a.ints.pop().map(drop).unwrap_or(()),
                        _ => {
                            let k = r.below(a.ints.len());
                            a.ints[k] = big[r.below(big.len())];
                        }
                    }
                } else if let Some(a) = n.attribute.first_mut() {
                    a.i = big[r.below(big.len())];
                }
            }
            2 => {
                let o = r.below(g.output.len());
                g.output[o].name = format!("missing{}", r.below(9));
            }
            3 => {
                let i = r.below(g.node.len());
                if !g.node[i].input.is_empty() {
                    let k = r.below(g.node[i].input.len());
                    let j = r.below(g.node.len());
                    g.node[i].input[k] = g.node[j].output.first().cloned().unwrap_or_default();
                }
            }
            4 => {
                let (i, j) = (r.below(g.node.len()), r.below(g.node.len()));
                g.node.swap(i, j);
            }
            5 => {
                let i = r.below(g.initializer.len());
                let t = &mut g.initializer[i];
                let keep = r.below(t.raw_data.len() + 1);
                t.raw_data.truncate(keep);
            }
            6 => {
                // a size-driven op on a constant shape, feeding the output
                let n = [1i64 << 10, 1 << 24, 1 << 30, 1 << 34][r.below(4)];
                let s = format!("fz_shape{}", r.below(1000));
                g.initializer.push(int64_tensor(&s, &[1], &[n]));
                let op = ["ConstantOfShape", "Expand", "Range"][r.below(3)];
                let ins: Vec<&str> = match op {
                    "Expand" => vec![g.initializer[0].name.as_str(), s.as_str()],
                    "Range" => vec![s.as_str(), s.as_str(), s.as_str()],
                    _ => vec![s.as_str()],
                };
                let out = format!("{s}_out");
                let nd = node(op, &ins, &out, vec![]);
                g.node.push(nd);
                g.output.push(p2u_encode::onnx::value_info(&out, tract_onnx::pb::tensor_proto::DataType::Float, &[]));
            }
            _ => {
                let i = r.below(g.initializer.len());
                if let Some(b) = g.initializer[i].raw_data.get_mut(0) {
                    *b ^= 0xff;
                }
            }
        }
    }
    m.encode_to_vec()
}

fn declared_bytes(base: &[u8]) -> usize {
    decode_model(base)
        .ok()
        .and_then(|m| m.graph)
        .map(|g| g.initializer.iter().map(|t| 4 * t.dims.iter().map(|&d| d.clamp(0, 1 << 31) as usize).product::<usize>()).sum())
        .unwrap_or(0)
}

fn load_options() -> RuntimeOptions {
    RuntimeOptions { input_shapes: vec![FIXTURE_INPUT.to_vec()], ..Default::default() }
}

/// What is fuzzed, in turn.
const TARGETS: [&str; 4] = ["stream parser", "runtime push/step", "base loader (bytes)", "base loader (structure)"];

/// One case of target `which` (see [`TARGETS`]) from its seed.
fn run_case(c: &Corpus, which: usize, case_seed: u64) -> (Outcome, String) {
    let mut cr = Rng(case_seed);
    match which {
        0 => {
            let data = mutate_bytes(&mut cr, &c.enc.stream);
            let bound = 2 * data.len() + OVERHEAD;
            case(|| {
                let mut reader = FrameReader::new();
                let mut typed = false;
                for piece in data.chunks(1 + cr.below(4096)) {
                    reader.push(piece);
                    loop {
                        match reader.next_frame() {
                            Ok(Some(_)) => continue,
                            Ok(None) => break,
                            Err(_) => {
                                typed = true;
                                break;
                            }
                        }
                    }
                    if typed {
                        break;
                    }
                }
                (bound, typed || reader.finish().is_err())
            })
        }
        1 => {
            // splices at chunk boundaries of a second, other encode too
            let mut data = mutate_bytes(&mut cr, &c.enc.stream);
            if cr.below(4) == 0 {
                let cut = c.chunk_ends[cr.below(c.chunk_ends.len())];
                data = c.enc.stream[..cut].to_vec();
                let from = c.chunk_ends[cr.below(c.chunk_ends.len())];
                data.extend_from_slice(&c.enc.stream[from.min(c.enc.stream.len())..]);
            }
            let bound = 2 * (data.len() + c.enc.base.len()) + declared_bytes(&c.enc.base) + OVERHEAD;
            let mut model = ProgressiveModel::from_base(&c.enc.base, load_options()).expect("clean base");
            case(|| {
                let mut typed = false;
                'outer: for piece in data.chunks(1 + cr.below(8192)) {
                    if model.push(piece).is_err() {
                        typed = true;
                        break;
                    }
                    loop {
                        match model.step(1 + cr.below(1 << 14)) {
                            Ok(true) => continue,
                            Ok(false) => break,
                            Err(_) => {
                                typed = true;
                                break 'outer;
                            }
                        }
                    }
                }
                let typed = typed || model.finish_stream().is_err();
                // whatever happened, the model still serves
                let ran = model.run(vec![input(&FIXTURE_INPUT, 1, -1.0, 1.0)]);
                assert!(ran.is_ok(), "the model stopped serving: {:?}", ran.err());
                if !typed {
                    assert!(model.status().exact, "stream accepted without an error but not exact");
                }
                (bound, typed)
            })
        }
        2 | 3 => {
            let (data, options) = match which {
                2 => (mutate_bytes(&mut cr, &c.enc.base), load_options()),
                _ => (mutate_base(&mut cr, &c.base_proto), c.base_options.clone()),
            };
            if let Some(path) = std::env::var_os("P2U_FUZZ_DUMP") {
                std::fs::write(path, &data).expect("P2U_FUZZ_DUMP");
            }
            let bound = 2 * data.len() + declared_bytes(&data) + OVERHEAD;
            let fixture = !options.input_shapes.is_empty();
            case(|| match ProgressiveModel::from_base(&data, options) {
                Ok(mut m) => {
                    if fixture {
                        let _ = m.run(vec![input(&FIXTURE_INPUT, 1, -1.0, 1.0)]);
                    }
                    (bound, false)
                }
                Err(_) => (bound, true),
            })
        }
        _ => unreachable!(),
    }
}

/// Fuzzes for `budget`, returning the table rows and every failure.
fn fuzz(budget: Duration, seed: u64) -> (Vec<String>, Vec<String>) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    quiet_panic_hook();
    let c = corpus();
    let targets = TARGETS;
    let mut tallies: Vec<Tally> = targets.iter().map(|_| Tally::default()).collect();
    let mut r = Rng(seed);
    let trace = std::env::var_os("P2U_FUZZ_TRACE").is_some();
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < budget {
        n += 1;
        let which = (n % 4) as usize;
        let case_seed = r.next_u64();
        if trace {
            eprintln!("case {which}:{case_seed}");
        }
        let (outcome, detail) = run_case(&c, which, case_seed);
        let detail = format!("(replay: P2U_FUZZ_REPLAY={which}:{case_seed}) {detail}");
        tallies[which].add(targets[which], seed, n, outcome, &detail);
    }
    let rows = targets.iter().zip(&tallies).map(|(t, tally)| tally.row(t)).collect();
    let failures = tallies.into_iter().flat_map(|t| t.failures).collect();
    (rows, failures)
}

fn report(budget: Duration, seed: u64) {
    let (rows, failures) = fuzz(budget, seed);
    println!("fuzz: seed {seed}, {budget:?}");
    println!(
        "| target | tried | typed error | ok | slow (> {SLOW:?}, ended) | panic | hang (> {HANG:?}) | over-allocation |\n|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        println!("{r}");
    }
    for f in &failures {
        println!("{f}");
    }
    assert!(failures.is_empty(), "{} fuzz failures (listed above)", failures.len());
}

fn seed() -> u64 {
    std::env::var("P2U_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed)
}

#[test]
fn fuzz_for_a_few_seconds() {
    report(Duration::from_secs(8), seed());
}

#[test]
#[ignore = "long run: P2U_FUZZ_SECONDS=1200 cargo test --release --test fuzz -- --ignored --nocapture"]
fn fuzz_for_long() {
    let secs = std::env::var("P2U_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1200);
    report(Duration::from_secs(secs), seed());
}

#[test]
#[ignore = "replays one case: P2U_FUZZ_REPLAY=TARGET:CASE_SEED cargo test --release --test fuzz replay -- --ignored --nocapture"]
fn replay() {
    let spec = std::env::var("P2U_FUZZ_REPLAY").expect("P2U_FUZZ_REPLAY=TARGET:CASE_SEED");
    let (which, seed) = spec.split_once(':').expect("TARGET:CASE_SEED");
    let (which, seed) = (which.parse().expect("target"), seed.parse().expect("case seed"));
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    quiet_panic_hook();
    let (outcome, detail) = run_case(&corpus(), which, seed);
    println!("{}: {outcome:?} {detail}", TARGETS[which]);
}
