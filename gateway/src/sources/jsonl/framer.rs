//! Splits a byte stream into lines in one bounded, reused buffer (sans-IO).
//!
//! Invariants:
//! - The buffer never holds more than `max_line + 2` bytes of storage (a longest line plus
//!   CR LF), or [`MIN_BUFFER`] if that is larger: a longer line is discarded as it arrives and
//!   only its length is kept, so a producer cannot make the gateway buffer an unbounded line.
//! - Complete lines are handed out as slices of the buffer (no copy, no allocation); a partial
//!   line is moved to the front of the buffer at most once per buffer fill.
//! - Every line gets the next 1-based number, blank and overlong lines included, so answers
//!   can name the line the producer sent.
//!
//! Use: loop { read into [`LineFramer::space`], record it with [`LineFramer::filled`], take
//! [`LineFramer::next_or_last`] until `None` }; at end of input pass `eof = true` to also get
//! a last line that had no LF.

/// Smallest buffer, whatever `max_line` is: short-line limits still read in useful chunks.
pub const MIN_BUFFER: usize = 4 * 1024;
/// Initial buffer size; it grows (doubling) up to its limit only when a long line needs it.
pub const INITIAL_BUFFER: usize = 64 * 1024;
/// Tail space below which the pending partial line is moved to the front before reading.
const MIN_READ: usize = 1024;

/// One line, or the fact that one was too long.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A line without its LF (and without a CR before it).
    Line {
        /// 1-based line number on this stream.
        number: u64,
        /// The line's bytes.
        bytes: &'a [u8],
    },
    /// A line longer than `max_line`; its bytes were skipped.
    TooLong {
        /// 1-based line number on this stream.
        number: u64,
        /// Its length in bytes (without CR LF).
        len: usize,
    },
}

/// Line splitter over a bounded buffer.
#[derive(Debug)]
pub struct LineFramer {
    /// Storage; `buf.len()` is the current capacity in use.
    buf: Vec<u8>,
    /// First byte not yet handed out.
    start: usize,
    /// End of the received bytes.
    end: usize,
    /// `buf[start..scanned]` holds no LF (saves rescanning a long partial line).
    scanned: usize,
    /// Longest accepted line, without CR LF.
    max_line: usize,
    /// Largest `buf.len()`.
    limit: usize,
    /// Inside an overlong line: how many of its bytes went by, and whether the last one was CR.
    discarding: Option<(usize, bool)>,
    /// Number of the last line handed out.
    line_no: u64,
}

impl LineFramer {
    /// A framer for lines of at most `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        let limit = max_line.saturating_add(2).max(MIN_BUFFER);
        Self {
            buf: vec![0; limit.min(INITIAL_BUFFER)],
            start: 0,
            end: 0,
            scanned: 0,
            max_line,
            limit,
            discarding: None,
            line_no: 0,
        }
    }

    /// Current storage size (for tests of the bound).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Where to read the next bytes into; never empty. Call after `next_or_last` returned `None`.
    pub fn space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.scanned = 0;
        }
        if self.buf.len() - self.end < MIN_READ && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() < self.limit {
                let grown = self.buf.len().saturating_mul(2).min(self.limit);
                self.buf.resize(grown, 0);
            } else {
                // Full at the limit without an LF: only reachable if the caller skipped
                // `next_frame`; the pending bytes are an overlong line either way.
                self.start_discarding();
            }
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`space`](Self::space).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next complete line, if one is buffered.
    #[cfg(test)]
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        self.next_span().map(|span| self.resolve(span))
    }

    /// The next complete line; at end of input (`eof`), then the last line if it had no LF.
    pub fn next_or_last(&mut self, eof: bool) -> Option<Frame<'_>> {
        let span = match self.next_span() {
            Some(span) => Some(span),
            None if eof => self.last_span(),
            None => None,
        };
        span.map(|span| self.resolve(span))
    }

    /// At end of input: the last line if it had no LF. Call after `next_frame` returned `None`.
    #[cfg(test)]
    pub fn finish(&mut self) -> Option<Frame<'_>> {
        self.last_span().map(|span| self.resolve(span))
    }

    fn next_span(&mut self) -> Option<Span> {
        match find_lf(&self.buf[self.scanned..self.end]) {
            Some(i) => {
                let lf = self.scanned + i;
                let begin = self.start;
                self.start = lf + 1;
                self.scanned = self.start;
                self.line_no += 1;
                if let Some((seen, last_cr)) = self.discarding.take() {
                    let cr = if lf > begin {
                        self.buf[lf - 1] == b'\r'
                    } else {
                        last_cr
                    };
                    let len = seen + (lf - begin) - usize::from(cr);
                    return Some(Span::TooLong {
                        number: self.line_no,
                        len,
                    });
                }
                Some(Span::Line {
                    number: self.line_no,
                    begin,
                    end: lf,
                })
            }
            None => {
                self.scanned = self.end;
                if self.discarding.is_some() || self.end - self.start > self.max_line + 1 {
                    self.start_discarding();
                }
                None
            }
        }
    }

    fn last_span(&mut self) -> Option<Span> {
        if let Some((seen, last_cr)) = self.discarding.take() {
            self.line_no += 1;
            let pending = self.end - self.start;
            let cr = if pending > 0 {
                self.buf[self.end - 1] == b'\r'
            } else {
                last_cr
            };
            self.start = self.end;
            self.scanned = self.end;
            return Some(Span::TooLong {
                number: self.line_no,
                len: seen + pending - usize::from(cr),
            });
        }
        if self.start == self.end {
            return None;
        }
        self.line_no += 1;
        let (begin, end) = (self.start, self.end);
        self.start = end;
        self.scanned = end;
        Some(Span::Line {
            number: self.line_no,
            begin,
            end,
        })
    }

    /// Drops the pending bytes of an overlong line, remembering their count.
    fn start_discarding(&mut self) {
        let pending = self.end - self.start;
        let (seen, last_cr) = self.discarding.unwrap_or((0, false));
        let last_cr = if pending > 0 {
            self.buf[self.end - 1] == b'\r'
        } else {
            last_cr
        };
        self.discarding = Some((seen + pending, last_cr));
        self.start = 0;
        self.end = 0;
        self.scanned = 0;
    }

    /// The frame for a span: the line's bytes, CR stripped, length checked.
    fn resolve(&self, span: Span) -> Frame<'_> {
        let (number, begin, end) = match span {
            Span::TooLong { number, len } => return Frame::TooLong { number, len },
            Span::Line { number, begin, end } => (number, begin, end),
        };
        let mut bytes = &self.buf[begin..end];
        if let [rest @ .., b'\r'] = bytes {
            bytes = rest;
        }
        if bytes.len() > self.max_line {
            Frame::TooLong {
                number,
                len: bytes.len(),
            }
        } else {
            Frame::Line { number, bytes }
        }
    }
}

/// A frame by position, so the buffer is not borrowed while deciding what comes next.
#[derive(Debug, Clone, Copy)]
enum Span {
    Line {
        number: u64,
        begin: usize,
        end: usize,
    },
    TooLong {
        number: u64,
        len: usize,
    },
}

fn find_lf(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Owned {
        Line(u64, Vec<u8>),
        TooLong(u64, usize),
    }

    fn own(f: Frame<'_>) -> Owned {
        match f {
            Frame::Line { number, bytes } => Owned::Line(number, bytes.to_vec()),
            Frame::TooLong { number, len } => Owned::TooLong(number, len),
        }
    }

    /// Feeds `input` in chunks of the given sizes (cycled), collecting every frame.
    fn run(max_line: usize, input: &[u8], chunks: &[usize]) -> (Vec<Owned>, usize) {
        let mut f = LineFramer::new(max_line);
        let mut out = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        let mut max_cap = f.capacity();
        while pos < input.len() {
            let want = chunks[i % chunks.len()].max(1);
            i += 1;
            let space = f.space();
            assert!(!space.is_empty());
            let n = want.min(space.len()).min(input.len() - pos);
            space[..n].copy_from_slice(&input[pos..pos + n]);
            f.filled(n);
            pos += n;
            while let Some(frame) = f.next_frame() {
                out.push(own(frame));
            }
            max_cap = max_cap.max(f.capacity());
        }
        if let Some(frame) = f.finish() {
            out.push(own(frame));
        }
        (out, max_cap)
    }

    /// The reference: split on LF, strip one CR, classify by length.
    fn reference(max_line: usize, input: &[u8]) -> Vec<Owned> {
        let mut out = Vec::new();
        let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        if parts.last().is_some_and(|p| p.is_empty()) {
            parts.pop();
        }
        for (i, p) in parts.into_iter().enumerate() {
            let p = p.strip_suffix(b"\r").unwrap_or(p);
            let n = i as u64 + 1;
            out.push(if p.len() > max_line {
                Owned::TooLong(n, p.len())
            } else {
                Owned::Line(n, p.to_vec())
            });
        }
        out
    }

    #[test]
    fn splits_lf_and_crlf_and_numbers_blank_lines() {
        let (frames, _) = run(100, b"a\r\nbb\n\nccc", &[1000]);
        assert_eq!(
            frames,
            vec![
                Owned::Line(1, b"a".to_vec()),
                Owned::Line(2, b"bb".to_vec()),
                Owned::Line(3, b"".to_vec()),
                Owned::Line(4, b"ccc".to_vec()),
            ]
        );
    }

    #[test]
    fn exact_limit_is_accepted_one_more_is_not() {
        let mut input = vec![b'x'; 10];
        input.extend_from_slice(b"\r\n");
        input.extend(vec![b'y'; 11]);
        input.extend_from_slice(b"\r\nz\n");
        let (frames, _) = run(10, &input, &[3]);
        assert_eq!(
            frames,
            vec![
                Owned::Line(1, vec![b'x'; 10]),
                Owned::TooLong(2, 11),
                Owned::Line(3, b"z".to_vec()),
            ]
        );
    }

    #[test]
    fn overlong_line_is_skipped_without_growing_past_the_limit() {
        let max_line = 10_000;
        let mut input = vec![b'a'; 5_000_000];
        input.extend_from_slice(b"\r\n{\"ok\":1}\n");
        let (frames, max_cap) = run(max_line, &input, &[65536, 7, 300_000]);
        assert_eq!(
            frames,
            vec![
                Owned::TooLong(1, 5_000_000),
                Owned::Line(2, b"{\"ok\":1}".to_vec())
            ]
        );
        assert!(max_cap <= max_line + 2, "buffer grew to {max_cap}");
    }

    #[test]
    fn overlong_line_at_end_of_input() {
        let input = vec![b'a'; 100_000];
        let (frames, _) = run(50, &input, &[4096]);
        assert_eq!(frames, vec![Owned::TooLong(1, 100_000)]);
        let mut input = vec![b'a'; 100_000];
        input.push(b'\r');
        let (frames, _) = run(50, &input, &[4096]);
        assert_eq!(frames, vec![Owned::TooLong(1, 100_000)]);
    }

    #[test]
    fn cr_split_from_its_lf_across_a_discard_is_not_counted() {
        let max_line = 100;
        let mut input = vec![b'a'; MIN_BUFFER - 1];
        input.push(b'\r');
        input.extend_from_slice(b"\nok\n");
        // The first read fills the buffer and ends right after the CR; the LF comes next.
        let (frames, _) = run(max_line, &input, &[MIN_BUFFER, 100]);
        assert_eq!(
            frames,
            vec![
                Owned::TooLong(1, MIN_BUFFER - 1),
                Owned::Line(2, b"ok".to_vec())
            ]
        );
    }

    #[test]
    fn buffer_grows_for_a_long_valid_line() {
        let max_line = 200_000;
        let mut input = vec![b'q'; 150_000];
        input.push(b'\n');
        let (frames, max_cap) = run(max_line, &input, &[10_000]);
        assert_eq!(frames, vec![Owned::Line(1, vec![b'q'; 150_000])]);
        assert!(max_cap <= max_line + 2);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_reference_split(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'x'), any::<u8>()], 0..3000),
            chunks in proptest::collection::vec(1usize..700, 1..8),
            max_line in 0usize..300,
        ) {
            let (frames, max_cap) = run(max_line, &input, &chunks);
            prop_assert_eq!(frames, reference(max_line, &input));
            prop_assert!(max_cap <= (max_line + 2).max(MIN_BUFFER));
        }
    }
}
