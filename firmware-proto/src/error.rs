//! Errors of [`encode`](crate::encode) and [`Decoder`](crate::Decoder).

use core::fmt;

/// Everything that can go wrong encoding or decoding a frame.
///
/// Decoding errors carry `offset`, the position in the byte stream (counted from the first
/// byte ever fed to the [`Decoder`](crate::Decoder)) of the first byte of the bad frame, and
/// where known `len`, the frame's length on the wire without its `0x00` delimiter. After any
/// decoding error the decoder has already resynchronised: the next frame after the next `0x00`
/// decodes normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// [`encode`](crate::encode): the output buffer cannot hold the frame. A buffer of
    /// [`MAX_FRAME`](crate::MAX_FRAME) bytes always can.
    BufferTooSmall,
    /// [`encode`](crate::encode): the serialized message does not fit in
    /// [`MAX_CONTENT`](crate::MAX_CONTENT). Cannot happen with this version's messages.
    MessageTooLarge,
    /// The frame ended (`0x00`) in the middle of a COBS block: bytes were lost or inserted.
    Cobs {
        /// Stream offset of the frame's first byte.
        offset: u64,
        /// Frame length on the wire, without the delimiter.
        len: usize,
    },
    /// The frame decoded to fewer bytes than a version byte and a CRC.
    TooShort {
        /// Stream offset of the frame's first byte.
        offset: u64,
        /// Frame length on the wire, without the delimiter.
        len: usize,
    },
    /// The CRC-32C at the end of the frame does not match its content.
    Crc {
        /// Stream offset of the frame's first byte.
        offset: u64,
        /// Frame length on the wire, without the delimiter.
        len: usize,
        /// The CRC the frame carries.
        received: u32,
        /// The CRC of the frame's content.
        computed: u32,
    },
    /// The frame is intact but encoded with a protocol version this crate does not speak
    /// (answer [`NackReason::VersionMismatch`](crate::NackReason::VersionMismatch)).
    Version {
        /// Stream offset of the frame's first byte.
        offset: u64,
        /// The version byte the frame carries.
        version: u8,
    },
    /// The frame is intact and of our version, but its body is not a valid message: unknown
    /// variant, invalid UTF-8, a string over capacity, or a truncated body.
    Decode {
        /// Stream offset of the frame's first byte.
        offset: u64,
        /// Frame length on the wire, without the delimiter.
        len: usize,
    },
    /// The frame decodes to more than the decoder's buffer holds. Reported as soon as the
    /// buffer overflows; the rest of the frame, up to the next `0x00`, is skipped unbuffered.
    Oversized {
        /// Stream offset of the frame's first byte.
        offset: u64,
        /// The decoder's buffer size `N`, in decoded bytes.
        limit: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::BufferTooSmall => f.write_str("output buffer too small for the frame"),
            Error::MessageTooLarge => f.write_str("message larger than the maximum frame"),
            Error::Cobs { offset, len } => {
                write!(f, "invalid COBS in the {len}-byte frame at offset {offset}")
            }
            Error::TooShort { offset, len } => {
                write!(f, "{len}-byte frame at offset {offset} is too short")
            }
            Error::Crc {
                offset,
                len,
                received,
                computed,
            } => write!(
                f,
                "CRC mismatch in the {len}-byte frame at offset {offset} \
                 (frame has {received:#010x}, content gives {computed:#010x})"
            ),
            Error::Version { offset, version } => {
                write!(
                    f,
                    "unsupported protocol version {version} in the frame at offset {offset}"
                )
            }
            Error::Decode { offset, len } => {
                write!(
                    f,
                    "undecodable message in the {len}-byte frame at offset {offset}"
                )
            }
            Error::Oversized { offset, limit } => write!(
                f,
                "frame at offset {offset} exceeds the {limit}-byte decoder buffer; skipped"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
