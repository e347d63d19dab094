//! Telemetry batches: the compact, versioned, compressed binary encoding of [`Reading`]s that
//! the gateway publishes and the bridge decodes.
//!
//! The format is specified byte by byte in `docs/telemetry-format.md` and pinned by
//! `wire/tests/golden.rs`. In short:
//!
//! ```text
//! payload = "WT" | version u8 | compression u8 | body_len varint | crc32c(body) u32 LE | wire body
//! body    = base_time | string table | series*          (wire body = body, or zstd(body))
//! series  = signal/unit/source refs | codec byte | count | times (delta-of-delta) | values
//! values  = decimal: step | first mantissa | (differences / step) or their differences
//!         | float: XOR with the previous bits, non-zero bytes only | bool: bits | text: refs
//! ```
//!
//! # Invariants
//!
//! - **Lossless.** `decode(&encode(rs)?)` returns exactly the readings of `rs` (floats equal bit
//!   for bit, NaN payloads and `-0.0` included), **grouped by series**: a series is the tuple
//!   (signal, unit, source, value type); series come in the order of their first reading in `rs`
//!   and each series keeps the order its readings had in `rs`. Readings of different series are
//!   not interleaved again. When every series of `rs` is already contiguous (or `rs` has one
//!   series), the output equals `rs`.
//! - **Size bound.** A successful `encode(rs)` (and [`encode_uncompressed`]) returns at most
//!   [`BATCH_OVERHEAD_BOUND`] `+ Σ` [`reading_size_bound`]`(r)` bytes. The batcher relies on
//!   this to keep a batch under `batch_max_bytes` without encoding it first. Proof below, checked
//!   by a property test.
//! - **Bounded decode.** [`decode`] never panics, rejects a declared body larger than
//!   [`MAX_BODY_BYTES`] before allocating or decompressing, verifies a CRC-32C of the body before
//!   interpreting it, and checks every count against its limit and the bytes left before
//!   allocating for it. Whatever the input, it holds at most the body (4 MiB), the string
//!   table's slices (≤ 4 MiB), the output vector (`MAX_READINGS × size_of::<Reading>()`,
//!   ≈ 6.5 MiB), the output strings ([`MAX_DECODED_TEXT_BYTES`], 16 MiB, plus allocator
//!   overhead for ≤ 4 × 65 536 allocations) and a zstd context: about 35 MiB in the worst case,
//!   a few hundred kilobytes for real batches.
//! - **Deterministic.** The same readings always give the same body (and, for a given zstd
//!   library version, the same payload); the decoder rejects overlong varints and non-zero
//!   padding, so a body has no redundant encodings of a field.
//!
//! # Size bound proof
//!
//! Let the payload be `header ‖ wire_body`. The header is at most 2 (magic) + 1 (version) + 1
//! (compression) + 4 (`body_len` varint, since `body_len ≤ MAX_BODY_BYTES = 2²²` < 2²⁸) + 4
//! (CRC) = 12 bytes. The wire body is the body itself, or its zstd frame when that is strictly
//! shorter, so `wire_body ≤ body`. The body consists of:
//!
//! 1. `base_time` (zigzag varint of an `i64`, ≤ 10 bytes), the string count and the series
//!    count (each `≤ MAX_STRINGS < 2²¹`, so ≤ 3 bytes): ≤ 16 bytes in total.
//!    Hence `BATCH_OVERHEAD_BOUND = 12 + 16 = 28`.
//! 2. One string-table entry (`varint(len) ‖ bytes`) per distinct string that is not built in.
//!    Charge it to the first reading that uses it as signal, unit, source or text: that reading's
//!    bound contains `varint_len(len) + len` for each of its non-built-in strings.
//! 3. Per series, a header of three string refs (each `< BUILTIN + MAX_STRINGS < 2²¹`, ≤ 3
//!    bytes), one codec byte, the count (`≤ MAX_READINGS < 2²¹`, ≤ 3 bytes) and, for the
//!    decimal codecs, the step (`< 2²¹`, ≤ 3 bytes): ≤ 16 bytes, charged to the first reading
//!    of the series. Every reading's bound contains 16.
//! 4. Per reading, one time varint (a zigzag `i64`, ≤ 10 bytes).
//! 5. Per reading, its value:
//!    - number, decimal codecs: mantissas satisfy `|m| ≤ 2⁵³`; the first is written as is
//!      (zigzag `≤ 2⁵⁴`, 8 bytes), then differences divided by the step (`|q| ≤ 2⁵⁴`) or
//!      differences of those (`≤ 2⁵⁵`), whose zigzag is `≤ 2⁵⁶` (57 bits), i.e. ≤ 9 varint
//!      bytes. Float codec: a control byte and at most 8 bytes, ≤ 9. So ≤ 9.
//!    - boolean: the bit column takes `⌈n/8⌉ ≤ n` bytes, ≤ 1 per reading.
//!    - text: a string ref (≤ 3 bytes) plus the string entry of step 2 if it is new.
//!
//! Summing, `body ≤ 16 + Σ reading_size_bound(r)`, and the payload is at most 12 bytes more.
//!
//! # Limits
//!
//! | limit | value | why |
//! |---|---|---|
//! | [`MAX_READINGS`] | 65 536 per batch | bounds decoder output; the batcher default is 2000 |
//! | [`MAX_SERIES`] | 65 536 per batch | a series has at least one reading |
//! | [`MAX_STRINGS`] | 262 144 per batch | ≤ 3 new strings per series + 1 per text reading |
//! | [`MAX_STRING_LEN`] | 1024 bytes | signal, unit, source and text values |
//! | [`MAX_BODY_BYTES`] | 4 MiB | uncompressed body; checked before decompressing |
//! | [`MAX_DECODED_TEXT_BYTES`] | 16 MiB | Σ per reading of signal + unit + source + text bytes |
//!
//! The encoder refuses a batch beyond any limit ([`EncodeError::Limit`]), so whatever it
//! produces, the decoder accepts.

mod builtin;
mod codec;
mod crc32c;
mod decode;
mod encode;
#[cfg(test)]
mod tests;

use crate::{Reading, Value};

/// Format version, the third byte of every batch (after the magic `"WT"`).
///
/// Bump it for any change of the byte layout, the codecs or the built-in string table.
pub const FORMAT_VERSION: u8 = 1;

/// The two bytes every batch starts with: ASCII `"WT"` (Waymark Telemetry).
pub const MAGIC: [u8; 2] = *b"WT";

/// Compression id (byte 3): the body follows the header as is.
pub const COMPRESSION_NONE: u8 = 0;

/// Compression id (byte 3): the body follows the header as one zstd frame (level 3).
pub const COMPRESSION_ZSTD: u8 = 1;

/// The zstd level the encoder uses.
pub const ZSTD_LEVEL: i32 = 3;

/// Most readings one batch may hold.
pub const MAX_READINGS: usize = 65_536;

/// Most series (distinct signal, unit, source and value type) one batch may hold.
pub const MAX_SERIES: usize = 65_536;

/// Most entries in a batch's string table (built-in strings are not counted).
pub const MAX_STRINGS: usize = 262_144;

/// Longest signal name, unit, source name or text value, in UTF-8 bytes.
pub const MAX_STRING_LEN: usize = 1024;

/// Largest uncompressed body a batch may declare; the decoder checks it before allocating.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Largest sum, over the readings of a batch, of the UTF-8 lengths of signal, unit, source and
/// text value: the string bytes a decoder allocates for its output.
pub const MAX_DECODED_TEXT_BYTES: usize = 16 * 1024 * 1024;

/// Bytes a batch needs beyond the sum of [`reading_size_bound`] of its readings (header, base
/// time, table and series counts). See the proof in the module documentation.
pub const BATCH_OVERHEAD_BOUND: usize = HEADER_BOUND + BODY_FIXED_BOUND;

/// Header: magic (2) + version (1) + compression (1) + body length varint (≤ 4) + CRC (4).
const HEADER_BOUND: usize = 2 + 1 + 1 + 4 + 4;
/// Body fields that exist once per batch: base time (≤ 10), string count (≤ 3), series count (≤ 3).
const BODY_FIXED_BOUND: usize = 10 + 3 + 3;
/// Series header: three string refs (≤ 3 each), codec byte, count (≤ 3), decimal step (≤ 3).
const SERIES_HEADER_BOUND: usize = 3 * 3 + 1 + 3 + 3;
/// One zigzag varint of an `i64`.
const TIME_BOUND: usize = 10;
/// One number, decimal or float codec.
const NUM_BOUND: usize = 9;
/// One string ref (< 2²¹).
const REF_BOUND: usize = 3;

/// Upper bound of the bytes `r` adds to an encoded batch, whatever else the batch holds.
///
/// `encode(rs)?.len() <= BATCH_OVERHEAD_BOUND + rs.iter().map(reading_size_bound).sum()`.
/// Built-in strings (common VSS signal names, units and source names, see
/// `docs/telemetry-format.md`) cost nothing here, so a GPS reading is bounded by 35 bytes.
pub fn reading_size_bound(r: &Reading) -> usize {
    let value = match &r.value {
        Value::Num(_) => NUM_BOUND,
        Value::Bool(_) => 1,
        Value::Text(t) => REF_BOUND + string_entry_bound(t),
    };
    SERIES_HEADER_BOUND
        + TIME_BOUND
        + value
        + string_entry_bound(&r.signal)
        + string_entry_bound(&r.unit)
        + string_entry_bound(&r.source)
}

/// Bytes `s` takes in the string table if it is not built in.
fn string_entry_bound(s: &str) -> usize {
    if builtin::lookup(s).is_some() {
        0
    } else {
        codec::varint_len(s.len() as u64) + s.len()
    }
}

/// Encodes readings into one batch payload, zstd-compressed when that makes it smaller.
///
/// # Errors
/// [`EncodeError::Limit`] when the batch exceeds one of the documented limits.
pub fn encode(readings: &[Reading]) -> Result<Vec<u8>, EncodeError> {
    encode::encode(readings, true)
}

/// Encodes readings into one batch payload without compression (compression id 0).
///
/// For tests, debugging and links where CPU matters more than bytes; the size bound holds.
///
/// # Errors
/// [`EncodeError::Limit`] when the batch exceeds one of the documented limits.
pub fn encode_uncompressed(readings: &[Reading]) -> Result<Vec<u8>, EncodeError> {
    encode::encode(readings, false)
}

/// Decodes a batch payload into readings grouped by series (see the module invariants).
///
/// # Errors
/// A [`DecodeError`] naming the section, byte offset and field where the payload is invalid.
pub fn decode(bytes: &[u8]) -> Result<Vec<Reading>, DecodeError> {
    decode::decode(bytes)
}

/// Rounds `v` to `decimals` decimal places (at most 9), giving the `f64` nearest to that
/// decimal, which the decimal codec stores in a few bytes.
///
/// Sources should apply it with the resolution of the signal: a CAN decoder computing
/// `raw * 0.4` gets `1.2000000000000002` for raw 3, which no decimal scale reproduces, so the
/// whole series falls back to the 8-byte float codec; `round_decimal(raw * 0.4, 1)` is `1.2`.
/// Values that are not finite, `decimals > 9`, or magnitudes beyond `2⁵³ / 10^decimals` are
/// returned unchanged.
pub fn round_decimal(v: f64, decimals: u8) -> f64 {
    let Some(&p) = encode::POW10.get(usize::from(decimals)) else {
        return v;
    };
    let x = (v * p).round();
    if x.is_nan() || x.abs() > encode::MAX_MANTISSA as f64 {
        return v;
    }
    x / p
}

/// Why a batch cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The batch exceeds a documented limit (too many readings, a string longer than
    /// [`MAX_STRING_LEN`], more than [`MAX_DECODED_TEXT_BYTES`] of strings, or a body larger
    /// than [`MAX_BODY_BYTES`]). Split the batch or shorten the strings.
    #[error("{what} is {value}, above the limit of {max}")]
    Limit {
        /// Which limit: `"readings"`, `"signal length"`, `"decoded text bytes"`, ...
        what: &'static str,
        /// The offending value.
        value: u64,
        /// The limit.
        max: u64,
    },
}

/// Which part of the payload a [`DecodeError`] offset refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The uncompressed header; offsets count from the first byte of the payload.
    Header,
    /// The (decompressed) body; offsets count from its first byte.
    Body,
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Section::Header => "payload",
            Section::Body => "body",
        })
    }
}

/// Why bytes are not a valid batch. Every variant that concerns a field names it and the byte
/// offset where it starts.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The input ends inside `field`, which starts at `offset`.
    #[error("truncated: {field} at {section} byte {offset} is incomplete")]
    Truncated {
        /// Header or body.
        section: Section,
        /// Where the field starts.
        offset: usize,
        /// The field's name in `docs/telemetry-format.md`.
        field: &'static str,
    },
    /// The payload does not start with [`MAGIC`]: it is not a telemetry batch.
    #[error("not a telemetry batch: magic is {found:02x?}, expected \"WT\"")]
    BadMagic {
        /// The first two bytes.
        found: [u8; 2],
    },
    /// The version byte is not [`FORMAT_VERSION`]: the batch comes from a newer or older
    /// encoder that this decoder does not speak.
    #[error("unsupported telemetry format version {found} (this decoder speaks {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// The version byte.
        found: u8,
    },
    /// The compression byte is neither [`COMPRESSION_NONE`] nor [`COMPRESSION_ZSTD`].
    #[error("unknown compression id {found} at payload byte 3")]
    UnknownCompression {
        /// The compression byte.
        found: u8,
    },
    /// A varint is longer than 10 bytes, overflows 64 bits, or is not in its shortest form.
    #[error("malformed varint: {field} at {section} byte {offset}")]
    Varint {
        /// Header or body.
        section: Section,
        /// Where the varint starts.
        offset: usize,
        /// The field's name.
        field: &'static str,
    },
    /// A count or length is above its documented limit (or above what the remaining bytes
    /// could hold), so the decoder refuses it before allocating.
    #[error("{field} at {section} byte {offset} is {value}, above the limit of {max}")]
    Limit {
        /// Header or body.
        section: Section,
        /// Where the field starts.
        offset: usize,
        /// The field's name.
        field: &'static str,
        /// The decoded value.
        value: u64,
        /// The limit it exceeds.
        max: u64,
    },
    /// The zstd frame after the header does not decompress into at most `body_len` bytes.
    #[error("zstd body starting at payload byte {offset} does not decompress")]
    Decompress {
        /// Where the zstd frame starts in the payload (right after the header).
        offset: usize,
        /// zstd's error.
        #[source]
        source: std::io::Error,
    },
    /// The body (as stored or decompressed) is not exactly `body_len` bytes long.
    #[error("body is {actual} bytes, header declares {declared}")]
    BodyLength {
        /// `body_len` from the header.
        declared: usize,
        /// What the payload actually holds.
        actual: usize,
    },
    /// The body's CRC-32C differs from the header's: the payload was corrupted.
    #[error("body checksum mismatch: header says {declared:#010x}, body has {computed:#010x}")]
    Checksum {
        /// CRC from the header.
        declared: u32,
        /// CRC of the body received.
        computed: u32,
    },
    /// A body field has a value the format does not allow (a string ref past the table, an
    /// unknown codec, invalid UTF-8, a mantissa beyond 2⁵³, non-zero padding bits, trailing
    /// bytes, ...). With a valid checksum this means a faulty or hostile encoder.
    #[error("invalid {field} at body byte {offset}: {reason}")]
    Invalid {
        /// Where the field starts in the body.
        offset: usize,
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}
