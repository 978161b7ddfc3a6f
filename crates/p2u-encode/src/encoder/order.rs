//! The order of the stream's chunks.
//!
//! Each tensor's chunks form a chain (stage 1 before stage 2 …); a chunk
//! has a cost (bytes) and a gain (estimated drop of the output distortion).
//! To make the distortion fall as fast as possible per byte received, the
//! chains are cut into blocks of non-increasing gain per byte (a chunk
//! worth more than its predecessor is merged with it, since it cannot come
//! first), and the blocks of all chains are sent best ratio first. This is
//! the optimal schedule for chains under "area under the distortion curve".

/// Cost and gain of one chunk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChunkValue {
    /// Bytes of the chunk in the stream.
    pub bytes: u64,
    /// Estimated distortion removed when it is applied.
    pub gain: f64,
}

struct Block {
    chain: usize,
    first: usize,
    end: usize,
    bytes: u64,
    gain: f64,
}

impl Block {
    fn ratio(&self) -> f64 {
        self.gain / self.bytes.max(1) as f64
    }
}

/// Stage-major order: every tensor's stage 1, then every tensor's stage 2, …
pub fn layer_order(chains: &[usize]) -> Vec<(usize, usize)> {
    let stages = chains.iter().copied().max().unwrap_or(0);
    (0..stages).flat_map(|s| chains.iter().enumerate().filter(move |(_, &n)| s < n).map(move |(t, _)| (t, s))).collect()
}

/// Gain-per-byte order: `chains[t][k]` is chunk `k` of tensor `t`; returns
/// `(t, k)` pairs, each chain's chunks in their own order. Ties go to the
/// earlier stage, then the lower tensor index, so chunks without a
/// measurable gain follow in stage-major order and equal inputs give the
/// same order.
pub fn rate_order(chains: &[Vec<ChunkValue>]) -> Vec<(usize, usize)> {
    let mut blocks: Vec<Block> = vec![];
    for (chain, items) in chains.iter().enumerate() {
        let start = blocks.len();
        for (k, v) in items.iter().enumerate() {
            let gain = if v.gain.is_finite() { v.gain } else { 0.0 };
            blocks.push(Block { chain, first: k, end: k + 1, bytes: v.bytes, gain });
            while blocks.len() - start >= 2 && blocks[blocks.len() - 1].ratio() > blocks[blocks.len() - 2].ratio() {
                let last = blocks.pop().expect("two blocks");
                let prev = blocks.last_mut().expect("two blocks");
                prev.end = last.end;
                prev.bytes += last.bytes;
                prev.gain += last.gain;
            }
        }
    }
    blocks.sort_by(|a, b| b.ratio().total_cmp(&a.ratio()).then(a.first.cmp(&b.first)).then(a.chain.cmp(&b.chain)));
    blocks.iter().flat_map(|b| (b.first..b.end).map(move |k| (b.chain, k))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(bytes: u64, gain: f64) -> ChunkValue {
        ChunkValue { bytes, gain }
    }

    #[test]
    fn best_ratio_first_and_chains_keep_their_order() {
        let chains = vec![vec![v(100, 1.0), v(100, 0.1)], vec![v(10, 5.0), v(1000, 0.0)], vec![v(50, 0.2), v(50, 9.0)]];
        let order = rate_order(&chains);
        assert_eq!(order, vec![(1, 0), (2, 0), (2, 1), (0, 0), (0, 1), (1, 1)]);
        for (t, chain) in chains.iter().enumerate() {
            let ks: Vec<usize> = order.iter().filter(|(c, _)| *c == t).map(|&(_, k)| k).collect();
            assert_eq!(ks, (0..chain.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn chunks_without_gain_follow_stage_by_stage() {
        let zero = vec![vec![v(10, 0.0), v(10, 0.0), v(50, 0.0)]; 2];
        assert_eq!(rate_order(&zero), layer_order(&[3, 3]));
    }

    #[test]
    fn layer_order_is_stage_major() {
        assert_eq!(layer_order(&[2, 3]), vec![(0, 0), (1, 0), (0, 1), (1, 1), (1, 2)]);
    }
}
