//! Mixed precision: base bits per tensor under a byte budget.
//!
//! Each tensor offers a few candidate widths, each with its bytes and its
//! estimated distortion. The allocation keeps, per tensor, the lower convex
//! hull of (bytes, distortion) and greedily takes the upgrade that removes
//! the most distortion per extra byte while it still fits (the classic
//! Lagrangian bit allocation).

use crate::error::{Error, Result};

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
    fn dominated_non_convex_and_excluded_candidates_are_skipped() {
        let t = vec![c(10, 10.0), c(20, 9.9), c(30, 1.0), c(40, 2.0)];
        assert_eq!(hull(&t), vec![0, 2]);
        let t = vec![c(5, f64::INFINITY), c(10, 10.0), c(30, 1.0)];
        assert_eq!(hull(&t), vec![1, 2]);
        assert!(allocate(&[vec![c(5, f64::INFINITY)]], 100).is_err());
    }
}
