//! Quantization as both sides see it: a stage's codes ([`StageCodes`]),
//! the group layout ([`grid`]), the rule that applies codes to weights
//! ([`apply_codes`], the decoder's float operations, which the encoder
//! replays to know the client's weights bit for bit) and the exact stage
//! ([`exact`]). How codes are *chosen* lives in the encoder crate
//! (`p2u_encode::quant`).
//!
//! * Stage 0 (base): asymmetric codes `q ∈ [0, 2^b)` with a scale and zero
//!   point per group.
//! * Refinement stages: the residual `W − W_{k−1}` with a fresh per-group
//!   scale and the centred zero point `2^(b−1)`, plus escapes for residuals
//!   outside the code range ([`apply_escapes`]).
//! * Exact stage ([`exact`]): the remaining IEEE-754 difference, range-coded.

pub mod exact;
pub mod grid;
pub mod range_coder;

pub use exact::Precision;
pub use grid::{DequantizeLayout, Grid, Run};

use crate::kernels::{self, Scales};

/// Codes, scales and zero points of one stage of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct StageCodes {
    /// Code width in bits.
    pub bits: u8,
    /// One code per element (unpacked, each `< 2^bits`).
    pub codes: Vec<u8>,
    /// One scale per group.
    pub scales: Vec<f32>,
    /// One zero point per group.
    pub zeros: Vec<i32>,
    /// Elements whose residual fell outside the code range: `(index, d)`,
    /// applied after the codes as `w + f32(d) · s` (refinement stages only).
    pub escapes: Vec<(u32, i32)>,
}

impl StageCodes {
    /// The codes bit-packed LSB first.
    pub fn packed(&self) -> Vec<u8> {
        kernels::pack(&self.codes, self.bits)
    }
}

/// Applies `w += f32(q − z) · s` over a whole tensor: the decoder's rule,
/// also used by the encoder to know the client's weights bit for bit.
pub fn apply_codes(weights: &mut [f32], grid: &Grid, bits: u8, packed: &[u8], scales: &[f32], zeros: &[i32]) {
    apply_codes_with(kernels::Path::Simd, weights, grid, bits, packed, scales, zeros)
}

/// [`apply_codes`] with an explicit kernel choice (benchmarks).
pub fn apply_codes_with(path: kernels::Path, weights: &mut [f32], grid: &Grid, bits: u8, packed: &[u8], scales: &[f32], zeros: &[i32]) {
    for run in grid.runs() {
        let dst = &mut weights[run.start..run.start + run.len];
        let s = if run.per_element {
            Scales::PerElement { scales: &scales[run.group..run.group + run.len], zeros: &zeros[run.group..run.group + run.len] }
        } else {
            Scales::Uniform { scale: scales[run.group], zero: zeros[run.group] }
        };
        kernels::dequant_add_with(path, dst, packed, bits, run.start, s);
    }
}

/// Applies a refinement stage's escapes after its codes: `w += f32(d) · s`
/// with the scale of the element's group.
pub fn apply_escapes(weights: &mut [f32], grid: &Grid, escapes: &[(u32, i32)], scales: &[f32]) {
    for &(i, d) in escapes {
        let i = i as usize;
        weights[i] = kernels::scalar_step_by(weights[i], d, scales[grid.group_of(i)]);
    }
}

/// Error statistics of an approximation against the target. In a manifest
/// the floats are written to 4 significant digits: they describe, nothing
/// is computed from them, and their full digits would be most of a small
/// model's manifest bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ErrorStats {
    /// Root-mean-square error.
    #[serde(serialize_with = "four_digits")]
    pub rmse: f64,
    /// Largest absolute error.
    #[serde(serialize_with = "four_digits")]
    pub max_abs: f64,
    /// RMSE relative to the target's RMS (0 = exact).
    #[serde(serialize_with = "four_digits")]
    pub relative: f64,
    /// Elements whose f32 bits differ from the target.
    pub mismatched: u64,
}

/// `x` rounded to 4 significant digits.
fn four_digits<S: serde::Serializer>(x: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(format!("{x:.3e}").parse().unwrap_or(*x))
}

/// Compares `approx` with `target`.
pub fn error_stats(target: &[f32], approx: &[f32]) -> ErrorStats {
    let (mut se, mut ss, mut mx, mut mism) = (0f64, 0f64, 0f64, 0u64);
    for (&t, &a) in target.iter().zip(approx) {
        let d = (t as f64 - a as f64).abs();
        se += d * d;
        ss += (t as f64) * (t as f64);
        mx = mx.max(d);
        mism += (t.to_bits() != a.to_bits()) as u64;
    }
    let n = target.len().max(1) as f64;
    ErrorStats {
        rmse: (se / n).sqrt(),
        max_abs: mx,
        relative: if ss > 0.0 { (se / ss).sqrt() } else { (se > 0.0) as u8 as f64 },
        mismatched: mism,
    }
}
