//! Calibration from a folder of images (JPEG, PNG), preprocessed the way
//! the model expects: resize (exact, or shorter side then centre crop),
//! channel order, scale, per-channel mean/std, NCHW or NHWC. What is not
//! declared is taken from the model's input (its fixed height, width,
//! channel count and layout); values default to `pixel / 255`.
//!
//! The declaration is a small JSON object ([`Preprocess`]), e.g. for an
//! ImageNet classifier:
//!
//! ```json
//! {"resize_shorter": 256, "crop": [224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
//! ```

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use tract_onnx::pb::{tensor_proto::DataType, ModelProto};

use super::data::{Calibration, InputData, Origin, Values};
use p2u::error::{Error, Result};
use crate::onnx::{declared_inputs, DeclaredInput};
pub use p2u::runtime::{Channels, Layout, PixelTransform};

/// How an image becomes one input item; every field is optional.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// The graph input to feed (default: the model's only input).
    pub input: Option<String>,
    /// Resize to exactly `[height, width]` (bilinear).
    pub resize: Option<[usize; 2]>,
    /// Resize so the shorter side is this long, keeping the aspect ratio.
    pub resize_shorter: Option<usize>,
    /// Centre crop to `[height, width]` after resizing.
    pub crop: Option<[usize; 2]>,
    /// Channel order (default RGB; L when the model takes one channel).
    pub channels: Option<Channels>,
    /// Axis order (default: the model's, else NCHW).
    pub layout: Option<Layout>,
    /// Factor applied to the 0..255 pixel values first (default 1/255).
    pub scale: Option<f32>,
    /// Subtracted per channel after scaling (default 0).
    pub mean: Option<Vec<f32>>,
    /// Divides per channel after the mean (default 1).
    pub std: Option<Vec<f32>>,
}

impl Preprocess {
    /// Parses the JSON declaration (unknown keys are errors).
    pub fn from_json(text: &str) -> Result<Preprocess> {
        serde_json::from_str(text).map_err(|e| Error::Invalid(format!("preprocessing: {e}")))
    }
}

/// Image files (`.jpg`, `.jpeg`, `.png`) in `dir`, sorted by name.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|x| x.to_str()).is_some_and(|x| ["jpg", "jpeg", "png"].contains(&x.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The resolved preprocessing: every size and constant known.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// Input name (`None`: the only input).
    pub input: Option<String>,
    /// Size after resizing `[h, w]` (`None`: shorter side, see `shorter`).
    pub resize: Option<[usize; 2]>,
    /// Shorter side after resizing, when resizing keeps the aspect ratio.
    pub shorter: Option<usize>,
    /// Final `[h, w]`.
    pub size: [usize; 2],
    /// Channel order.
    pub channels: Channels,
    /// Axis order.
    pub layout: Layout,
    /// Pixel factor.
    pub scale: f32,
    /// Per-channel mean.
    pub mean: Vec<f32>,
    /// Per-channel std.
    pub std: Vec<f32>,
}

impl std::fmt::Display for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resize = match (self.resize, self.shorter) {
            (Some([h, w]), _) => format!("resize to {h}×{w}"),
            (None, Some(s)) => format!("shorter side to {s}"),
            (None, None) => "no resize".into(),
        };
        write!(
            f,
            "{resize}, {}×{} centre, {:?}, {:?}, ×{} − {:?} ÷ {:?}",
            self.size[0], self.size[1], self.channels, self.layout, self.scale, self.mean, self.std
        )
    }
}

/// Fills what `spec` leaves open from `model`'s input.
pub fn resolve(spec: &Preprocess, model: &ModelProto) -> Result<Resolved> {
    let declared = declared_inputs(model)?;
    let input: &DeclaredInput = match &spec.input {
        Some(name) => declared.iter().find(|d| &d.name == name).ok_or_else(|| {
            let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
            Error::Invalid(format!("preprocessing names input {name:?}; the model's inputs are {names:?}"))
        })?,
        None => match declared.as_slice() {
            [only] => only,
            many => {
                let names: Vec<&str> = many.iter().map(|d| d.name.as_str()).collect();
                return Err(Error::Invalid(format!(
                    "the model has inputs {names:?}: name the image input (\"input\" in the preprocessing)"
                )));
            }
        },
    };
    if input.dims.len() != 4 || input.elem_type != DataType::Float as i32 {
        return Err(Error::Invalid(format!("input {:?} is not a float32 image (rank 4): calibrate it with .npy files", input.name)));
    }
    let d = &input.dims;
    let channel_like = |x: Option<usize>| x.is_some_and(|c| (1..=4).contains(&c));
    let model_layout = if channel_like(d[1]) && !channel_like(d[3]) {
        Some(Layout::Nchw)
    } else if channel_like(d[3]) {
        Some(Layout::Nhwc)
    } else {
        None
    };
    let layout = spec.layout.or(model_layout).unwrap_or(Layout::Nchw);
    let (c, h, w) = match layout {
        Layout::Nchw => (d[1], d[2], d[3]),
        Layout::Nhwc => (d[3], d[1], d[2]),
    };
    let channels = spec.channels.unwrap_or(if c == Some(1) { Channels::Gray } else { Channels::Rgb });
    let count = channels.count();
    if c.is_some_and(|c| c != count) {
        return Err(Error::Invalid(format!(
            "input {:?} takes {} channels but the preprocessing gives {count} ({channels:?})",
            input.name,
            c.unwrap_or(0)
        )));
    }
    let size = match (spec.crop, spec.resize, h.zip(w)) {
        (Some(c), _, _) => c,
        (None, Some(r), _) => r,
        (None, None, Some((h, w))) => [h, w],
        (None, None, None) => {
            return Err(Error::Invalid(format!("input {:?} has no fixed height and width: declare \"resize\" or \"crop\"", input.name)))
        }
    };
    if let Some((h, w)) = h.zip(w) {
        if size != [h, w] {
            return Err(Error::Invalid(format!("input {:?} is {h}×{w} but the preprocessing makes {}×{}", input.name, size[0], size[1])));
        }
    }
    let (resize, shorter) = match (spec.resize, spec.resize_shorter) {
        (Some(_), Some(_)) => return Err(Error::Invalid("preprocessing: give \"resize\" or \"resize_shorter\", not both".into())),
        (Some(r), None) => (Some(r), None),
        (None, Some(s)) => (None, Some(s)),
        (None, None) if spec.crop.is_some() => (None, None),
        (None, None) => (Some(size), None),
    };
    if let Some(r) = resize {
        if r[0] < size[0] || r[1] < size[1] || r.contains(&0) {
            return Err(Error::Invalid(format!("preprocessing: resize {r:?} is smaller than the crop {size:?}")));
        }
    }
    let per_channel = |v: &Option<Vec<f32>>, what: &str, default: f32| match v {
        None => Ok(vec![default; count]),
        Some(v) if v.len() == count && v.iter().all(|x| x.is_finite()) => Ok(v.clone()),
        Some(v) => Err(Error::Invalid(format!("preprocessing: {what} has {} finite values for {count} channels", v.len()))),
    };
    let std = per_channel(&spec.std, "std", 1.0)?;
    if std.contains(&0.0) {
        return Err(Error::Invalid("preprocessing: std must not be 0".into()));
    }
    let scale = spec.scale.unwrap_or(1.0 / 255.0);
    if !scale.is_finite() {
        return Err(Error::Invalid("preprocessing: scale must be finite".into()));
    }
    let input_name = if declared.len() == 1 { None } else { Some(input.name.clone()) };
    Ok(Resolved { input: input_name, resize, shorter, size, channels, layout, scale, mean: per_channel(&spec.mean, "mean", 0.0)?, std })
}

/// One image file as a preprocessed item (`c·h·w` values in `r.layout`).
pub fn load_image(path: &Path, r: &Resolved) -> Result<Vec<f32>> {
    let img = image::open(path).map_err(|e| Error::Invalid(format!("calibration image {}: {e}", path.display())))?;
    let img = match (r.resize, r.shorter) {
        (Some([h, w]), _) => img.resize_exact(w as u32, h as u32, FilterType::Triangle),
        (None, Some(s)) => {
            let (w0, h0) = (img.width().max(1) as f64, img.height().max(1) as f64);
            let k = s as f64 / w0.min(h0);
            img.resize_exact(((w0 * k).round() as u32).max(1), ((h0 * k).round() as u32).max(1), FilterType::Triangle)
        }
        (None, None) => img,
    };
    let [h, w] = r.size;
    if (img.height() as usize) < h || (img.width() as usize) < w {
        return Err(Error::Invalid(format!(
            "calibration image {} is {}×{} after resizing, smaller than the crop {h}×{w}",
            path.display(),
            img.height(),
            img.width()
        )));
    }
    let (top, left) = ((img.height() as usize - h) / 2, (img.width() as usize - w) / 2);
    let img = img.crop_imm(left as u32, top as u32, w as u32, h as u32);
    let transform = PixelTransform { channels: r.channels, layout: r.layout, scale: r.scale, mean: r.mean.clone(), std: r.std.clone() };
    match r.channels {
        Channels::Gray => transform.apply(&img.to_luma8().into_raw(), w, h, 1),
        _ => transform.apply(&img.to_rgb8().into_raw(), w, h, 3),
    }
}

/// Calibration items from image files, preprocessed by `r`.
pub fn from_images(files: &[PathBuf], r: &Resolved) -> Result<Calibration> {
    if files.is_empty() {
        return Err(Error::Invalid("no calibration image (.jpg, .jpeg, .png) found".into()));
    }
    let items: Vec<Vec<f32>> = crate::parallel::map(files.len(), |i| load_image(&files[i], r), &mut |_, _| {})?;
    let c = r.mean.len();
    let [h, w] = r.size;
    let item_dims = match r.layout {
        Layout::Nchw => vec![c, h, w],
        Layout::Nhwc => vec![h, w, c],
    };
    Calibration::from_inputs(vec![InputData { name: r.input.clone(), item_dims, values: Values::F32(items.concat()) }], Origin::Data)
}
