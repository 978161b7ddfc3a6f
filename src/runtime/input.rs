//! Turning integer pixels (8-bit photos, 16-bit medical images) into the
//! f32 values a model expects.

use crate::error::{Error, Result};

/// A linear map from a window of raw values onto a target range:
/// `lo ↦ to.0`, `hi ↦ to.1`, optionally clamped to the target range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    /// Raw value mapped to `to.0`.
    pub lo: f32,
    /// Raw value mapped to `to.1`.
    pub hi: f32,
    /// Target range.
    pub to: (f32, f32),
    /// Clamp results into the target range (what a display window does).
    pub clamp: bool,
}

impl Normalization {
    /// The full range of a raw type onto `[0, 1]` (e.g. `0..=255` for u8).
    pub fn full_range(lo: f32, hi: f32) -> Self {
        Normalization { lo, hi, to: (0.0, 1.0), clamp: false }
    }

    /// A display window (DICOM window centre/width) onto `[0, 1]`, clamped.
    pub fn window(center: f32, width: f32) -> Self {
        Normalization { lo: center - width / 2.0, hi: center + width / 2.0, to: (0.0, 1.0), clamp: true }
    }

    /// Maps `raw` values to f32 model inputs.
    pub fn apply<T: Copy + Into<f32>>(&self, raw: &[T]) -> Result<Vec<f32>> {
        let all_finite = [self.lo, self.hi, self.to.0, self.to.1].iter().all(|v| v.is_finite());
        if !all_finite || self.hi <= self.lo {
            return Err(Error::Invalid(format!(
                "normalization needs finite values and lo < hi, got lo {} hi {} to {:?}",
                self.lo, self.hi, self.to
            )));
        }
        let scale = (self.to.1 - self.to.0) / (self.hi - self.lo);
        let (a, b) = if self.to.0 <= self.to.1 { self.to } else { (self.to.1, self.to.0) };
        Ok(raw
            .iter()
            .map(|&x| {
                let y = self.to.0 + (x.into() - self.lo) * scale;
                if self.clamp {
                    y.clamp(a, b)
                } else {
                    y
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_window_and_full_ranges() {
        let w = Normalization::window(40.0, 400.0).apply(&[-32768i16, -160, 40, 240, 1000]).unwrap();
        assert_eq!(w, vec![0.0, 0.0, 0.5, 1.0, 1.0]);
        let u = Normalization::full_range(0.0, 65535.0).apply(&[0u16, 65535]).unwrap();
        assert_eq!(u, vec![0.0, 1.0]);
        let b = Normalization { lo: 0.0, hi: 255.0, to: (-1.0, 1.0), clamp: false }.apply(&[0u8, 255]).unwrap();
        assert_eq!(b, vec![-1.0, 1.0]);
        assert!(Normalization::window(0.0, 0.0).apply(&[1u8]).is_err());
    }
}
