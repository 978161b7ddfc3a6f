//! Work spread over the machine's cores, with results that never depend on
//! the thread count (one thread where there is one core, and on wasm32 where
//! threads cannot be spawned).

use p2u::error::Result;

/// Worker threads to use: the available cores, at most 8; 1 on wasm32.
pub fn threads() -> usize {
    if cfg!(target_arch = "wasm32") {
        return 1;
    }
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8)
}

/// Runs `f(0..n)` spreading the indices over the available cores (one
/// thread where there is one core, or on wasm32) and hands each result to
/// `consume(i, r)` in index order, as soon as it and all earlier ones are
/// done (workers wait while their result is not yet taken, so at most the
/// out-of-order results are held). The first error stops it.
pub fn in_order<R: Send>(n: usize, f: impl Fn(usize) -> Result<R> + Sync, mut consume: impl FnMut(usize, R) -> Result<()>) -> Result<()> {
    let threads = threads().min(n);
    if threads <= 1 {
        // also the wasm32 case, where threads cannot be spawned
        return (0..n).try_for_each(|i| consume(i, f(i)?));
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(0);
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
        let mut pending = std::collections::BTreeMap::new();
        let mut want = 0;
        for (i, r) in rx {
            pending.insert(i, r?);
            while let Some(r) = pending.remove(&want) {
                consume(want, r)?;
                want += 1;
            }
        }
        Ok(())
    })
}

/// [`in_order`] collecting the results; `done(i, count)` is called as each
/// is collected. The results do not depend on the thread count.
pub fn map<R: Send>(n: usize, f: impl Fn(usize) -> Result<R> + Sync, done: &mut dyn FnMut(usize, usize)) -> Result<Vec<R>> {
    let mut out = Vec::with_capacity(n);
    in_order(n, f, |i, r| {
        out.push(r);
        done(i, i + 1);
        Ok(())
    })?;
    Ok(out)
}
