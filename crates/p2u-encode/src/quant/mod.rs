//! How each stage's codes and scales are chosen (the decoder's side, the
//! rule that applies them, is [`p2u::quant`]).
//!
//! * Stage 0 (base): asymmetric codes `q ∈ [0, 2^b)` with a scale and zero
//!   point per group, the clipping ratio searched per group to minimise the
//!   error of the *decoded* weights; with calibration data the codes are
//!   chosen by GPTQ ([`gptq`]) instead of round-to-nearest.
//! * Refinement stages: the residual `W − W_{k−1}` with a fresh per-group
//!   scale and the centred zero point `2^(b−1)`; no clipping, so the error
//!   bound shrinks by about `2^b` each stage.

pub mod gptq;

pub use gptq::InputStats;
/// The rules both sides share (codes, groups, the exact stage), re-exported
/// so encoder code reads one module.
pub use p2u::quant::*;

use p2u::kernels;

fn round_code(x: f32, zero: i32, levels: i32) -> u8 {
    ((x.round() as i32).saturating_add(zero)).clamp(0, levels - 1) as u8
}

/// Scale and zero point covering `[lo, hi]` with `levels` codes.
fn affine_params(lo: f32, hi: f32, levels: i32) -> (f32, i32) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let mut s = (hi - lo) / (levels - 1) as f32;
    if !(s.is_finite() && s > 0.0) {
        s = 1.0;
    }
    let z = ((-lo / s).round() as i32).clamp(0, levels - 1);
    (s, z)
}

/// Clipping ratios in the base quantizer's search grid: `1 − 0.7·k/40`.
const CLIP_RATIOS: usize = 40;
/// The search first tries every `CLIP_STRIDE`-th ratio, then the ratios
/// around the best of those (the error is close to unimodal in the ratio;
/// 16 evaluations instead of 40).
const CLIP_STRIDE: usize = 4;

/// How a base candidate's codes are chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BaseCode {
    /// `bits`-bit codes covering the group's (clipped) range: the narrowest
    /// file (UINT2/UINT4/UINT8 by width).
    Clipped(u8),
    /// A uniform step of this many times the group's RMS, nothing clipped,
    /// codes stored as UINT8: entropy-constrained scalar quantization, the
    /// better trade when the base is sent entropy-coded (brotli/gzip):
    /// on VGG16's block4 weights it halves the squared error of clipped
    /// codes at the same entropy (3.0 bits: 1.2e-6 vs 2.6e-6).
    Step(f32),
}

impl BaseCode {
    /// Code width of the container (what `DequantizeLinear` stores).
    pub fn bits(self) -> u8 {
        match self {
            BaseCode::Clipped(b) => b,
            BaseCode::Step(_) => 8,
        }
    }
}

/// Quantizes the base stage. With `clip_norm = Some(p)` it searches, per
/// group, a clipping ratio in `(0.3, 1]` for the scale that minimises
/// `Σ |error|^p` of the decoded weights (p = 2: mean squared error; a larger
/// p clips outliers less); `None` is plain min/max round-to-nearest.
pub fn quantize_base(weights: &[f32], grid: &Grid, bits: u8, clip_norm: Option<u8>) -> StageCodes {
    let (scales, zeros) = base_params(weights, grid, bits, clip_norm, None);
    round_to_nearest(weights, grid, bits, scales, zeros)
}

/// Quantizes the base stage with [`BaseCode::Step`]`(k)`: per group a step
/// of `k` × the group's RMS (wider where 256 codes around the zero point
/// 128 would not cover the group's range), round to nearest.
pub fn quantize_base_step(weights: &[f32], grid: &Grid, k: f32) -> StageCodes {
    let (scales, zeros) = step_params(weights, grid, k);
    round_to_nearest(weights, grid, 8, scales, zeros)
}

fn round_to_nearest(weights: &[f32], grid: &Grid, bits: u8, scales: Vec<f32>, zeros: Vec<i32>) -> StageCodes {
    let levels = 1i32 << bits;
    let mut codes = vec![0u8; weights.len()];
    for (i, g) in grid.element_groups() {
        codes[i] = round_code(weights[i] / scales[g], zeros[g], levels);
    }
    StageCodes { bits, codes, scales, zeros, escapes: vec![] }
}

/// Scales and zero points of [`BaseCode::Step`]`(k)`.
fn step_params(weights: &[f32], grid: &Grid, k: f32) -> (Vec<f32>, Vec<i32>) {
    let mut scales = vec![0.0; grid.groups()];
    let mut zeros = vec![0; grid.groups()];
    for g in 0..grid.groups() {
        let (mut lo, mut hi, mut ss, mut n) = (0f32, 0f32, 0f64, 0usize);
        for i in grid.members(g) {
            let w = weights[i];
            (lo, hi) = (lo.min(w), hi.max(w));
            ss += w as f64 * w as f64;
            n += 1;
        }
        let rms = (ss / n.max(1) as f64).sqrt() as f32;
        // one zero point for every group, so that all groups' codes share one
        // distribution (what an entropy coder sees); the step widens where
        // [-128, 127] steps would not cover the group
        let mut s = (k * rms).max(-lo / 128.0).max(hi / 127.0);
        if !(s.is_finite() && s > 0.0) {
            s = 1.0;
        }
        scales[g] = s;
        zeros[g] = 128;
    }
    (scales, zeros)
}

/// The base stage rounded with calibration data ([`gptq`]): the scales are
/// chosen as for `code` (for clipped codes, by a clipping search that
/// weighs each element's error by how strongly its input fires, `H_ii`),
/// then the codes row by row with GPTQ's error feedback. Rows whose Gram
/// matrix cannot be factored round to nearest. `factors` are
/// [`gptq::factors`] of `stats` (computed once per tensor, shared by every
/// candidate).
pub fn quantize_base_calibrated(
    weights: &[f32],
    grid: &Grid,
    code: BaseCode,
    clip_norm: Option<u8>,
    stats: &InputStats,
    factors: &[Option<gptq::Factor>],
) -> StageCodes {
    let (scales, zeros) = match code {
        BaseCode::Clipped(bits) => {
            let mut importance = vec![0f32; weights.len()];
            for o in 0..stats.outputs {
                let h = stats.gram_of(o);
                for i in 0..stats.inputs {
                    importance[stats.index(o, i)] = h[i * stats.inputs + i] as f32;
                }
            }
            base_params(weights, grid, bits, clip_norm, Some(&importance))
        }
        BaseCode::Step(k) => step_params(weights, grid, k),
    };
    let bits = code.bits();
    let levels = 1i32 << bits;
    let mut codes = vec![0u8; weights.len()];
    let per_gram = stats.outputs / stats.grams.len();
    let mut row = vec![0f32; stats.inputs];
    for o in 0..stats.outputs {
        for (i, r) in row.iter_mut().enumerate() {
            *r = weights[stats.index(o, i)];
        }
        let mut round = |i: usize, w: f32| {
            let j = stats.index(o, i);
            let g = grid.group_of(j);
            let q = round_code(w / scales[g], zeros[g], levels);
            codes[j] = q;
            kernels::scalar_step(0.0, q, zeros[g], scales[g])
        };
        match &factors[o / per_gram] {
            Some(f) => gptq::round_row(f, &row, round),
            None => row.iter().enumerate().for_each(|(i, &w)| {
                round(i, w);
            }),
        }
    }
    StageCodes { bits, codes, scales, zeros, escapes: vec![] }
}

/// Per-group scale and zero point of the base: min/max, or the clipping
/// ratio minimising `Σ importance_i · |error_i|^p`.
fn base_params(weights: &[f32], grid: &Grid, bits: u8, clip_norm: Option<u8>, importance: Option<&[f32]>) -> (Vec<f32>, Vec<i32>) {
    let levels = 1i32 << bits;
    let mut scales = vec![0.0; grid.groups()];
    let mut zeros = vec![0; grid.groups()];
    let (mut vals, mut imp) = (vec![], vec![]);
    for g in 0..grid.groups() {
        vals.clear();
        imp.clear();
        for i in grid.members(g) {
            vals.push(weights[i]);
            if let Some(importance) = importance {
                imp.push(importance[i]);
            }
        }
        let (lo, hi) = vals.iter().fold((0f32, 0f32), |(a, b), &w| (a.min(w), b.max(w)));
        let params = |k: usize| {
            let ratio = 1.0 - 0.7 * k as f32 / CLIP_RATIOS as f32;
            affine_params(lo * ratio, hi * ratio, levels)
        };
        let (s, z) = match clip_norm {
            None => params(0),
            Some(p) => {
                let cost = |k: usize| {
                    let (s, z) = params(k);
                    (clip_error(&vals, &imp, s, z, levels, p), s, z)
                };
                let mut best = (f64::INFINITY, 1.0f32, 0i32, 0usize);
                for k in (0..CLIP_RATIOS).step_by(CLIP_STRIDE) {
                    let (e, s, z) = cost(k);
                    if e < best.0 {
                        best = (e, s, z, k);
                    }
                }
                let around = best.3;
                for k in around.saturating_sub(CLIP_STRIDE - 1)..(around + CLIP_STRIDE).min(CLIP_RATIOS) {
                    if k % CLIP_STRIDE != 0 {
                        let (e, s, z) = cost(k);
                        if e < best.0 || (e == best.0 && k < best.3) {
                            best = (e, s, z, k);
                        }
                    }
                }
                (best.1, best.2)
            }
        };
        scales[g] = s;
        zeros[g] = z;
    }
    (scales, zeros)
}

/// `Σ imp_i · |decode(round(v_i)) − v_i|^p` for one group (`imp` empty: weights of 1).
fn clip_error(vals: &[f32], imp: &[f32], s: f32, z: i32, levels: i32, p: u8) -> f64 {
    let err = |w: f32| {
        let q = round_code(w / s, z, levels);
        let d = ((kernels::scalar_step(0.0, q, z, s) - w) as f64).abs();
        match p {
            2 => d * d,
            3 => d * d * d,
            4 => (d * d) * (d * d),
            _ => d.powi(p as i32),
        }
    };
    if imp.is_empty() {
        vals.iter().map(|&w| err(w)).sum()
    } else {
        vals.iter().zip(imp).map(|(&w, &m)| err(w) * m as f64).sum()
    }
}

/// Bits an escape costs in the stream (index + integer step count).
const ESCAPE_BITS: i64 = 64;
/// How many halvings of the no-clipping scale the escape search tries.
const SCALE_HALVINGS: i32 = 12;

/// Quantizes the residual `target − current` with the centred zero point
/// `2^(bits−1)`. Per group the scale is the no-clipping scale divided by the
/// power of two that minimises the estimated bits: each halving saves one bit
/// per element in every later stage; each residual it pushes out of the code
/// range costs an escape, so a few outliers (weights the base clipped) no
/// longer coarsen the whole group.
pub fn quantize_refinement(target: &[f32], current: &[f32], grid: &Grid, bits: u8) -> StageCodes {
    let levels = 1i32 << bits;
    let half = levels / 2;
    let mut out = StageCodes {
        bits,
        codes: vec![half as u8; target.len()],
        scales: vec![0.0; grid.groups()],
        zeros: vec![half; grid.groups()],
        escapes: vec![],
    };
    let steps = |r: f32, s: f32| (r / s).round().clamp(-(1 << 30) as f32, (1 << 30) as f32) as i32;
    for g in 0..grid.groups() {
        let idx: Vec<usize> = grid.members(g).collect();
        let residual: Vec<f32> = idx.iter().map(|&i| target[i] - current[i]).collect();
        let (lo, hi) = residual.iter().fold((0f32, 0f32), |(a, b), &r| (a.min(r), b.max(r)));
        let full = (-lo / half as f32).max(hi / (half - 1).max(1) as f32);
        if !(full.is_finite() && full > 0.0) {
            continue; // residual is zero (or not representable): codes stay at the zero point
        }
        let escapes_at = |s: f32| residual.iter().filter(|&&r| !(-half..half).contains(&steps(r, s))).count() as i64;
        let mut best = (0i64, 0i32);
        for j in 1..=SCALE_HALVINGS {
            let s = full / (1u32 << j) as f32;
            if s < f32::MIN_POSITIVE {
                break;
            }
            let cost = ESCAPE_BITS * escapes_at(s) - j as i64 * idx.len() as i64;
            if cost < best.0 {
                best = (cost, j);
            }
        }
        let s = full / (1u32 << best.1) as f32;
        out.scales[g] = s;
        for (&i, &r) in idx.iter().zip(&residual) {
            let d = steps(r, s);
            let code = d.clamp(-half, half - 1);
            out.codes[i] = (code + half) as u8;
            if d != code {
                out.escapes.push((i as u32, d - code));
            }
        }
    }
    out.escapes.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut u = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n).map(|_| ((-2.0 * u().ln()).sqrt() * (std::f64::consts::TAU * u()).cos() * 0.05) as f32).collect()
    }

    #[test]
    fn clipping_search_beats_min_max() {
        let w = gaussian(64 * 288, 3);
        let grid = Grid::choose(&[64, 32, 3, 3], 0, 0);
        for bits in [2u8, 3, 4] {
            let mut a = vec![0.0; w.len()];
            let mut b = vec![0.0; w.len()];
            let plain = quantize_base(&w, &grid, bits, None);
            let clip = quantize_base(&w, &grid, bits, Some(2));
            apply_codes(&mut a, &grid, bits, &plain.packed(), &plain.scales, &plain.zeros);
            apply_codes(&mut b, &grid, bits, &clip.packed(), &clip.scales, &clip.zeros);
            let (ea, eb) = (error_stats(&w, &a).rmse, error_stats(&w, &b).rmse);
            assert!(eb < ea, "bits {bits}: clip {eb} vs min/max {ea}");
        }
    }

    #[test]
    fn refinement_shrinks_error_by_about_two_to_the_bits() {
        let w = gaussian(128 * 64, 5);
        let grid = Grid::choose(&[128, 64], 1, 0);
        let base = quantize_base(&w, &grid, 4, Some(2));
        let mut cur = vec![0.0; w.len()];
        apply_codes(&mut cur, &grid, 4, &base.packed(), &base.scales, &base.zeros);
        let mut prev = error_stats(&w, &cur).max_abs;
        for bits in [2u8, 4, 8] {
            let r = quantize_refinement(&w, &cur, &grid, bits);
            apply_codes(&mut cur, &grid, bits, &r.packed(), &r.scales, &r.zeros);
            apply_escapes(&mut cur, &grid, &r.escapes, &r.scales);
            let e = error_stats(&w, &cur).max_abs;
            assert!(e < prev / ((1 << bits) as f64 / 2.5), "bits {bits}: {e} vs {prev}");
            prev = e;
        }
    }

    #[test]
    fn outliers_become_escapes_instead_of_coarsening_the_group() {
        let mut w = gaussian(4096, 9);
        w[100] = 1.5; // far outside the ~0.05 spread: the clipping search clips it
        let grid = Grid::choose(&[4096], 0, 0);
        let base = quantize_base(&w, &grid, 3, Some(2));
        let mut cur = vec![0.0; w.len()];
        apply_codes(&mut cur, &grid, 3, &base.packed(), &base.scales, &base.zeros);
        let r = quantize_refinement(&w, &cur, &grid, 4);
        assert!(r.escapes.iter().any(|&(i, _)| i == 100), "{:?}", r.escapes);
        assert!(r.escapes.len() < 20);
        apply_codes(&mut cur, &grid, 4, &r.packed(), &r.scales, &r.zeros);
        apply_escapes(&mut cur, &grid, &r.escapes, &r.scales);
        let e = error_stats(&w, &cur).max_abs;
        assert!(e <= r.scales[0] as f64 * 0.5001, "every element within half a step: {e} vs {}", r.scales[0]);
    }
}
