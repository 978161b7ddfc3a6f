//! # p2u-cli — the `p2u` command line
//!
//! The `p2u` binary (encode, inspect, export, verify, run) and, as this
//! library, what other command lines of the workspace share with it: the
//! encoder flags ([`flags::EncodeFlags`]) and how they become
//! [`EncodeOptions`](p2u_encode::EncodeOptions), and the output macros
//! ([`say!`], [`note!`]) that honour `--quiet`, and [`read_file`].

#![deny(missing_docs)]

pub mod flags;

/// `println!` for results on stdout that ends the process quietly (exit 0)
/// when stdout is closed (`p2u inspect DIR | head`) instead of panicking.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("p2u: error: writing to stdout: {e}");
            std::process::exit(1);
        }
    }};
}

/// `eprintln!` for notes and summaries on stderr, silent with `--quiet`.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        if !$crate::QUIET.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!($($arg)*);
        }
    }};
}

/// Set by `--quiet`.
pub static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Reads a whole file; the error names it.
pub fn read_file(path: &std::path::Path) -> p2u::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| p2u::Error::io(format!("reading {}", path.display()), e))
}

