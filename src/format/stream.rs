//! The `.p2u` residual stream: a header, then self-delimiting chunks.
//!
//! Everything is little-endian. Every length and count is validated against
//! hard limits and against the tensor table *before* anything is allocated,
//! and every header and chunk carries a CRC-32 of its bytes. The header
//! lists the digest (BLAKE3) of every chunk in stream order, so a chunk from another
//! stream (a splice of two encodes), a reordered or a forged chunk is
//! rejected where it stands, and a header the caller knows the hash of
//! vouches for every byte after it. See `docs/FORMAT.md` for the byte layout.

use super::{sha256, ChunkHasher, Hash};
use crate::error::{Error, Result};
use crate::kernels::{packed_len, MAX_BITS};
use crate::quant::{Grid, Precision};

/// Magic bytes opening a stream.
pub const STREAM_MAGIC: [u8; 4] = *b"P2US";
/// Magic bytes opening a chunk.
pub const CHUNK_MAGIC: [u8; 4] = *b"P2UC";
/// Stream format version written and accepted.
pub const FORMAT_VERSION: u16 = 2;
/// Fixed bytes before the header body (magic, version, flags, body length).
pub const HEADER_PREFIX: usize = 12;
/// Fixed bytes of a chunk before its payload.
pub const CHUNK_PREFIX: usize = 16;
/// Largest header body accepted.
pub const MAX_HEADER_BYTES: usize = 64 << 20;
/// Largest tensor accepted (elements).
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 31;
/// Largest tensor rank accepted.
pub const MAX_RANK: usize = 8;
/// Header flag: every tensor entry ends with its [`Precision`] code. Set
/// only when a tensor is not f32, so f32 models' streams stay as they were
/// (and a reader without the flag refuses, rather than misreads, the rest).
pub const FLAG_PRECISION: u16 = 1;

/// What a stage does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageKind {
    /// Stage 0: the low-bit codes in the base ONNX file.
    Base,
    /// A residual refinement `W += s·(q − z)`.
    Refine,
    /// The last stage: makes every f32 bit exact.
    Exact,
}

impl StageKind {
    fn code(self) -> u8 {
        match self {
            StageKind::Base => 0,
            StageKind::Refine => 1,
            StageKind::Exact => 2,
        }
    }
    fn from_code(c: u8) -> Result<Self> {
        Ok(match c {
            0 => StageKind::Base,
            1 => StageKind::Refine,
            2 => StageKind::Exact,
            _ => return Err(Error::Header(format!("unknown stage kind {c}"))),
        })
    }
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Base => "base",
            StageKind::Refine => "refine",
            StageKind::Exact => "exact",
        }
    }
}

/// One stage of the progression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage {
    /// What it does.
    pub kind: StageKind,
    /// Code width (0 for exact).
    pub bits: u8,
}

/// One quantized tensor, as the stream knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// Name in the original model.
    pub name: String,
    /// Shape.
    pub dims: Vec<usize>,
    /// Group structure (shared by all stages).
    pub grid: Grid,
    /// SHA-256 of the original f32 values.
    pub hash: Hash,
    /// The format the original values are exact in (the exact stage codes
    /// among its values).
    pub precision: Precision,
}

/// The stream header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// Hash of the original weights ([`super::weights_hash`]).
    pub weights_hash: Hash,
    /// SHA-256 of the base ONNX file this stream refines.
    pub base_hash: Hash,
    /// Stages; index 0 is the base.
    pub stages: Vec<Stage>,
    /// Quantized tensors, in table order.
    pub tensors: Vec<TensorEntry>,
    /// Number of chunks that follow.
    pub chunk_count: u32,
    /// Digest ([`super::chunk_digest`]) of each chunk's frame (magic through CRC), in stream order.
    pub chunk_digests: Vec<Hash>,
}

/// One chunk: the data of one stage of one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Index into the tensor table.
    pub tensor: u32,
    /// Stage number (≥ 1).
    pub stage: u8,
    /// Code width for refinement chunks, 0 for exact chunks.
    pub bits: u8,
    /// Stage-specific payload (see `docs/FORMAT.md`).
    pub payload: Vec<u8>,
}

impl StreamHeader {
    /// Serializes the header (prefix, body, CRC).
    pub fn to_bytes(&self) -> Vec<u8> {
        let flags = if self.tensors.iter().any(|t| t.precision != Precision::F32) { FLAG_PRECISION } else { 0 };
        let mut b = Vec::new();
        b.extend_from_slice(&self.weights_hash);
        b.extend_from_slice(&self.base_hash);
        b.push(self.stages.len() as u8);
        for s in &self.stages {
            b.push(s.kind.code());
            b.push(s.bits);
        }
        b.extend_from_slice(&(self.tensors.len() as u32).to_le_bytes());
        for t in &self.tensors {
            b.extend_from_slice(&(t.name.len() as u16).to_le_bytes());
            b.extend_from_slice(t.name.as_bytes());
            b.push(t.dims.len() as u8);
            for &d in &t.dims {
                b.extend_from_slice(&(d as u32).to_le_bytes());
            }
            for v in [t.grid.rows, t.grid.cols, t.grid.block_rows, t.grid.block_cols] {
                b.extend_from_slice(&(v as u32).to_le_bytes());
            }
            b.extend_from_slice(&t.hash);
            if flags & FLAG_PRECISION != 0 {
                b.push(t.precision.code());
            }
        }
        b.extend_from_slice(&self.chunk_count.to_le_bytes());
        for d in &self.chunk_digests {
            b.extend_from_slice(d);
        }
        let mut out = Vec::with_capacity(HEADER_PREFIX + b.len() + 4);
        out.extend_from_slice(&STREAM_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(&b);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Validates the fixed prefix and returns the total header length.
    pub fn total_len(prefix: &[u8; HEADER_PREFIX]) -> Result<usize> {
        if prefix[..4] != STREAM_MAGIC {
            return Err(Error::Header(format!("bad magic {:02x?}: not a p2u stream", &prefix[..4])));
        }
        let version = u16::from_le_bytes([prefix[4], prefix[5]]);
        if version != FORMAT_VERSION {
            return Err(Error::Header(format!("format version {version}, this build reads version {FORMAT_VERSION}")));
        }
        let flags = u16::from_le_bytes([prefix[6], prefix[7]]);
        if flags & !FLAG_PRECISION != 0 {
            return Err(Error::Header(format!("header flags {flags:#06x}: this build knows only {FLAG_PRECISION:#06x} (per-tensor precision)")));
        }
        let len = u32::from_le_bytes(prefix[8..12].try_into().expect("4 bytes")) as usize;
        if len > MAX_HEADER_BYTES {
            return Err(Error::Header(format!("header claims {len} bytes (limit {MAX_HEADER_BYTES})")));
        }
        Ok(HEADER_PREFIX + len + 4)
    }

    /// Parses a complete header (as sized by [`StreamHeader::total_len`]).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let prefix: &[u8; HEADER_PREFIX] = bytes
            .get(..HEADER_PREFIX)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| Error::Truncated("stream shorter than its header prefix".into()))?;
        let total = Self::total_len(prefix)?;
        let flags = u16::from_le_bytes([prefix[6], prefix[7]]);
        if bytes.len() < total {
            return Err(Error::Truncated(format!("header needs {total} bytes, have {}", bytes.len())));
        }
        let body = &bytes[HEADER_PREFIX..total - 4];
        let crc = u32::from_le_bytes(bytes[total - 4..total].try_into().expect("4 bytes"));
        if crc32fast::hash(&bytes[..total - 4]) != crc {
            return Err(Error::Header("header checksum mismatch (corrupt header)".into()));
        }
        let mut r = Reader { b: body, pos: 0 };
        let weights_hash = r.hash()?;
        let base_hash = r.hash()?;
        let n_stages = r.u8()? as usize;
        if n_stages < 2 {
            return Err(Error::Header(format!("{n_stages} stages: need the base and at least one more")));
        }
        let mut stages = Vec::with_capacity(n_stages);
        for i in 0..n_stages {
            let kind = StageKind::from_code(r.u8()?)?;
            let bits = r.u8()?;
            let want = match i {
                0 => kind == StageKind::Base && (1..=MAX_BITS).contains(&bits),
                _ if i == n_stages - 1 => kind == StageKind::Exact && bits == 0,
                _ => kind == StageKind::Refine && (2..=MAX_BITS).contains(&bits),
            };
            if !want {
                return Err(Error::Header(format!("stage {i}: {} with {bits} bits is not allowed there", kind.name())));
            }
            stages.push(Stage { kind, bits });
        }
        let n_tensors = r.u32()? as usize;
        // each entry takes at least 2+1+16+32 bytes: bound the count before allocating
        if n_tensors > r.remaining() / 51 {
            return Err(Error::Header(format!("header claims {n_tensors} tensors, far more than its size holds")));
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name_len = r.u16()? as usize;
            let name = String::from_utf8(r.take(name_len)?.to_vec()).map_err(|_| Error::Header("tensor name is not UTF-8".into()))?;
            let rank = r.u8()? as usize;
            if rank > MAX_RANK {
                return Err(Error::Header(format!("tensor {name:?}: rank {rank} (limit {MAX_RANK})")));
            }
            let dims = (0..rank).map(|_| r.u32().map(|d| d as usize)).collect::<Result<Vec<_>>>()?;
            let g = [r.u32()?, r.u32()?, r.u32()?, r.u32()?].map(|v| v as usize);
            let grid = Grid { rows: g[0], cols: g[1], block_rows: g[2], block_cols: g[3] };
            let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
            if n == 0
                || n > MAX_TENSOR_ELEMENTS
                || grid.rows.checked_mul(grid.cols) != Some(n)
                || !(1..=grid.rows).contains(&grid.block_rows)
                || !(1..=grid.cols).contains(&grid.block_cols)
            {
                return Err(Error::Header(format!("tensor {name:?}: shape {dims:?} with grid {grid:?} is invalid")));
            }
            let hash = r.hash()?;
            let precision = if flags & FLAG_PRECISION != 0 {
                let code = r.u8()?;
                Precision::from_code(code).ok_or_else(|| Error::Header(format!("tensor {name:?}: unknown precision code {code}")))?
            } else {
                Precision::F32
            };
            tensors.push(TensorEntry { name, dims, grid, hash, precision });
        }
        let chunk_count = r.u32()?;
        if chunk_count as usize != n_tensors * (n_stages - 1) {
            return Err(Error::Header(format!(
                "{chunk_count} chunks announced; {n_tensors} tensors × {} stages need {}",
                n_stages - 1,
                n_tensors * (n_stages - 1)
            )));
        }
        if r.remaining() != chunk_count as usize * 32 {
            return Err(Error::Header(format!(
                "{} bytes after the tensor table; {chunk_count} chunk digests need {}",
                r.remaining(),
                chunk_count as usize * 32
            )));
        }
        let chunk_digests = (0..chunk_count).map(|_| r.hash()).collect::<Result<Vec<_>>>()?;
        Ok(StreamHeader { weights_hash, base_hash, stages, tensors, chunk_count, chunk_digests })
    }

    /// Checks a chunk's header fields against the table; returns the
    /// smallest and largest payload length it may have.
    pub fn payload_bounds(&self, tensor: u32, stage: u8, bits: u8) -> Result<(usize, usize)> {
        let t = self
            .tensors
            .get(tensor as usize)
            .ok_or_else(|| Error::Corrupt(format!("tensor index {tensor} (the table has {})", self.tensors.len())))?;
        let s = self
            .stages
            .get(stage as usize)
            .filter(|_| stage >= 1)
            .ok_or_else(|| Error::Corrupt(format!("stage {stage} (stream has stages 1..{})", self.stages.len() - 1)))?;
        if s.bits != bits {
            return Err(Error::Corrupt(format!("stage {stage} has {} bits, chunk says {bits}", s.bits)));
        }
        let (groups, n) = (t.grid.groups() * 4, t.grid.len());
        Ok(match s.kind {
            StageKind::Exact => (groups, groups + 5 * n + 16),
            _ => {
                let min = groups + packed_len(n, bits) + 4;
                (min, min + 8 * n)
            }
        })
    }
}

impl Chunk {
    /// Bytes the serialized chunk takes in the stream (prefix, payload, CRC).
    pub fn frame_len(&self) -> usize {
        CHUNK_PREFIX + self.payload.len() + 4
    }

    /// Serializes the chunk (prefix, payload, CRC).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.frame_len());
        out.extend_from_slice(&CHUNK_MAGIC);
        out.extend_from_slice(&self.tensor.to_le_bytes());
        out.push(self.stage);
        out.push(self.bits);
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(&crc32fast::hash(&out[4..]).to_le_bytes());
        out
    }
}

/// Parses a stream from byte slices of any size, as they arrive from a
/// network. Holds at most one incomplete header or chunk in memory, and
/// hashes a chunk's bytes as they come (each call to
/// [`FrameReader::next_frame`] hashes only what arrived since the last), so
/// checking a chunk's digest costs no long pause when it completes.
#[derive(Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    consumed: u64,
    header: Option<StreamHeader>,
    header_sha256: Option<Hash>,
    chunks_read: u64,
    poisoned: Option<String>,
    digest: ChunkHasher,
    digested: usize,
}

/// A complete unit read from the stream.
#[derive(Debug)]
pub enum Frame {
    /// The header (always first).
    Header(StreamHeader),
    /// A chunk, with its position.
    Chunk {
        /// The chunk.
        chunk: Chunk,
        /// Its index in the stream.
        index: u64,
        /// Byte offset of its first byte.
        offset: u64,
    },
}

impl FrameReader {
    /// A reader at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// A reader continuing a stream whose `header` (with its SHA-256) was
    /// read and whose first `chunks_read` chunks end at byte `consumed`:
    /// where a download starts again after a failure.
    pub fn resume(header: StreamHeader, header_sha256: Hash, consumed: u64, chunks_read: u64) -> Self {
        FrameReader { consumed, header: Some(header), header_sha256: Some(header_sha256), chunks_read, ..Self::default() }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Stream bytes fully parsed so far (the offset to resume from).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Stream bytes received so far, parsed or not (where a resumed
    /// download continues).
    pub fn received(&self) -> u64 {
        self.consumed + self.buf.len() as u64
    }

    /// Marks the stream failed for a reason found outside the reader (a
    /// frame that parsed but could not be applied).
    pub fn fail(&mut self, reason: String) {
        self.poisoned.get_or_insert(reason);
    }

    /// The header, once read.
    pub fn header(&self) -> Option<&StreamHeader> {
        self.header.as_ref()
    }

    /// SHA-256 of the header's bytes (prefix through CRC), once read: what
    /// a manifest's `stream.header_sha256` names.
    pub fn header_sha256(&self) -> Option<Hash> {
        self.header_sha256
    }

    /// Errors if an earlier frame failed (the stream cannot be resynced).
    pub fn check(&self) -> Result<()> {
        match &self.poisoned {
            Some(reason) => Err(Error::Invalid(format!("stream already failed: {reason}"))),
            None => Ok(()),
        }
    }

    /// Returns the next complete frame, `None` if more bytes are needed.
    /// After an error the reader stays failed (the stream cannot be resynced).
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        self.check()?;
        let r = self.next_frame_inner();
        if let Err(e) = &r {
            self.poisoned = Some(e.to_string());
        }
        r
    }

    fn next_frame_inner(&mut self) -> Result<Option<Frame>> {
        let Some(header) = &self.header else {
            if self.buf.len() < HEADER_PREFIX {
                return Ok(None);
            }
            let prefix: [u8; HEADER_PREFIX] = self.buf[..HEADER_PREFIX].try_into().expect("sized");
            let total = StreamHeader::total_len(&prefix)?;
            if self.buf.len() < total {
                return Ok(None);
            }
            let h = StreamHeader::parse(&self.buf[..total])?;
            self.header_sha256 = Some(sha256(&self.buf[..total]));
            self.eat(total);
            self.header = Some(h.clone());
            return Ok(Some(Frame::Header(h)));
        };
        if self.buf.len() < CHUNK_PREFIX {
            return Ok(None);
        }
        let (index, offset) = (self.chunks_read, self.consumed);
        let bad = |reason: String| Error::chunk(index, offset, Error::Corrupt(reason));
        if index >= header.chunk_count as u64 {
            return Err(bad(format!("data after the {} announced chunks", header.chunk_count)));
        }
        let p = &self.buf[..CHUNK_PREFIX];
        if p[..4] != CHUNK_MAGIC {
            return Err(bad(format!("bad chunk magic {:02x?}", &p[..4])));
        }
        let tensor = u32::from_le_bytes(p[4..8].try_into().expect("4"));
        let (stage, bits) = (p[8], p[9]);
        let reserved = u16::from_le_bytes([p[10], p[11]]);
        if reserved != 0 {
            return Err(bad(format!("reserved field is {reserved:#06x}, must be 0")));
        }
        let len = u32::from_le_bytes(p[12..16].try_into().expect("4")) as usize;
        let (min, max) = header.payload_bounds(tensor, stage, bits).map_err(|e| Error::chunk(index, offset, e))?;
        if len < min || len > max {
            return Err(bad(format!("payload of {len} bytes, expected {min}..={max}")));
        }
        let total = CHUNK_PREFIX + len + 4;
        let upto = total.min(self.buf.len());
        self.digest.update(&self.buf[self.digested..upto]);
        self.digested = upto;
        if self.buf.len() < total {
            return Ok(None);
        }
        let crc = u32::from_le_bytes(self.buf[total - 4..total].try_into().expect("4"));
        if crc32fast::hash(&self.buf[4..total - 4]) != crc {
            return Err(bad("checksum mismatch (corrupt chunk)".into()));
        }
        let digest: Hash = std::mem::take(&mut self.digest).finalize().into();
        if digest != header.chunk_digests[index as usize] {
            return Err(Error::chunk(
                index,
                offset,
                Error::Mismatch(format!(
                    "chunk for tensor {tensor} stage {stage} is not the stream's chunk #{index} (its digest differs from the header's): \
                     spliced from another encode, reordered, or forged"
                )),
            ));
        }
        let payload = self.buf[CHUNK_PREFIX..CHUNK_PREFIX + len].to_vec();
        self.eat(total);
        self.chunks_read += 1;
        Ok(Some(Frame::Chunk { chunk: Chunk { tensor, stage, bits, payload }, index, offset }))
    }

    fn eat(&mut self, n: usize) {
        self.buf.drain(..n);
        self.consumed += n as u64;
        self.digested = 0;
    }

    /// Call at end of input: errors if the stream stopped early.
    pub fn finish(&self) -> Result<()> {
        let Some(h) = &self.header else {
            return Err(Error::Truncated(format!("stream ended after {} bytes, inside the header", self.buf.len())));
        };
        if self.chunks_read < h.chunk_count as u64 || !self.buf.is_empty() {
            return Err(Error::Truncated(format!(
                "stream ended at byte {} after {} of {} chunks",
                self.consumed + self.buf.len() as u64,
                self.chunks_read,
                h.chunk_count
            )));
        }
        Ok(())
    }
}

/// Parses a complete stream held in memory into its header and chunks
/// (for tools; a live download goes through [`FrameReader`] piece by piece).
pub fn read_all(stream: &[u8]) -> Result<(StreamHeader, Vec<Chunk>)> {
    let mut reader = FrameReader::new();
    reader.push(stream);
    let mut header = None;
    let mut chunks = vec![];
    while let Some(frame) = reader.next_frame()? {
        match frame {
            Frame::Header(h) => header = Some(h),
            Frame::Chunk { chunk, .. } => chunks.push(chunk),
        }
    }
    reader.finish()?;
    Ok((header.expect("finish() succeeds only after the header"), chunks))
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self
            .b
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or_else(|| Error::Header(format!("field of {n} bytes runs past the header end")))?;
        self.pos += n;
        Ok(s)
    }
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn hash(&mut self) -> Result<Hash> {
        Ok(self.take(32)?.try_into().expect("32"))
    }
}
