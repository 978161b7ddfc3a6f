//! Typed errors. Every error names what it was looking at (tensor, chunk,
//! offset) so that a failed load or a rejected chunk can be explained to a user.

use thiserror::Error;

/// Everything that can go wrong in p2u.
#[derive(Debug, Error)]
pub enum Error {
    /// The ONNX protobuf could not be decoded or is structurally wrong.
    #[error("invalid ONNX model: {0}")]
    Onnx(String),
    /// The model uses something the encoder does not support; names the tensor or node.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A `.p2u` stream header is malformed (bad magic, version, absurd sizes…).
    #[error("invalid p2u stream header: {0}")]
    Header(String),
    /// A chunk was rejected; the model keeps its last good stage. The
    /// kind is the cause's ([`Error::kind`]): a spliced chunk is a
    /// `mismatch`, a bit flip `corrupt`.
    #[error("rejected chunk #{index} at byte {offset}: {source}")]
    Chunk {
        /// Position of the chunk in the stream (0-based).
        index: u64,
        /// Byte offset of the chunk start in the stream.
        offset: u64,
        /// What was wrong.
        #[source]
        source: Box<Error>,
    },
    /// Data that fails its own checks (checksum, value ranges, a payload
    /// that does not decode, a base that is not a sane model): damaged or
    /// hostile bytes, not a caller's mistake.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The stream ended in the middle of a header or chunk.
    #[error("stream truncated: {0}")]
    Truncated(String),
    /// The stream or base belongs to another model (hash mismatch).
    #[error("mismatched stream: {0}")]
    Mismatch(String),
    /// A chunk was applied out of order (its predecessor stage is missing).
    #[error("out-of-order chunk: {0}")]
    Order(String),
    /// The inference engine (tract) failed.
    #[error("inference engine: {0}")]
    Engine(String),
    /// Caller passed an invalid argument (input shape, stage number…).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Filesystem or I/O error with the path involved.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (usually a path).
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Every value [`Error::kind`] returns, for bindings (the JS
    /// `P2uErrorKind` type lists the same, a test keeps them in step).
    pub const KINDS: [&'static str; 10] =
        ["onnx", "unsupported", "header", "corrupt", "truncated", "mismatch", "order", "engine", "invalid", "io"];

    /// A short, stable name for the kind of error (for bindings that
    /// expose it as a field, e.g. the JS `P2uError.kind`). A rejected
    /// chunk has its cause's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Onnx(_) => "onnx",
            Error::Unsupported(_) => "unsupported",
            Error::Header(_) => "header",
            Error::Corrupt(_) => "corrupt",
            Error::Chunk { source, .. } => source.kind(),
            Error::Truncated(_) => "truncated",
            Error::Mismatch(_) => "mismatch",
            Error::Order(_) => "order",
            Error::Engine(_) => "engine",
            Error::Invalid(_) => "invalid",
            Error::Io { .. } => "io",
        }
    }

    /// A rejected chunk at `index`/`offset` caused by `source`.
    pub fn chunk(index: u64, offset: u64, source: Error) -> Self {
        Error::Chunk { index, offset, source: Box::new(source) }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

impl From<tract_onnx::prelude::TractError> for Error {
    fn from(e: tract_onnx::prelude::TractError) -> Self {
        Error::Engine(format!("{e:#}"))
    }
}
