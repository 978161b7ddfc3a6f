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

    /// A display window onto `to`, clamped: the DICOM VOI LUT function
    /// `LINEAR` (PS3.3 C.11.2.1.2.1), values at or below
    /// `center − 0.5 − (width − 1) / 2` map to `to.0`, values above
    /// `center − 0.5 + (width − 1) / 2` to `to.1`, linearly in between.
    /// `width` must be at least 1; at exactly 1 the window is the standard's
    /// step at `center − 0.5`.
    pub fn window(center: f32, width: f32, to: (f32, f32)) -> Result<Self> {
        if !(width >= 1.0) || !center.is_finite() || !width.is_finite() {
            return Err(Error::Invalid(format!("a DICOM window needs a finite center and width ≥ 1, got center {center} width {width}")));
        }
        let lo = center - 0.5 - (width - 1.0) / 2.0;
        let hi = if width > 1.0 { center - 0.5 + (width - 1.0) / 2.0 } else { lo + lo.abs().max(1.0) * f32::EPSILON };
        Ok(Normalization { lo, hi, to, clamp: true })
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

/// Channel order of a model's image input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum Channels {
    /// Red, green, blue.
    #[serde(rename = "RGB")]
    Rgb,
    /// Blue, green, red (Caffe-style models).
    #[serde(rename = "BGR")]
    Bgr,
    /// One luminance channel.
    #[serde(rename = "L")]
    Gray,
}

impl Channels {
    /// Number of channels.
    pub fn count(self) -> usize {
        if self == Channels::Gray {
            1
        } else {
            3
        }
    }
}

/// Axis order of a model's image input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum Layout {
    /// Batch, channels, height, width.
    #[serde(rename = "NCHW")]
    Nchw,
    /// Batch, height, width, channels.
    #[serde(rename = "NHWC")]
    Nhwc,
}

/// How interleaved 8-bit pixels become one image item: channel order,
/// `value · scale`, then `(· − mean[c]) / std[c]` per channel, in `layout`.
/// The encoder's image calibration and the runtime's pixel inputs both go
/// through [`PixelTransform::apply`].
#[derive(Clone, Debug, PartialEq)]
pub struct PixelTransform {
    /// Channel order the model takes.
    pub channels: Channels,
    /// Axis order the model takes.
    pub layout: Layout,
    /// Factor applied to the 0..255 values first.
    pub scale: f32,
    /// Subtracted per channel after scaling.
    pub mean: Vec<f32>,
    /// Divides per channel after the mean.
    pub std: Vec<f32>,
}

/// Luma of an 8-bit RGB pixel as the `image` crate computes it (Rec. 709
/// weights in integers, rounded down), so that gray inputs match gray
/// calibration images.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((2126 * r as u32 + 7152 * g as u32 + 722 * b as u32) / 10000) as u8
}

impl PixelTransform {
    /// Checks the constants: one finite mean and non-zero std per channel.
    pub fn check(&self) -> Result<()> {
        let n = self.channels.count();
        for (what, v) in [("mean", &self.mean), ("std", &self.std)] {
            if v.len() != n || !v.iter().all(|x| x.is_finite()) {
                return Err(Error::Invalid(format!("pixels: {what} has {} finite values for {n} channels", v.len())));
            }
        }
        if self.std.contains(&0.0) || !self.scale.is_finite() {
            return Err(Error::Invalid("pixels: std must not be 0 and scale must be finite".into()));
        }
        Ok(())
    }

    /// The item's shape in the model's layout (without the batch axis).
    pub fn item_dims(&self, height: usize, width: usize) -> Vec<usize> {
        let c = self.channels.count();
        match self.layout {
            Layout::Nchw => vec![c, height, width],
            Layout::Nhwc => vec![height, width, c],
        }
    }

    /// `pixels`: `height × width` pixels of `stride` interleaved 8-bit
    /// values (1 gray, 3 RGB, 4 RGBA as a canvas gives; alpha is ignored).
    pub fn apply(&self, pixels: &[u8], width: usize, height: usize, stride: usize) -> Result<Vec<f32>> {
        self.check()?;
        if !matches!(stride, 1 | 3 | 4) {
            return Err(Error::Invalid(format!("pixels: {stride} values per pixel; expected 1 (gray), 3 (RGB) or 4 (RGBA)")));
        }
        let count = width.checked_mul(height).and_then(|n| n.checked_mul(stride));
        if count != Some(pixels.len()) {
            return Err(Error::Invalid(format!("pixels: {} values for {width}×{height} pixels of {stride}", pixels.len())));
        }
        let rgb = |p: &[u8]| if stride == 1 { [p[0]; 3] } else { [p[0], p[1], p[2]] };
        let planes: Vec<Vec<f32>> = match self.channels {
            Channels::Gray if stride == 1 => vec![pixels.iter().map(|&v| f32::from(v)).collect()],
            Channels::Gray => vec![pixels.chunks_exact(stride).map(|p| f32::from(luma(p[0], p[1], p[2]))).collect()],
            order => {
                let channel = |k: usize| pixels.chunks_exact(stride).map(|p| f32::from(rgb(p)[k])).collect::<Vec<f32>>();
                match order {
                    Channels::Bgr => vec![channel(2), channel(1), channel(0)],
                    _ => vec![channel(0), channel(1), channel(2)],
                }
            }
        };
        let planes: Vec<Vec<f32>> = planes
            .into_iter()
            .enumerate()
            .map(|(c, p)| p.into_iter().map(|v| (v * self.scale - self.mean[c]) / self.std[c]).collect())
            .collect();
        Ok(match self.layout {
            Layout::Nchw => planes.concat(),
            Layout::Nhwc => (0..height * width).flat_map(|i| planes.iter().map(move |p| p[i])).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgba_pixels_to_nchw_and_nhwc() {
        let rgba = [10u8, 20, 30, 255, 40, 50, 60, 0];
        let t = PixelTransform {
            channels: Channels::Rgb,
            layout: Layout::Nchw,
            scale: 1.0,
            mean: vec![0.0, 10.0, 20.0],
            std: vec![1.0, 2.0, 4.0],
        };
        assert_eq!(t.apply(&rgba, 2, 1, 4).unwrap(), vec![10.0, 40.0, 5.0, 20.0, 2.5, 10.0]);
        let nhwc = PixelTransform { layout: Layout::Nhwc, channels: Channels::Bgr, ..t.clone() };
        // BGR: the constants apply to the model's channels (B, G, R)
        assert_eq!(nhwc.apply(&rgba, 2, 1, 4).unwrap(), vec![30.0, 5.0, -2.5, 60.0, 20.0, 5.0]);
        let gray = PixelTransform { channels: Channels::Gray, mean: vec![0.0], std: vec![1.0], ..t.clone() };
        assert_eq!(gray.apply(&[255, 255, 255, 0], 1, 1, 4).unwrap(), vec![255.0]);
        assert!(t.apply(&rgba, 3, 1, 4).is_err());
        assert!(PixelTransform { mean: vec![0.0], ..t }.apply(&rgba, 2, 1, 4).is_err());
    }

    #[test]
    fn sixteen_bit_window_and_full_ranges() {
        // DICOM LINEAR: c 40, w 401 spans -160.5 ..= 239.5
        let w = Normalization::window(40.0, 401.0, (0.0, 1.0)).unwrap().apply(&[-32768i16, -161, -160, 40, 239, 240, 1000]).unwrap();
        let expect = |x: f32| ((x - 39.5) / 400.0 + 0.5).clamp(0.0, 1.0);
        assert_eq!(w[..2], [0.0, 0.0]);
        assert!((w[2] - expect(-160.0)).abs() < 1e-6 && (w[3] - expect(40.0)).abs() < 1e-6 && (w[4] - expect(239.0)).abs() < 1e-6);
        assert_eq!(w[5..], [1.0, 1.0]);
        // width 1: the standard's step at center - 0.5
        let step = Normalization::window(100.0, 1.0, (0.0, 1.0)).unwrap().apply(&[99u16, 100, 101]).unwrap();
        assert_eq!(step, vec![0.0, 1.0, 1.0]);
        assert!(Normalization::window(0.0, 0.5, (0.0, 1.0)).is_err());
        let u = Normalization::full_range(0.0, 65535.0).apply(&[0u16, 65535]).unwrap();
        assert_eq!(u, vec![0.0, 1.0]);
        let b = Normalization { lo: 0.0, hi: 255.0, to: (-1.0, 1.0), clamp: false }.apply(&[0u8, 255]).unwrap();
        assert_eq!(b, vec![-1.0, 1.0]);
    }
}
