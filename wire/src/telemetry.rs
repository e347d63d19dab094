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
