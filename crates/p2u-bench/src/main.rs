//! `p2u-bench` — the native benchmark (`cargo run --release -p p2u-bench --
//! --help`); its output is quoted in docs/BENCHMARKS.md.

mod bench;
mod curve;
mod heap;

#[global_allocator]
static HEAP: heap::Counting = heap::Counting;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match bench::run(bench::BenchCmd::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p2u-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
