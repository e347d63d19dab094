//! Telemetry batches: a compact, versioned, compressed binary encoding of readings.
//!
//! PRELIMINARY: the format is being designed (columnar, delta-encoded, zstd) and will be
//! documented byte by byte in `docs/protocol.md`.

use crate::Reading;

/// Format version, the second byte of every batch.
pub const FORMAT_VERSION: u8 = 1;

/// Why a batch cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// postcard failed (only on an internal bug).
    #[error("encoding failed: {0}")]
    Postcard(#[from] postcard::Error),
}

/// Why bytes are not a valid batch.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Body does not decode.
    #[error("body does not decode: {0}")]
    Postcard(#[from] postcard::Error),
}

/// Encodes readings into one batch payload.
///
/// # Errors
/// See [`EncodeError`].
pub fn encode(readings: &[Reading]) -> Result<Vec<u8>, EncodeError> {
    Ok(postcard::to_stdvec(readings)?)
}

/// Decodes a batch payload.
///
/// # Errors
/// See [`DecodeError`].
pub fn decode(bytes: &[u8]) -> Result<Vec<Reading>, DecodeError> {
    Ok(postcard::from_bytes(bytes)?)
}

// STAND-IN (branch wip-pipeline): the batcher needs these two items of the shared contract
// before the wire branch lands. They bound the preliminary postcard encoding above; at merge
// the wire branch's definitions replace this block.

/// Longest postcard varint (a `u64`/`usize` length or a zig-zag `i64`).
const VARINT_MAX: usize = 10;

/// Upper bound of the bytes a batch adds beyond its readings (the sequence length prefix).
pub const BATCH_OVERHEAD_BOUND: usize = VARINT_MAX;

/// Upper bound of the bytes `r` adds to an encoded batch, so that
/// `encode(rs).len() <= BATCH_OVERHEAD_BOUND + Σ reading_size_bound(r)`.
pub fn reading_size_bound(r: &Reading) -> usize {
    let string = |len: usize| VARINT_MAX + len;
    let value = match &r.value {
        crate::Value::Num(_) => 8,
        crate::Value::Bool(_) => 1,
        crate::Value::Text(t) => string(t.len()),
    };
    string(r.signal.len()) + value + string(r.unit.len()) + VARINT_MAX + string(r.source.len())
}
