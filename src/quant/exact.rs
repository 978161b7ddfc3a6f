//! The exact stage: from the client's last approximation `W_K` to the
//! original f32 bits.
//!
//! Floats are mapped to integers in their total order ([`ordinal`], which
//! keeps `-0.0` and `+0.0` apart). Per group the encoder sends `e`, an f32
//! bound with `|W − W_K| ≤ e` for every member; the client can then compute
//! the window `[ord(W_K − e), ord(W_K + e)]` itself, and each weight costs
//! only `log2(window)` bits, range-coded. The window is computed with the same
//! f32 operations on both sides, and the encoder widens `e` until every
//! weight lies inside its window.

use super::Grid;
use crate::error::{Error, Result};
use crate::format::range_coder::{UniformDecoder, UniformEncoder};

/// Maps f32 bits to an integer that increases with the float's value
/// (`-0.0` just below `+0.0`; NaNs at the ends).
pub fn ordinal(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 { !b } else { b | 0x8000_0000 }
}

/// Inverse of [`ordinal`].
pub fn from_ordinal(o: u32) -> f32 {
    f32::from_bits(if o & 0x8000_0000 != 0 { o & 0x7FFF_FFFF } else { !o })
}

fn window(approx: f32, bound: f32) -> (u32, u32) {
    (ordinal(approx - bound), ordinal(approx + bound))
}

/// Encodes the exact stage; `target` must be finite (the encoder checks).
/// Returns the per-group bounds and the range-coded payload.
pub fn encode(target: &[f32], approx: &[f32], grid: &Grid) -> (Vec<f32>, Vec<u8>) {
    let mut bounds = vec![0f32; grid.groups()];
    for (i, g) in grid.element_groups() {
        bounds[g] = bounds[g].max((target[i] - approx[i]).abs());
    }
    loop {
        let mut widened = false;
        for (i, g) in grid.element_groups() {
            let (lo, hi) = window(approx[i], bounds[g]);
            let o = ordinal(target[i]);
            if o < lo || o > hi {
                bounds[g] = (bounds[g].next_up() * 1.0001).max(f32::MIN_POSITIVE);
                widened = true;
            }
        }
        if !widened {
            break;
        }
    }
    let mut rc = UniformEncoder::default();
    for (i, g) in grid.element_groups() {
        let (lo, hi) = window(approx[i], bounds[g]);
        rc.encode((ordinal(target[i]) - lo) as u64, (hi - lo) as u64 + 1);
    }
    (bounds, rc.finish())
}

/// Decodes the exact stage into `weights` (which hold `W_K` on entry).
/// On error `weights` may be partly written: callers decode into a copy.
pub fn decode(weights: &mut [f32], grid: &Grid, bounds: &[f32], payload: &[u8]) -> Result<()> {
    if bounds.iter().any(|b| !(b.is_finite() && *b >= 0.0)) {
        return Err(Error::Invalid("exact-stage bound is negative or not finite".into()));
    }
    let mut rc = UniformDecoder::new(payload)?;
    for (i, g) in grid.element_groups() {
        let (lo, hi) = window(weights[i], bounds[g]);
        let span = hi.checked_sub(lo).ok_or_else(|| Error::Invalid("exact-stage window is empty (corrupt data)".into()))?;
        weights[i] = from_ordinal(lo + rc.decode(span as u64 + 1)? as u32);
    }
    rc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinal_is_monotonic_and_invertible() {
        let xs = [f32::NEG_INFINITY, -1.0, -1e-40, -0.0, 0.0, 1e-40, 1.0, f32::INFINITY];
        for w in xs.windows(2) {
            assert!(ordinal(w[0]) < ordinal(w[1]), "{w:?}");
        }
        for x in xs {
            assert_eq!(from_ordinal(ordinal(x)).to_bits(), x.to_bits());
        }
    }

    #[test]
    fn exact_round_trip_including_signed_zero_and_subnormals() {
        let target: Vec<f32> = (0..1000)
            .map(|i| match i % 5 {
                0 => -0.0,
                1 => 1e-42 * i as f32,
                _ => ((i as f32) * 0.731).sin() * 0.1,
            })
            .collect();
        let approx: Vec<f32> = target.iter().map(|x| x + 1e-4 * (x * 977.0).cos()).collect();
        let grid = Grid::choose(&[10, 100], 0, 0);
        let (bounds, payload) = encode(&target, &approx, &grid);
        let mut w = approx.clone();
        decode(&mut w, &grid, &bounds, &payload).unwrap();
        for (a, b) in w.iter().zip(&target) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }
}
