//! Calibration-aware base rounding (GPTQ, Frantar et al. 2022).
//!
//! A weight tensor is seen as `outputs × inputs` ([`InputStats`]). For one
//! output row `w` the layer's output error on the calibration data is
//! `(w − ŵ)ᵀ H (w − ŵ)` with `H = Σ x xᵀ` the Gram matrix of the inputs
//! that row sees. GPTQ rounds the inputs one at a time (largest `H_ii`
//! first, "act order") and spreads each rounding error over the not yet
//! rounded inputs through the Cholesky factor of `H⁻¹`, which is the
//! optimal compensation for a quadratic error. Scales and zero points are
//! fixed beforehand per group (the clipping search); GPTQ only chooses the
//! codes, so the decoder's rule and everything downstream is unchanged.

/// Second-order statistics of the inputs of one weight tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct InputStats {
    /// Output rows of the tensor (e.g. a Conv's output channels).
    pub outputs: usize,
    /// Inputs per output row (e.g. `Cin/group · kh · kw`).
    pub inputs: usize,
    /// True when element `(o, i)` is stored at `i · outputs + o` (a MatMul
    /// or Gemm B of shape `[K, N]`), false for `o · inputs + i`.
    pub transposed: bool,
    /// One symmetric `inputs × inputs` Gram matrix (row-major) per
    /// consecutive, equal share of the output rows (a grouped Conv's groups).
    pub grams: Vec<Vec<f64>>,
    /// Input vectors accumulated into each Gram matrix.
    pub samples: u64,
}

impl InputStats {
    /// Flat index of element `(o, i)`.
    pub fn index(&self, o: usize, i: usize) -> usize {
        if self.transposed {
            i * self.outputs + o
        } else {
            o * self.inputs + i
        }
    }

    /// The Gram matrix that output row `o` sees.
    pub fn gram_of(&self, o: usize) -> &[f64] {
        &self.grams[o / (self.outputs / self.grams.len())]
    }

    /// Checks the sizes against a tensor of `len` elements.
    pub fn fits(&self, len: usize) -> bool {
        let k = self.inputs;
        self.outputs * k == len
            && !self.grams.is_empty()
            && self.outputs.is_multiple_of(self.grams.len())
            && self.grams.iter().all(|g| g.len() == k * k)
    }

    /// `Σ_o dₒᵀ H dₒ` with `d = target − approx`: the squared output error
    /// of the layer summed over the calibration inputs.
    pub fn output_error(&self, target: &[f32], approx: &[f32]) -> f64 {
        let k = self.inputs;
        let mut d = vec![0f64; k];
        let mut total = 0.0;
        for o in 0..self.outputs {
            for (i, di) in d.iter_mut().enumerate() {
                let j = self.index(o, i);
                *di = target[j] as f64 - approx[j] as f64;
            }
            if d.iter().all(|&v| v == 0.0) {
                continue;
            }
            let h = self.gram_of(o);
            for i in 0..k {
                if d[i] != 0.0 {
                    let row = &h[i * k..(i + 1) * k];
                    total += d[i] * row.iter().zip(&d).map(|(a, b)| a * b).sum::<f64>();
                }
            }
        }
        total.max(0.0)
    }
}

/// Relative damping added to the diagonal (GPTQ's default).
const DAMPING: f64 = 0.01;

/// The upper Cholesky factor `U` (`H⁻¹ = Uᵀ U`) of the damped inverse Gram
/// matrix, in act order `perm` (inputs sorted by decreasing `H_ii`).
pub struct Factor {
    /// Input order, largest diagonal first.
    pub perm: Vec<usize>,
    /// Row-major `k × k` upper-triangular factor in permuted order.
    pub upper: Vec<f64>,
}

impl Factor {
    /// Factors one Gram matrix; `None` if it stays indefinite even after
    /// heavy damping (the caller then rounds to nearest).
    pub fn new(gram: &[f64], k: usize) -> Option<Factor> {
        let diag: Vec<f64> = (0..k).map(|i| gram[i * k + i]).collect();
        let mean = diag.iter().sum::<f64>() / k.max(1) as f64;
        if !(mean.is_finite() && mean > 0.0) {
            return None;
        }
        let mut perm: Vec<usize> = (0..k).collect();
        perm.sort_by(|&a, &b| diag[b].total_cmp(&diag[a]).then(a.cmp(&b)));
        let mut damping = DAMPING;
        for _ in 0..6 {
            let mut h = vec![0f64; k * k];
            for (a, &pa) in perm.iter().enumerate() {
                for (b, &pb) in perm.iter().enumerate() {
                    h[a * k + b] = gram[pa * k + pb];
                }
                // an input that never fired: any code is as good as another
                if diag[pa] == 0.0 {
                    h[a * k + a] = mean;
                }
                h[a * k + a] += damping * mean;
            }
            if let Some(upper) = inverse_upper_cholesky(&h, k) {
                return Some(Factor { perm, upper });
            }
            damping *= 10.0;
        }
        None
    }
}

/// The factor of each of `stats`' Gram matrices (`None` where it failed).
pub fn factors(stats: &InputStats) -> Vec<Option<Factor>> {
    stats.grams.iter().map(|g| Factor::new(g, stats.inputs)).collect()
}

/// Lower Cholesky factor of a symmetric positive definite matrix, in place.
fn cholesky(a: &mut [f64], k: usize) -> bool {
    for j in 0..k {
        let mut d = a[j * k + j];
        for p in 0..j {
            d -= a[j * k + p] * a[j * k + p];
        }
        if !(d > 0.0 && d.is_finite()) {
            return false;
        }
        let d = d.sqrt();
        a[j * k + j] = d;
        for i in j + 1..k {
            let mut s = a[i * k + j];
            for p in 0..j {
                s -= a[i * k + p] * a[j * k + p];
            }
            a[i * k + j] = s / d;
        }
        for i in 0..j {
            a[i * k + j] = 0.0;
        }
    }
    true
}

/// `U` with `H⁻¹ = Uᵀ U`, via `H = L Lᵀ`, `H⁻¹ = L⁻ᵀ L⁻¹`, then the
/// Cholesky factor of `H⁻¹` transposed.
fn inverse_upper_cholesky(h: &[f64], k: usize) -> Option<Vec<f64>> {
    let mut l = h.to_vec();
    if !cholesky(&mut l, k) {
        return None;
    }
    // L⁻¹ (lower triangular), column by column.
    let mut inv = vec![0f64; k * k];
    for c in 0..k {
        inv[c * k + c] = 1.0 / l[c * k + c];
        for r in c + 1..k {
            let mut s = 0.0;
            for p in c..r {
                s += l[r * k + p] * inv[p * k + c];
            }
            inv[r * k + c] = -s / l[r * k + r];
        }
    }
    // H⁻¹ = L⁻ᵀ L⁻¹
    let mut hinv = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..=i {
            let s: f64 = (i..k).map(|p| inv[p * k + i] * inv[p * k + j]).sum();
            hinv[i * k + j] = s;
            hinv[j * k + i] = s;
        }
    }
    if !cholesky(&mut hinv, k) {
        return None;
    }
    // transpose the lower factor into the upper one
    let mut upper = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..=i {
            upper[j * k + i] = hinv[i * k + j];
        }
    }
    Some(upper)
}

/// Rounds one output row in act order with error feedback. `row` holds the
/// row's weights in input order; `round(i, w)` returns the decoded value
/// the code chosen for input `i` at value `w` decodes to (and records it).
pub fn round_row(factor: &Factor, row: &[f32], mut round: impl FnMut(usize, f32) -> f32) {
    let k = row.len();
    let u = &factor.upper;
    let mut w: Vec<f64> = factor.perm.iter().map(|&i| row[i] as f64).collect();
    for a in 0..k {
        let decoded = round(factor.perm[a], w[a] as f32) as f64;
        let err = (w[a] - decoded) / u[a * k + a];
        if err != 0.0 {
            let urow = &u[a * k..(a + 1) * k];
            for b in a + 1..k {
                w[b] -= err * urow[b];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64 - 0.5
        }
    }

    #[test]
    fn factor_inverts_the_damped_gram_matrix() {
        let k = 12;
        let mut r = lcg(1);
        let x: Vec<f64> = (0..40 * k).map(|_| r()).collect();
        let mut g = vec![0f64; k * k];
        for s in x.chunks(k) {
            for i in 0..k {
                for j in 0..k {
                    g[i * k + j] += s[i] * s[j];
                }
            }
        }
        let f = Factor::new(&g, k).expect("positive definite");
        // Uᵀ U · (P H Pᵀ + λI) = I
        let mean = (0..k).map(|i| g[i * k + i]).sum::<f64>() / k as f64;
        for a in 0..k {
            for b in 0..k {
                let mut s = 0.0;
                for c in 0..k {
                    let hinv_ac: f64 = (0..k).map(|p| f.upper[p * k + a] * f.upper[p * k + c]).sum();
                    let h_cb = g[f.perm[c] * k + f.perm[b]] + if c == b { DAMPING * mean } else { 0.0 };
                    s += hinv_ac * h_cb;
                }
                assert!((s - (a == b) as u8 as f64).abs() < 1e-9, "({a},{b}) = {s}");
            }
        }
    }

    #[test]
    fn error_feedback_lowers_the_output_error_of_a_row() {
        let k = 64;
        let mut r = lcg(7);
        // inputs driven by a few shared factors (strongly correlated, as
        // neighbouring pixels are): where GPTQ beats round-to-nearest
        let mix: Vec<f64> = (0..k * 4).map(|_| r()).collect();
        let xs: Vec<Vec<f64>> = (0..500)
            .map(|_| {
                let z: Vec<f64> = (0..4).map(|_| r()).collect();
                (0..k).map(|i| (0..4).map(|f| mix[i * 4 + f] * z[f]).sum::<f64>() + 0.05 * r()).collect()
            })
            .collect();
        let mut g = vec![0f64; k * k];
        for x in &xs {
            for i in 0..k {
                for j in 0..k {
                    g[i * k + j] += x[i] * x[j];
                }
            }
        }
        let w: Vec<f32> = (0..k).map(|_| r() as f32).collect();
        let stats = InputStats { outputs: 1, inputs: k, transposed: false, grams: vec![g.clone()], samples: 500 };
        let step = 0.125f32;
        let rtn: Vec<f32> = w.iter().map(|v| (v / step).round() * step).collect();
        let mut gptq = vec![0f32; k];
        round_row(&Factor::new(&g, k).unwrap(), &w, |i, v| {
            gptq[i] = (v / step).round() * step;
            gptq[i]
        });
        let (e_rtn, e_gptq) = (stats.output_error(&w, &rtn), stats.output_error(&w, &gptq));
        assert!(e_gptq < 0.5 * e_rtn, "gptq {e_gptq} vs rtn {e_rtn}");
    }
}
