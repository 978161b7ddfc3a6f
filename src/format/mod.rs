//! The p2u file formats (see `docs/FORMAT.md`): the residual stream
//! container ([`stream`]), the JSON manifest ([`manifest`]), stage payloads
//! ([`payload`]) and hashing.

pub mod manifest;
pub mod payload;
pub mod stream;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// SHA-256 of a byte slice.
pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// Digest of a stream chunk's frame (BLAKE3, 256 bits), as listed in the
/// stream header. [`ChunkHasher`] computes it in pieces.
pub fn chunk_digest(frame: &[u8]) -> Hash {
    blake3::hash(frame).into()
}

/// [`chunk_digest`] fed in pieces, as the bytes arrive.
pub type ChunkHasher = blake3::Hasher;

/// SHA-256 of an f32 slice in little-endian byte order.
pub fn tensor_hash(values: &[f32]) -> Hash {
    let mut h = TensorHasher::default();
    h.update(values);
    h.finish()
}

/// [`tensor_hash`] fed in pieces (for work split into short tasks).
#[derive(Clone, Default)]
pub struct TensorHasher(Sha256);

impl TensorHasher {
    /// Hashes the next values.
    pub fn update(&mut self, values: &[f32]) {
        for chunk in values.chunks(4096) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.0.update(&bytes);
        }
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Hash {
        self.0.finalize().into()
    }
}

/// Hash identifying a model's weights: over each tensor's name, shape and hash.
pub fn weights_hash<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a [usize], Hash)>) -> Hash {
    let mut h = Sha256::new();
    for (name, dims, th) in tensors {
        h.update(name.as_bytes());
        h.update([0u8]);
        for d in dims {
            h.update((*d as u64).to_le_bytes());
        }
        h.update(th);
    }
    h.finalize().into()
}

/// Lower-case hex of a hash.
pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// An expected hash given in hex (a manifest's field): `None` for an empty
/// string, an [`Error::Invalid`] naming `what` unless it is a SHA-256 in hex.
pub fn expected_hash(hex: &str, what: &str) -> Result<Option<Hash>> {
    if hex.is_empty() {
        return Ok(None);
    }
    parse_hex(hex).map(Some).ok_or_else(|| Error::Invalid(format!("{what} {hex:?} is not a SHA-256 in hex")))
}

/// A hash from its hex form (either case); `None` unless exactly 64 hex digits.
pub fn parse_hex(s: &str) -> Option<Hash> {
    let b = s.as_bytes();
    if b.len() != 64 || !b.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut h = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        h[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(h)
}
