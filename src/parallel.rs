//! Work spread over the machine's cores, with results that never depend on
//! the thread count (one thread where there is one core, and on wasm32 where
//! threads cannot be spawned).

use crate::error::Result;

/// Worker threads to use: the available cores, at most 8; 1 on wasm32.
pub fn threads() -> usize {
    if cfg!(target_arch = "wasm32") {
        return 1;
    }
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8)
}

/// Runs `f(0..n)` spreading the indices over the available cores (one
/// thread where there is one core, or on wasm32) and returns the results in
/// index order; `done(i, count)` is called as each finishes. The results do
/// not depend on the thread count.
pub fn map<R: Send>(n: usize, f: impl Fn(usize) -> Result<R> + Sync, done: &mut dyn FnMut(usize, usize)) -> Result<Vec<R>> {
    let threads = threads();
    if threads == 1 {
        // also the wasm32 case, where threads cannot be spawned
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            out.push(f(i)?);
            done(i, i + 1);
        }
        return Ok(out);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (tx, next, f) = (tx.clone(), &next, &f);
            s.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n || tx.send((i, f(i))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut results: Vec<Option<R>> = (0..n).map(|_| None).collect();
        for (count, (i, r)) in rx.iter().enumerate() {
            results[i] = Some(r?);
            done(i, count + 1);
        }
        Ok(results.into_iter().map(|r| r.expect("every index computed")).collect())
    })
}
