//! Framing: `COBS([version][postcard body][CRC-32C LE]) 0x00`.
//!
//! Design notes:
//! - The *envelope* (version byte first, CRC-32C little-endian last, COBS, `0x00` delimiter)
//!   is the same in every protocol version; only the body between them may change. So the
//!   decoder checks the CRC before the version, and a frame from a newer peer is reported as
//!   [`Error::Version`], not as corruption.
//! - The decoder undoes COBS while bytes arrive, straight into its fixed `[u8; N]` buffer;
//!   nothing else grows. A frame that would decode to more than `N` bytes is reported once
//!   ([`Error::Oversized`]) and the rest of it is skipped without being stored.
//! - `0x00` never occurs inside a COBS frame, so every `0x00` is a frame boundary: after any
//!   error (or when the gateway starts listening mid-frame) decoding resumes at the next one.
//!   Empty frames (`0x00 0x00`) are ignored, so a device may send a lone `0x00` at boot to
//!   terminate whatever partial frame the gateway holds.
//! - Bytes after a complete message in the body are ignored, so a newer peer may append
//!   fields to a variant (see the README's evolution rules).

use crate::{Error, Message};
use crc::{CRC_32_ISCSI, Crc, Table};

/// Protocol version this crate encodes and the only one it decodes: the first byte of every
/// frame's content.
pub const PROTOCOL_VERSION: u8 = 1;

/// Maximum decoded frame content: version byte, postcard body and CRC. A
/// `Decoder<MAX_CONTENT>` accepts every frame [`encode`] can produce.
pub const MAX_CONTENT: usize = 250;

/// Maximum frame length on the wire, including COBS overhead and the `0x00` delimiter; an
/// output buffer of this size always suffices for [`encode`].
pub const MAX_FRAME: usize = 256;

/// Bytes of the CRC at the end of the content.
const CRC_LEN: usize = 4;
/// The smallest possible content: a version byte and a CRC (and an empty body, which no
/// message has, but that is for postcard to say).
const MIN_CONTENT: usize = 1 + CRC_LEN;
/// Largest postcard body.
const MAX_BODY: usize = MAX_CONTENT - MIN_CONTENT;

/// Worst-case COBS-encoded length of `n` bytes, plus the delimiter.
const fn max_wire_len(n: usize) -> usize {
    n + n / 254 + 1 + 1
}
const _: () = assert!(max_wire_len(MAX_CONTENT) <= MAX_FRAME);

/// CRC-32C (Castagnoli, as in iSCSI and ext4): detects every error of up to 3 bits in frames
/// of this size (Hamming distance 4 up to 2 KiB and more).
///
/// With `std` (the gateway) a 16 KiB slice-by-16 table, several times faster; without it (the
/// MCU) the classic 1 KiB table. Both compute the same CRC.
#[cfg(feature = "std")]
static CRC: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC_32_ISCSI);
/// CRC-32C (Castagnoli, as in iSCSI and ext4): detects every error of up to 3 bits in frames
/// of this size (Hamming distance 4 up to 2 KiB and more).
///
/// With `std` (the gateway) a 16 KiB slice-by-16 table, several times faster; without it (the
/// MCU) the classic 1 KiB table. Both compute the same CRC.
#[cfg(not(feature = "std"))]
static CRC: Crc<u32, Table<1>> = Crc::<u32, Table<1>>::new(&CRC_32_ISCSI);

/// Encodes `msg` as one frame, `0x00` delimiter included, into `out` and returns the written
/// part of `out`.
///
/// # Errors
/// [`Error::BufferTooSmall`] if `out` cannot hold the frame (a [`MAX_FRAME`]-byte buffer
/// always can); [`Error::MessageTooLarge`] if the message does not fit in [`MAX_CONTENT`].
pub fn encode<'a>(msg: &Message, out: &'a mut [u8]) -> Result<&'a [u8], Error> {
    encode_versioned(msg, PROTOCOL_VERSION, out)
}

/// [`encode`] with another version byte in the envelope: for simulators and tests that show
/// how a peer of another protocol version is treated (the receiver reports
/// [`Error::Version`]). Firmware uses [`encode`].
///
/// # Errors
/// As [`encode`].
pub fn encode_versioned<'a>(
    msg: &Message,
    version: u8,
    out: &'a mut [u8],
) -> Result<&'a [u8], Error> {
    let mut content = [0u8; MAX_CONTENT];
    content[0] = version;
    let body_len = {
        let body_buf = content
            .get_mut(1..1 + MAX_BODY)
            .ok_or(Error::MessageTooLarge)?;
        postcard::to_slice(msg, body_buf)
            .map_err(|_| Error::MessageTooLarge)?
            .len()
    };
    let crc_at = 1 + body_len;
    let crc = CRC.checksum(content.get(..crc_at).ok_or(Error::MessageTooLarge)?);
    content
        .get_mut(crc_at..crc_at + CRC_LEN)
        .ok_or(Error::MessageTooLarge)?
        .copy_from_slice(&crc.to_le_bytes());
    let content = content
        .get(..crc_at + CRC_LEN)
        .ok_or(Error::MessageTooLarge)?;
    let len = cobs_encode(content, out)?;
    out.get(..len).ok_or(Error::BufferTooSmall)
}

/// COBS-encodes `data` into `out`, appends the `0x00` delimiter, and returns the length.
fn cobs_encode(data: &[u8], out: &mut [u8]) -> Result<usize, Error> {
    let mut code_at = 0;
    let mut at = 1;
    let mut code: u8 = 1;
    for &byte in data {
        if byte != 0 {
            *out.get_mut(at).ok_or(Error::BufferTooSmall)? = byte;
            at += 1;
            code += 1;
        }
        if byte == 0 || code == 0xFF {
            *out.get_mut(code_at).ok_or(Error::BufferTooSmall)? = code;
            code_at = at;
            at += 1;
            code = 1;
        }
    }
    *out.get_mut(code_at).ok_or(Error::BufferTooSmall)? = code;
    *out.get_mut(at).ok_or(Error::BufferTooSmall)? = 0;
    Ok(at + 1)
}

/// Streaming frame decoder with a fixed `N`-byte buffer (decoded content); use
/// `Decoder<{MAX_CONTENT}>` unless memory is very tight.
///
/// Feed it bytes as they arrive, in any chunking, with [`feed`](Decoder::feed) or
/// [`push`](Decoder::push); it yields one `Result` per frame and never panics or allocates.
///
/// ```
/// use firmware_proto::{encode, Decoder, Message, MAX_CONTENT, MAX_FRAME};
///
/// let mut buf = [0u8; MAX_FRAME];
/// let frame = encode(&Message::Ack { device_seq: 7 }, &mut buf)?;
/// let mut decoder = Decoder::<MAX_CONTENT>::new();
/// let mut got = None;
/// for chunk in frame.chunks(3) {
///     for result in decoder.feed(chunk) {
///         got = Some(result?);
///     }
/// }
/// assert_eq!(got, Some(Message::Ack { device_seq: 7 }));
/// # Ok::<(), firmware_proto::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Decoder<const N: usize> {
    /// Decoded content of the frame in progress (`buf[..len]`).
    buf: [u8; N],
    /// Bytes of `buf` in use.
    len: usize,
    /// Data bytes still to come in the current COBS block; 0 when a code byte is next.
    block_left: u8,
    /// Whether the current COBS block ends with an implied zero (code < 0xFF); the zero is
    /// written only when another block follows, since the last one is not part of the data.
    zero_pending: bool,
    /// Skipping an oversized frame up to the next delimiter.
    skipping: bool,
    /// Stream offset of the next byte.
    offset: u64,
    /// Stream offset of the frame in progress.
    frame_start: u64,
}

impl<const N: usize> Default for Decoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Decoder<N> {
    /// A decoder at a frame boundary, at stream offset 0.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            block_left: 0,
            zero_pending: false,
            skipping: false,
            offset: 0,
            frame_start: 0,
        }
    }

    /// Total bytes fed so far (the stream offset of the next byte).
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Drops any partial frame; the next byte starts a new frame. For a link that was
    /// reopened, where the old partial frame cannot continue.
    pub fn reset(&mut self) {
        self.start_frame();
    }

    /// Decodes `bytes`; the iterator yields one `Result` per frame that ends (or overflows)
    /// in them. Bytes of an unfinished frame are kept for the next call. Dropping the
    /// iterator early leaves the bytes it did not reach unconsumed (they are not counted in
    /// [`offset`](Decoder::offset)).
    pub fn feed<'d, 'b>(&'d mut self, bytes: &'b [u8]) -> Feed<'d, 'b, N> {
        Feed {
            decoder: self,
            rest: bytes,
        }
    }

    /// Decodes one byte; `Some` when it completes (or overflows) a frame.
    pub fn push(&mut self, byte: u8) -> Option<Result<Message, Error>> {
        let mut input: &[u8] = &[byte];
        self.step(&mut input)
    }

    fn start_frame(&mut self) {
        self.len = 0;
        self.block_left = 0;
        self.zero_pending = false;
        self.skipping = false;
        self.frame_start = self.offset;
    }

    /// Consumes bytes from `input` until a frame completes or overflows, or `input` is empty.
    fn step(&mut self, input: &mut &[u8]) -> Option<Result<Message, Error>> {
        while let Some((&byte, rest)) = input.split_first() {
            if byte == 0 {
                *input = rest;
                let frame_start = self.frame_start;
                let wire_len = self.offset - frame_start;
                self.offset += 1;
                let outcome = if self.skipping || wire_len == 0 {
                    None
                } else {
                    Some(self.finish(frame_start, usize::try_from(wire_len).unwrap_or(usize::MAX)))
                };
                self.start_frame();
                if outcome.is_some() {
                    return outcome;
                }
                continue;
            }
            if self.skipping {
                // Skip up to the delimiter in one go.
                let skip = input.iter().position(|&b| b == 0).unwrap_or(input.len());
                *input = input.get(skip..).unwrap_or_default();
                self.offset += skip as u64;
                continue;
            }
            if self.block_left == 0 {
                // A code byte.
                *input = rest;
                self.offset += 1;
                if self.zero_pending && !self.put(0) {
                    return Some(Err(self.overflow()));
                }
                self.block_left = byte - 1;
                self.zero_pending = byte != 0xFF;
                continue;
            }
            // Data bytes of the current block: copy up to the block end, the input end, a
            // delimiter or the buffer end, whichever comes first (one pass, no separate scan).
            let avail = input.len().min(usize::from(self.block_left));
            let room = N - self.len;
            let limit = avail.min(room);
            let mut copied = 0;
            if let (Some(dst), Some(src)) = (
                self.buf.get_mut(self.len..self.len + limit),
                input.get(..limit),
            ) {
                for (slot, &byte) in dst.iter_mut().zip(src) {
                    if byte == 0 {
                        break;
                    }
                    *slot = byte;
                    copied += 1;
                }
            }
            self.len += copied;
            // `copied <= block_left` because `avail <= block_left`.
            self.block_left -= u8::try_from(copied).unwrap_or(self.block_left);
            self.offset += copied as u64;
            *input = input.get(copied..).unwrap_or_default();
            // The buffer is full, and the frame goes on with more data.
            if copied == room && copied < avail && input.first().is_some_and(|&b| b != 0) {
                return Some(Err(self.overflow()));
            }
        }
        None
    }

    /// Appends one decoded byte; `false` if the buffer is full.
    fn put(&mut self, byte: u8) -> bool {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = byte;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Switches to skipping the rest of the frame and returns the error to report.
    fn overflow(&mut self) -> Error {
        self.skipping = true;
        Error::Oversized {
            offset: self.frame_start,
            limit: N,
        }
    }

    /// Checks and decodes the completed frame in `buf[..len]`.
    fn finish(&self, offset: u64, len: usize) -> Result<Message, Error> {
        if self.block_left != 0 {
            return Err(Error::Cobs { offset, len });
        }
        let content = self.buf.get(..self.len).unwrap_or_default();
        let Some(crc_at) = content.len().checked_sub(CRC_LEN).filter(|&at| at >= 1) else {
            return Err(Error::TooShort { offset, len });
        };
        let (data, crc_bytes) = content.split_at(crc_at);
        let mut received = [0u8; CRC_LEN];
        received.copy_from_slice(crc_bytes);
        let received = u32::from_le_bytes(received);
        let computed = CRC.checksum(data);
        if received != computed {
            return Err(Error::Crc {
                offset,
                len,
                received,
                computed,
            });
        }
        let (&version, body) = data.split_first().ok_or(Error::TooShort { offset, len })?;
        if version != PROTOCOL_VERSION {
            return Err(Error::Version { offset, version });
        }
        postcard::take_from_bytes::<Message>(body)
            .map(|(msg, _appended)| msg)
            .map_err(|_| Error::Decode { offset, len })
    }
}

/// Iterator returned by [`Decoder::feed`]: one `Result` per frame.
#[derive(Debug)]
pub struct Feed<'d, 'b, const N: usize> {
    /// The decoder the bytes go into.
    decoder: &'d mut Decoder<N>,
    /// Bytes not yet consumed.
    rest: &'b [u8],
}

impl<const N: usize> Feed<'_, '_, N> {
    /// Bytes not consumed yet (empty once the iterator has returned `None`).
    #[must_use]
    pub fn remaining(&self) -> &[u8] {
        self.rest
    }
}

impl<const N: usize> Iterator for Feed<'_, '_, N> {
    type Item = Result<Message, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.decoder.step(&mut self.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cobs_decode_ref(frame: &[u8]) -> Vec<u8> {
        // Reference decoder (test only): blocks of `code - 1` bytes, zero between blocks.
        let mut out = Vec::new();
        let mut i = 0;
        while i < frame.len() {
            let code = frame[i] as usize;
            out.extend_from_slice(&frame[i + 1..i + code]);
            i += code;
            if code != 0xFF && i < frame.len() {
                out.push(0);
            }
        }
        out
    }

    #[test]
    fn cobs_round_trips_block_boundaries() {
        for len in [0usize, 1, 253, 254, 255, 300, 508, 509] {
            for fill in [0u8, 1, 0xFF] {
                let data = vec![fill; len];
                let mut out = vec![0u8; max_wire_len(len)];
                let n = cobs_encode(&data, &mut out).unwrap();
                assert_eq!(out[n - 1], 0);
                assert!(!out[..n - 1].contains(&0), "len {len} fill {fill}");
                assert_eq!(
                    cobs_decode_ref(&out[..n - 1]),
                    data,
                    "len {len} fill {fill}"
                );
            }
        }
    }

    #[test]
    fn cobs_encode_reports_small_buffer() {
        let mut out = [0u8; 3];
        assert_eq!(
            cobs_encode(&[1, 2, 3], &mut out),
            Err(Error::BufferTooSmall)
        );
        let mut out = [0u8; 5];
        assert_eq!(cobs_encode(&[1, 2, 3], &mut out), Ok(5));
        assert_eq!(out, [4, 1, 2, 3, 0]);
    }

    #[test]
    fn encode_reports_small_buffer() {
        let msg = Message::Ack { device_seq: 1 };
        let mut big = [0u8; MAX_FRAME];
        let len = encode(&msg, &mut big).unwrap().len();
        let mut exact = vec![0u8; len];
        assert!(encode(&msg, &mut exact).is_ok());
        let mut short = vec![0u8; len - 1];
        assert_eq!(encode(&msg, &mut short), Err(Error::BufferTooSmall));
    }

    #[test]
    fn empty_frames_are_ignored_and_offsets_count() {
        let mut d = Decoder::<MAX_CONTENT>::new();
        assert_eq!(d.feed(&[0, 0, 0]).count(), 0);
        assert_eq!(d.offset(), 3);
        let mut buf = [0u8; MAX_FRAME];
        let frame = encode(&Message::TimeSync { unix_ms: 5 }, &mut buf).unwrap();
        let mut bad = frame.to_vec();
        bad[2] ^= 0x01;
        let results: Vec<_> = d.feed(&bad).collect();
        assert!(matches!(results[..], [Err(Error::Crc { offset: 3, .. })]));
    }

    #[test]
    fn cobs_truncated_block_is_reported() {
        let mut d = Decoder::<MAX_CONTENT>::new();
        // Code 5 promises 4 bytes, only 2 arrive before the delimiter.
        let got: Vec<_> = d.feed(&[5, 1, 2, 0]).collect();
        assert_eq!(got, vec![Err(Error::Cobs { offset: 0, len: 3 })]);
    }

    #[test]
    fn short_content_is_reported() {
        let mut d = Decoder::<MAX_CONTENT>::new();
        let got: Vec<_> = d.feed(&[3, 1, 2, 0]).collect();
        assert_eq!(got, vec![Err(Error::TooShort { offset: 0, len: 3 })]);
    }

    #[test]
    fn oversized_is_reported_once_and_skipped() {
        let mut d = Decoder::<8>::new();
        let garbage = [0x11u8; 10_000];
        let got: Vec<_> = d.feed(&garbage).collect();
        assert_eq!(
            got,
            vec![Err(Error::Oversized {
                offset: 0,
                limit: 8
            })]
        );
        let got: Vec<_> = d.feed(&garbage).collect();
        assert!(got.is_empty());
        let mut buf = [0u8; MAX_FRAME];
        let frame = encode(&Message::Ack { device_seq: 3 }, &mut buf).unwrap();
        let mut input = vec![0u8];
        input.extend_from_slice(frame);
        let got: Vec<_> = d.feed(&input).collect();
        assert_eq!(got, vec![Ok(Message::Ack { device_seq: 3 })]);
    }

    #[test]
    fn version_is_checked_after_crc() {
        let mut content = vec![2u8, 5, 1];
        let crc = CRC.checksum(&content);
        content.extend_from_slice(&crc.to_le_bytes());
        let mut wire = vec![0u8; MAX_FRAME];
        let n = cobs_encode(&content, &mut wire).unwrap();
        let mut d = Decoder::<MAX_CONTENT>::new();
        let got: Vec<_> = d.feed(&wire[..n]).collect();
        assert_eq!(
            got,
            vec![Err(Error::Version {
                offset: 0,
                version: 2
            })]
        );
    }

    #[test]
    fn appended_bytes_are_ignored() {
        // Ack { device_seq: 1 } followed by a field a newer peer appended.
        let mut content = vec![PROTOCOL_VERSION, 5, 1, 0x2A];
        let crc = CRC.checksum(&content);
        content.extend_from_slice(&crc.to_le_bytes());
        let mut wire = vec![0u8; MAX_FRAME];
        let n = cobs_encode(&content, &mut wire).unwrap();
        let mut d = Decoder::<MAX_CONTENT>::new();
        let got: Vec<_> = d.feed(&wire[..n]).collect();
        assert_eq!(got, vec![Ok(Message::Ack { device_seq: 1 })]);
    }

    #[test]
    fn unknown_variant_is_a_decode_error() {
        let mut content = vec![PROTOCOL_VERSION, 9];
        let crc = CRC.checksum(&content);
        content.extend_from_slice(&crc.to_le_bytes());
        let mut wire = vec![0u8; MAX_FRAME];
        let n = cobs_encode(&content, &mut wire).unwrap();
        let mut d = Decoder::<MAX_CONTENT>::new();
        let got: Vec<_> = d.feed(&wire[..n]).collect();
        assert_eq!(
            got,
            vec![Err(Error::Decode {
                offset: 0,
                len: n - 1
            })]
        );
    }
}
