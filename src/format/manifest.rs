//! `NAME.json`: what the encoder produced, for tools, pages and humans.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::quant::ErrorStats;

/// Manifest format version.
pub const MANIFEST_VERSION: u32 = 2;

/// The manifest written next to the base and the stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// Model name (file stem of the original).
    pub name: String,
    /// The original model file: name, bytes, SHA-256.
    pub original: FileInfo,
    /// The original's external data files (names relative to it), whose
    /// bytes count as the original's too ([`Manifest::original_bytes`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub original_data: Vec<FileInfo>,
    /// The low-bit base ONNX file.
    pub base: FileInfo,
    /// The residual stream file.
    pub stream: FileInfo,
    /// SHA-256 of the stream's header (its first bytes, prefix through
    /// CRC). The header lists every chunk's digest, so a runtime that
    /// checks the header against this hash verifies each chunk as it
    /// arrives, before applying it.
    #[serde(default)]
    pub stream_header_sha256: String,
    /// SHA-256 of the original weights (see `docs/FORMAT.md`).
    pub weights_sha256: String,
    /// Stages in application order; stage 0 is the base.
    pub stages: Vec<StageInfo>,
    /// Per quantized tensor: shape, grid, per-stage error.
    pub tensors: Vec<TensorInfo>,
    /// Weights the mixed-precision allocation keeps exact (f32) in the base.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exact_in_base: Vec<String>,
    /// Class names of the first output's last axis, when the encoder was
    /// given them (`p2u encode --labels`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// A model card (a JSON object, or text), when the encoder was given one
    /// (`p2u encode --card`): what the model is for, its data, its limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<serde_json::Value>,
}

impl Manifest {
    /// Parses a manifest and checks what tools rely on: file names that
    /// stay in the manifest's directory, at least the base and one more
    /// stage, numbered in order.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| Error::Invalid(format!("not a p2u manifest: {e}")))?;
        for (what, f) in [("original", &m.original), ("base", &m.base), ("stream", &m.stream)] {
            let plain = !f.file.is_empty() && f.file != "." && f.file != ".." && !f.file.contains(['/', '\\', ':', '\0']);
            if !plain {
                return Err(Error::Invalid(format!("manifest {what} file {:?} is not a plain file name in its directory", f.file)));
            }
        }
        if m.stages.len() < 2 || m.stages.iter().enumerate().any(|(i, s)| s.stage as usize != i) {
            return Err(Error::Invalid(format!(
                "manifest lists stages {:?}: need stages 0, 1, … in order, at least two",
                m.stages.iter().map(|s| s.stage).collect::<Vec<_>>()
            )));
        }
        Ok(m)
    }

    /// Bytes of the original model: its file and its external data files.
    pub fn original_bytes(&self) -> u64 {
        self.original.bytes + self.original_data.iter().map(|f| f.bytes).sum::<u64>()
    }

    /// The last stage's number (the exact one).
    pub fn last_stage(&self) -> u32 {
        self.stages.len().saturating_sub(1) as u32
    }
}

/// A file and its identity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileInfo {
    /// File name (relative to the manifest).
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// One stage of the progression.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageInfo {
    /// Stage number (0 = base).
    pub stage: u32,
    /// `base`, `refine` or `exact`.
    pub kind: String,
    /// Code width (0 for the exact stage).
    pub bits: u8,
    /// Bytes this stage adds (for the base: the whole base file).
    pub bytes: u64,
    /// Bytes from the start through this stage.
    pub cumulative_bytes: u64,
    /// Weight error of the model after this stage, over all quantized tensors.
    pub error: ErrorStats,
}

/// One quantized tensor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TensorInfo {
    /// Tensor name in the original model.
    pub name: String,
    /// Shape.
    pub dims: Vec<usize>,
    /// Groups (scales) per stage.
    pub groups: usize,
    /// Base code width (of the container: a step-quantized base is 8).
    pub base_bits: u8,
    /// The base's codes, scales and zero points as served (codes at their
    /// entropy).
    #[serde(default)]
    pub base_served_bytes: u64,
    /// Error after each stage (index = stage).
    pub error: Vec<ErrorStats>,
    /// Stream bytes per stage (index = stage; stage 0 counts codes+scales in the base).
    pub bytes: Vec<u64>,
    /// `float16` or `bfloat16` for a weight whose values all are exact in
    /// that format (the exact stage restores those bits); absent for f32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
}
