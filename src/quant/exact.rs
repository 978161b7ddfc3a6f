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
use crate::format::range_coder::{DecoderState, UniformDecoder, UniformEncoder};

/// Maps f32 bits to an integer that increases with the float's value
/// (`-0.0` just below `+0.0`; NaNs at the ends).
pub fn ordinal(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
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
    let mut d = Decoding::new(payload, bounds)?;
    d.decode_some(weights, grid, bounds, payload, usize::MAX)?;
    Ok(())
}

/// An exact-stage decode that can pause after any number of weights and
/// resume later (so a large tensor is decoded in short tasks). The caller
/// keeps `weights`, `bounds` and `payload` unchanged between calls.
#[derive(Clone, Debug)]
pub struct Decoding {
    next: usize,
    state: DecoderState,
}

impl Decoding {
    /// Checks the bounds and the payload's framing; decodes nothing yet.
    pub fn new(payload: &[u8], bounds: &[f32]) -> Result<Self> {
        if bounds.iter().any(|b| !(b.is_finite() && *b >= 0.0)) {
            return Err(Error::Corrupt("exact-stage bound is negative or not finite".into()));
        }
        Ok(Decoding { next: 0, state: UniformDecoder::new(payload)?.state() })
    }

    /// Weights decoded so far.
    pub fn done(&self) -> usize {
        self.next
    }

    /// Decodes up to `max` more weights; returns true once every weight is
    /// decoded and the payload was consumed exactly.
    pub fn decode_some(&mut self, weights: &mut [f32], grid: &Grid, bounds: &[f32], payload: &[u8], max: usize) -> Result<bool> {
        let mut rc = UniformDecoder::resume(payload, self.state)?;
        let end = self.next.saturating_add(max).min(grid.len());
        for (i, g) in grid.element_groups_from(self.next).take(end - self.next) {
            let (lo, hi) = window(weights[i], bounds[g]);
            let span = hi.checked_sub(lo).ok_or_else(|| Error::Corrupt("exact-stage window is empty (corrupt data)".into()))?;
            weights[i] = from_ordinal(lo + rc.decode(span as u64 + 1)? as u32);
        }
        self.next = end;
        self.state = rc.state();
        if end < grid.len() {
            return Ok(false);
        }
        rc.finish()?;
        Ok(true)
    }
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

    #[test]
    fn decoding_in_short_steps_gives_the_same_bits() {
        let target: Vec<f32> = (0..3000).map(|i| ((i as f32) * 0.377).cos() * 0.05).collect();
        let approx: Vec<f32> = target.iter().map(|x| x + 3e-4 * (x * 613.0).sin()).collect();
        for grid in [Grid::choose(&[30, 100], 0, 0), Grid::choose(&[30, 100], 0, 16), Grid::choose(&[3000], 0, 64)] {
            let (bounds, payload) = encode(&target, &approx, &grid);
            let mut w = approx.clone();
            let mut d = Decoding::new(&payload, &bounds).unwrap();
            let mut steps = 0;
            for step in [1usize, 7, 64, 1000].iter().cycle() {
                steps += 1;
                if d.decode_some(&mut w, &grid, &bounds, &payload, *step).unwrap() {
                    break;
                }
            }
            assert!(steps > 4);
            assert_eq!(d.done(), target.len());
            assert!(w.iter().zip(&target).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
