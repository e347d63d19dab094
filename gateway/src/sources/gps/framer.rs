//! Byte stream → NMEA sentences, for any chunking of the input.
//!
//! A sentence starts at `$` and ends at CR or LF (CRLF, LF and bare CR all work). Only
//! printable ASCII may appear inside; anything else aborts the line, and the framer hunts
//! for the next `$`. That is the whole resynchronisation story: garbage, NUL runs and binary
//! frames (u-blox UBX `B5 62 …`, SiRF, …) between sentences are skipped byte by byte and
//! counted; a `$` inside a binary frame starts a candidate that a control byte soon aborts or
//! the checksum rejects.
//!
//! A `$` inside a line starts a new sentence: receivers that lose a line ending run two
//! sentences together (`…*1E$GPRMC,…`). The interrupted one is still handed over when it
//! already ends in `*hh`; otherwise it is counted as truncated.
//!
//! Memory is bounded by [`FramerConfig::max_len`]: a line longer than that is counted as
//! overlong and skipped to its end without being buffered. `!` sentences (AIS, `!AIVDM`) are
//! skipped as garbage.

/// NMEA 0183's own limit: 82 characters including `$` and CR LF.
pub const NMEA_MAX_LEN: usize = 82;

/// Default line cap: above the standard, because real receivers exceed it (long GSV and GNS
/// with signal ids, 8-decimal RTK coordinates).
pub const DEFAULT_MAX_LEN: usize = 120;

/// Framer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramerConfig {
    /// Longest sentence kept, from `$` to the checksum (CR LF not counted). Longer lines are
    /// skipped and counted. Also the size of the only buffer.
    pub max_len: usize,
}

impl Default for FramerConfig {
    fn default() -> Self {
        FramerConfig {
            max_len: DEFAULT_MAX_LEN,
        }
    }
}

/// What the framer saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FramerStats {
    /// Sentences handed over.
    pub sentences: u64,
    /// Lines longer than `max_len`, skipped.
    pub overlong: u64,
    /// Lines cut short by a control byte, a non-ASCII byte or a new `$`.
    pub truncated: u64,
    /// Bytes discarded outside sentences and in truncated lines (line endings not counted).
    pub garbage_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between sentences: looking for `$`.
    Hunt,
    /// Inside a sentence; the bytes so far are in `buf`.
    Line,
    /// Inside an overlong line: dropping bytes until its end.
    Skip,
}

/// Splits a byte stream into sentences. Sans-IO: feed it what the serial port gave.
#[derive(Debug)]
pub struct Framer {
    config: FramerConfig,
    buf: Vec<u8>,
    state: State,
    stats: FramerStats,
}

impl Framer {
    /// A framer with one buffer of `config.max_len` bytes (at least 8).
    pub fn new(config: FramerConfig) -> Self {
        let config = FramerConfig {
            max_len: config.max_len.max(8),
        };
        Framer {
            buf: Vec::with_capacity(config.max_len),
            config,
            state: State::Hunt,
            stats: FramerStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> FramerStats {
        self.stats
    }

    /// Feeds `bytes`; calls `on_sentence` with each complete sentence (from `$` to the byte
    /// before CR/LF). A sentence split across calls is completed by a later call.
    pub fn push(&mut self, mut bytes: &[u8], mut on_sentence: impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            match self.state {
                State::Hunt => match bytes.iter().position(|&b| b == b'$') {
                    Some(i) => {
                        self.stats.garbage_bytes += count_garbage(&bytes[..i]);
                        self.buf.clear();
                        self.buf.push(b'$');
                        self.state = State::Line;
                        bytes = &bytes[i + 1..];
                    }
                    None => {
                        self.stats.garbage_bytes += count_garbage(bytes);
                        bytes = &[];
                    }
                },
                State::Line => {
                    let stop = bytes
                        .iter()
                        .position(|&b| !(0x20..0x7f).contains(&b) || b == b'$');
                    let text = &bytes[..stop.unwrap_or(bytes.len())];
                    let room = self.config.max_len - self.buf.len();
                    if text.len() > room {
                        self.stats.overlong += 1;
                        self.state = State::Skip;
                        bytes = &bytes[text.len()..];
                        continue;
                    }
                    self.buf.extend_from_slice(text);
                    let Some(i) = stop else {
                        bytes = &[];
                        continue;
                    };
                    let b = bytes[i];
                    bytes = &bytes[i + 1..];
                    match b {
                        b'\r' | b'\n' => {
                            self.stats.sentences += 1;
                            on_sentence(&self.buf);
                            self.state = State::Hunt;
                        }
                        b'$' => {
                            if ends_with_checksum(&self.buf) {
                                self.stats.sentences += 1;
                                on_sentence(&self.buf);
                            } else {
                                self.truncate(0);
                            }
                            self.buf.clear();
                            self.buf.push(b'$');
                        }
                        _ => {
                            self.truncate(1);
                            self.state = State::Hunt;
                        }
                    }
                }
                State::Skip => {
                    match bytes
                        .iter()
                        .position(|&b| !(0x20..0x7f).contains(&b) || b == b'$')
                    {
                        Some(i) => {
                            // A `$` starts the next sentence, anything else ends the line.
                            self.state = State::Hunt;
                            bytes = &bytes[i..];
                        }
                        None => bytes = &[],
                    }
                }
            }
        }
    }

    /// Counts the current line (plus `extra` bytes) as garbage and forgets it.
    fn truncate(&mut self, extra: u64) {
        self.stats.truncated += 1;
        self.stats.garbage_bytes += self.buf.len() as u64 + extra;
        self.buf.clear();
    }
}

/// Bytes that are not line endings.
fn count_garbage(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b != b'\r' && b != b'\n').count() as u64
}

fn ends_with_checksum(line: &[u8]) -> bool {
    matches!(line, [.., b'*', h, l] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(cfg: FramerConfig, chunks: &[&[u8]]) -> (Vec<String>, FramerStats) {
        let mut f = Framer::new(cfg);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c, |s| out.push(String::from_utf8(s.to_vec()).unwrap()));
        }
        (out, f.stats())
    }

    #[test]
    fn crlf_lf_and_cr_endings_in_any_chunking() {
        let input = b"$GPA*00\r\n$GPB*01\n$GPC*02\r$GPD*03\r\n";
        for size in 1..input.len() {
            let chunks: Vec<&[u8]> = input.chunks(size).collect();
            let (out, stats) = frame(FramerConfig::default(), &chunks);
            assert_eq!(
                out,
                ["$GPA*00", "$GPB*01", "$GPC*02", "$GPD*03"],
                "chunk {size}"
            );
            assert_eq!(stats.garbage_bytes, 0);
            assert_eq!(stats.sentences, 4);
        }
    }

    #[test]
    fn resyncs_after_garbage_nul_and_binary() {
        let mut input = b"noise\0\0\0$GPRMC,12\0\0\0\0  \r\n".to_vec();
        input.extend_from_slice(&[0xB5, 0x62, 0x0A, 0x04, 0x03, 0x00, b'$', 0x01, 0xFF, 0x00]);
        input.extend_from_slice(b"$GPX*11\r\n");
        let (out, stats) = frame(FramerConfig::default(), &[&input]);
        assert_eq!(out, ["$GPX*11"]);
        assert_eq!(stats.truncated, 2);
        // "noise" + 3 NUL, "$GPRMC,12" + NUL, 3 NUL + 2 spaces, UBX 6 bytes but its 0x0A
        // counts as a line ending, "$" + 0x01, FF 00.
        assert_eq!(stats.garbage_bytes, 5 + 3 + 10 + 5 + 5 + 2 + 2);
    }

    #[test]
    fn dollar_inside_a_line_starts_a_new_sentence() {
        let (out, stats) = frame(
            FramerConfig::default(),
            &[b"$GPGSA,A,1*1E$GPRMC,1*44\r\n$GPN,0$GPZ*00\n"],
        );
        assert_eq!(out, ["$GPGSA,A,1*1E", "$GPRMC,1*44", "$GPZ*00"]);
        assert_eq!(stats.truncated, 1);
    }

    #[test]
    fn overlong_lines_are_skipped_unbuffered() {
        let cfg = FramerConfig { max_len: 10 };
        let long = b"$GPAAAAAAAAAAAAAAAAAAAAAAA*00\r\n$GPB*01\r\n$GP01234567$GPC*02\n";
        for size in 1..long.len() {
            let chunks: Vec<&[u8]> = long.chunks(size).collect();
            let (out, stats) = frame(cfg, &chunks);
            assert_eq!(out, ["$GPB*01", "$GPC*02"], "chunk {size}");
            assert_eq!(stats.overlong, 2);
        }
        let (out, _) = frame(cfg, &[b"$GP4567890\n$GP45678901\n"]);
        assert_eq!(out, ["$GP4567890"]);
        let f = Framer::new(cfg);
        assert_eq!(f.buf.capacity(), 10);
    }
}
