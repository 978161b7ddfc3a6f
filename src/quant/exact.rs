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
//!
//! A tensor whose values all are exact float16 or bfloat16 numbers (an fp16
//! model's weights, served as their f32 upcasts) is coded among that
//! format's values only ([`Precision`]): the same window holds 2¹³ (f16) or
//! 2¹⁶ (bf16) times fewer candidates, so the exact stage of an fp16 weight
//! costs what restoring fp16 bits costs, not f32 bits.

use super::Grid;
use crate::error::{Error, Result};
use super::range_coder::{DecoderState, UniformDecoder, UniformEncoder};

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

/// The number format a tensor's original values are exact in: the exact
/// stage codes each weight's position among this format's values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Any f32.
    #[default]
    F32,
    /// Values of IEEE float16 (a float16 model's weights).
    F16,
    /// Values of bfloat16 (the upper half of an f32).
    Bf16,
}

impl Precision {
    /// The narrowest format that holds every value of `values` exactly
    /// (bfloat16, then float16, else f32).
    pub fn of(values: &[f32]) -> Precision {
        let exact_in = |p: Precision| values.iter().all(|&v| p.value(p.nearest(v)).to_bits() == v.to_bits());
        [Precision::Bf16, Precision::F16].into_iter().find(|&p| exact_in(p)).unwrap_or(Precision::F32)
    }

    /// Code in the stream header.
    pub fn code(self) -> u8 {
        match self {
            Precision::F32 => 0,
            Precision::F16 => 1,
            Precision::Bf16 => 2,
        }
    }

    /// From its code in the stream header.
    pub fn from_code(code: u8) -> Option<Precision> {
        [Precision::F32, Precision::F16, Precision::Bf16].into_iter().find(|p| p.code() == code)
    }

    /// Name, as ONNX element types are spelled in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "float32",
            Precision::F16 => "float16",
            Precision::Bf16 => "bfloat16",
        }
    }

    /// Ordinal (in this format's value order, as [`ordinal`] for f32) of the
    /// value nearest to `x`.
    fn nearest(self, x: f32) -> u32 {
        let half = |b: u16| u32::from(if b & 0x8000 != 0 { !b } else { b | 0x8000 });
        match self {
            Precision::F32 => ordinal(x),
            Precision::F16 => half(half::f16::from_f32(x).to_bits()),
            Precision::Bf16 => half(half::bf16::from_f32(x).to_bits()),
        }
    }

    /// The value of ordinal `o` of this format, as an f32 (exact).
    fn value(self, o: u32) -> f32 {
        let half = |o: u32| {
            let o = o as u16;
            if o & 0x8000 != 0 {
                o & 0x7FFF
            } else {
                !o
            }
        };
        match self {
            Precision::F32 => from_ordinal(o),
            Precision::F16 => half::f16::from_bits(half(o)).to_f32(),
            Precision::Bf16 => half::bf16::from_bits(half(o)).to_f32(),
        }
    }

    /// Largest ordinal of this format.
    fn last(self) -> u32 {
        match self {
            Precision::F32 => u32::MAX,
            Precision::F16 | Precision::Bf16 => u32::from(u16::MAX),
        }
    }

    /// The ordinals (in this format) of the values whose f32 ordinals lie
    /// in `[lo, hi]`; empty (`lo > hi`) if there are none.
    fn window(self, lo: u32, hi: u32) -> (u32, u32) {
        if self == Precision::F32 {
            return (lo, hi);
        }
        // nearest rounding is off by at most one value of the format
        let mut first = self.nearest(from_ordinal(lo));
        if ordinal(self.value(first)) < lo {
            first = (first + 1).min(self.last());
        }
        let mut last = self.nearest(from_ordinal(hi));
        if ordinal(self.value(last)) > hi {
            last = last.saturating_sub(1);
        }
        (first, last)
    }
}

/// The f32-ordinal window `[ord(W_K − e), ord(W_K + e)]`.
fn window(approx: f32, bound: f32) -> (u32, u32) {
    (ordinal(approx - bound), ordinal(approx + bound))
}

/// Encodes the exact stage; `target` must be finite (the encoder checks)
/// and exact in `precision`. Returns the per-group bounds and the
/// range-coded payload.
pub fn encode(target: &[f32], approx: &[f32], grid: &Grid, precision: Precision) -> (Vec<f32>, Vec<u8>) {
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
        let (lo32, hi32) = window(approx[i], bounds[g]);
        let (lo, hi) = precision.window(lo32, hi32);
        rc.encode((precision.nearest(target[i]) - lo) as u64, (hi - lo) as u64 + 1);
    }
    (bounds, rc.finish())
}

/// Decodes the exact stage into `weights` (which hold `W_K` on entry).
/// On error `weights` may be partly written: callers decode into a copy.
pub fn decode(weights: &mut [f32], grid: &Grid, precision: Precision, bounds: &[f32], payload: &[u8]) -> Result<()> {
    let mut d = Decoding::new(payload, bounds, precision)?;
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
    precision: Precision,
}

impl Decoding {
    /// Checks the bounds and the payload's framing; decodes nothing yet.
    pub fn new(payload: &[u8], bounds: &[f32], precision: Precision) -> Result<Self> {
        if bounds.iter().any(|b| !(b.is_finite() && *b >= 0.0)) {
            return Err(Error::Corrupt("exact-stage bound is negative or not finite".into()));
        }
        Ok(Decoding { next: 0, state: UniformDecoder::new(payload)?.state(), precision })
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
            let (lo32, hi32) = window(weights[i], bounds[g]);
            let (lo, hi) = self.precision.window(lo32, hi32);
            let span = hi.checked_sub(lo).ok_or_else(|| Error::Corrupt("exact-stage window is empty (corrupt data)".into()))?;
            weights[i] = self.precision.value(lo + rc.decode(span as u64 + 1)? as u32);
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
        let (bounds, payload) = encode(&target, &approx, &grid, Precision::F32);
        let mut w = approx.clone();
        decode(&mut w, &grid, Precision::F32, &bounds, &payload).unwrap();
        for (a, b) in w.iter().zip(&target) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn decoding_in_short_steps_gives_the_same_bits() {
        let target: Vec<f32> = (0..3000).map(|i| ((i as f32) * 0.377).cos() * 0.05).collect();
        let approx: Vec<f32> = target.iter().map(|x| x + 3e-4 * (x * 613.0).sin()).collect();
        for grid in [Grid::choose(&[30, 100], 0, 0), Grid::choose(&[30, 100], 0, 16), Grid::choose(&[3000], 0, 64)] {
            let (bounds, payload) = encode(&target, &approx, &grid, Precision::F32);
            let mut w = approx.clone();
            let mut d = Decoding::new(&payload, &bounds, Precision::F32).unwrap();
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

    #[test]
    fn half_precision_values_are_coded_among_their_format_only() {
        let mut seed = 11u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        };
        let raw: Vec<f32> = (0..4000).map(|_| next()).collect();
        let grid = Grid::choose(&[40, 100], 0, 0);
        let mut sizes = vec![];
        for (p, round) in [
            (Precision::F32, (|x| x) as fn(f32) -> f32),
            (Precision::F16, |x| half::f16::from_f32(x).to_f32()),
            (Precision::Bf16, |x| half::bf16::from_f32(x).to_f32()),
        ] {
            // signed zeros, subnormals and the ends of the format's range too
            let mut target: Vec<f32> = raw.iter().map(|&x| round(x)).collect();
            target[..6].copy_from_slice(&[-0.0, 0.0, round(1e-7), round(-6e-8), round(60000.0), round(-65504.0)]);
            assert_eq!(Precision::of(&target), p);
            let approx: Vec<f32> = target.iter().map(|x| x + 2e-3 * (x * 911.0).sin()).collect();
            let (bounds, payload) = encode(&target, &approx, &grid, p);
            let mut w = approx.clone();
            decode(&mut w, &grid, p, &bounds, &payload).unwrap();
            assert!(w.iter().zip(&target).all(|(a, b)| a.to_bits() == b.to_bits()), "{p:?}");
            sizes.push(payload.len());
        }
        // f16 saves 13 bits a weight over f32, bf16 16
        assert!(sizes[1] * 8 < (sizes[0] * 8).saturating_sub(12 * 4000), "{sizes:?}");
        assert!(sizes[2] < sizes[1], "{sizes:?}");
    }
}
