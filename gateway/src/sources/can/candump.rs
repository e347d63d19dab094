//! The can-utils `candump` text formats, one line at a time (sans-IO).
//!
//! Accepted, as found in real captures (`gateway/tests/data/can/`):
//! - `-l` log: `(1635188455.020850) can0 0CF00400#607D84481400F084`; FD frames
//!   `123##<flags><data>`; remote frames `123#R` / `123#R5`; error frames with the
//!   `CAN_ERR_FLAG` in the 8-digit id (`20000080#...`); an optional `_<dlc>` suffix.
//! - default ASCII: `  can0  09F8027F   [8]  00 FC FF FF 00 00 FF FF`, optionally preceded by
//!   a `(seconds.fraction)` stamp (`-t a/d/z`); a two-digit length (`[12]`) is an FD frame;
//!   `remote request` for RTR; anything after the data bytes (`ERRORFRAME`, `'ascii'`) is
//!   ignored.
//! - the old BeagleBone format: `<0x18eeff01> [8] 05 a0 be 1c 00 a0 a0 c0` (no interface).
//! - blank lines, `#` comments, and the `interface = can0, family = ...` header are skipped.
//!
//! Standard ids are written with at most 3 hex digits, extended ones with more (candump
//! always writes 8), which is how the two are told apart.
//!
//! Invariants: a line is never longer than [`MAX_LINE`] bytes when parsed; an error names
//! the 1-based column (in characters) of the offending token; nothing here panics on input.

use super::frame::{self, Frame};

/// Longest line accepted (an FD frame in the default ASCII format is under 260 bytes).
pub const MAX_LINE: usize = 1024;

/// A parsed line that held a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogFrame<'a> {
    /// The log's own time, µs since the epoch (or since the log's zero for `-t z/d`), when the
    /// line has one.
    pub time_us: Option<i64>,
    /// The interface (`can0`); empty for the old format, which names none.
    pub iface: &'a str,
    /// The frame.
    pub frame: Frame,
}

/// Why a line is not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct LineError {
    /// 1-based column (characters) of the offending token.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

fn err(line: &str, at: &str, message: impl Into<String>) -> LineError {
    // `at` is a subslice of `line`: its offset is its start minus the line's.
    let offset = (at.as_ptr() as usize).saturating_sub(line.as_ptr() as usize);
    let offset = offset.min(line.len());
    let column = line
        .get(..offset)
        .map_or(offset, |head| head.chars().count())
        + 1;
    LineError {
        column,
        message: message.into(),
    }
}

/// Parses one line: `Ok(None)` for blank, comment and header lines.
///
/// # Errors
/// The line is in none of the formats, or its id, length or data is invalid.
pub fn parse_line(line: &str) -> Result<Option<LogFrame<'_>>, LineError> {
    if line.len() > MAX_LINE {
        return Err(err(
            line,
            line,
            format!("line longer than {MAX_LINE} bytes"),
        ));
    }
    let body = line.trim_end_matches(['\r', '\n']);
    let trimmed = body.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("interface =") {
        return Ok(None);
    }
    let mut rest = trimmed;
    let mut time_us = None;
    if let Some(after) = rest.strip_prefix('(') {
        let Some(close) = after.find(')') else {
            return Err(err(line, rest, "timestamp without closing ')'"));
        };
        let stamp = &after[..close];
        time_us = Some(parse_time(stamp).ok_or_else(|| err(line, stamp, "bad timestamp"))?);
        rest = after[close + 1..].trim_start();
    }
    if rest.starts_with('<') {
        return parse_old(line, rest).map(|frame| {
            Some(LogFrame {
                time_us,
                iface: "",
                frame,
            })
        });
    }
    let (iface, after) = split_token(rest);
    if iface.is_empty() {
        return Err(err(line, rest, "expected an interface name"));
    }
    let after = after.trim_start();
    let (token, tail) = split_token(after);
    if token.is_empty() {
        return Err(err(line, after, "expected a frame after the interface"));
    }
    let frame = if token.contains('#') {
        if !tail.trim().is_empty() {
            return Err(err(
                line,
                tail.trim_start(),
                "unexpected text after the frame",
            ));
        }
        parse_compact(line, token)?
    } else {
        parse_ascii(line, token, tail)?
    };
    Ok(Some(LogFrame {
        time_us,
        iface,
        frame,
    }))
}

/// `sec.frac` → µs (fraction of 1 to 9 digits, truncated to µs).
fn parse_time(s: &str) -> Option<i64> {
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    if sec.is_empty() || !sec.bytes().all(|b| b.is_ascii_digit()) || sec.len() > 12 {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sec: i64 = sec.parse().ok()?;
    let mut us: i64 = 0;
    for (i, b) in frac.bytes().take(6).enumerate() {
        us += i64::from(b - b'0') * 10i64.pow(5 - i as u32);
    }
    sec.checked_mul(1_000_000)?.checked_add(us)
}

fn split_token(s: &str) -> (&str, &str) {
    match s.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, &s[s.len()..]),
    }
}

/// An id of 1..=8 hex digits: ≤ 3 digits standard, more extended; the `CAN_ERR_FLAG` makes
/// an error frame. Returns the id word (with `EFF_FLAG` for extended ids).
fn parse_id(line: &str, s: &str) -> Result<u32, LineError> {
    if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(line, s, format!("bad CAN id {s:?}")));
    }
    let v = u32::from_str_radix(s, 16).map_err(|_| err(line, s, "bad CAN id"))?;
    if s.len() <= 3 {
        return Ok(v);
    }
    if v & frame::ERR_FLAG != 0 {
        return Ok(v & !frame::EFF_FLAG);
    }
    if v > frame::EFF_MASK {
        return Err(err(line, s, format!("extended id {v:#X} beyond 29 bits")));
    }
    Ok(v | frame::EFF_FLAG)
}

fn hex_nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Hex digits, optionally separated by `.`, into `out`; returns the byte count.
fn parse_hex(line: &str, s: &str, out: &mut [u8; frame::MAX_FD_LEN]) -> Result<usize, LineError> {
    let mut n = 0;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'.' {
            i += 1;
            continue;
        }
        let hi = hex_nibble(bytes[i]);
        let lo = bytes.get(i + 1).copied().and_then(hex_nibble);
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err(err(line, &s[i..], "expected two hex digits per data byte"));
        };
        if n == out.len() {
            return Err(err(line, &s[i..], "more than 64 data bytes"));
        }
        out[n] = hi << 4 | lo;
        n += 1;
        i += 2;
    }
    Ok(n)
}

fn make(line: &str, at: &str, word: u32, fd: bool, data: &[u8]) -> Result<Frame, LineError> {
    Frame::from_id_word(word, fd, data).map_err(|e| err(line, at, e.to_string()))
}

/// `ID#data`, `ID#R[len]`, `ID##<flags>data`.
fn parse_compact(line: &str, token: &str) -> Result<Frame, LineError> {
    let Some((id, payload)) = token.split_once('#') else {
        return Err(err(line, token, "expected ID#DATA"));
    };
    let word = parse_id(line, id)?;
    let mut buf = [0u8; frame::MAX_FD_LEN];
    if let Some(fd) = payload.strip_prefix('#') {
        let Some(flags) = fd.get(..1) else {
            return Err(err(line, fd, "CAN FD frame without its flags digit"));
        };
        if hex_nibble(flags.as_bytes()[0]).is_none() {
            return Err(err(line, fd, "CAN FD flags must be one hex digit"));
        }
        let data = &fd[1..];
        let n = parse_hex(line, data, &mut buf)?;
        return make(line, data, word, true, &buf[..n]);
    }
    if let Some(r) = payload.strip_prefix(['R', 'r']) {
        let len = if r.is_empty() {
            0
        } else {
            let digits = r.split('_').next().unwrap_or(r);
            match digits.parse::<u8>() {
                Ok(l) if l <= 8 => l,
                _ => return Err(err(line, r, "remote frame length must be 0 to 8")),
            }
        };
        return make(
            line,
            token,
            word | frame::RTR_FLAG,
            false,
            &[0u8; 8][..usize::from(len)],
        );
    }
    // `_<dlc>`: the raw DLC of an 8-byte frame (len8_dlc); the payload is what counts.
    let data = match payload.split_once('_') {
        Some((d, dlc)) if dlc.len() == 1 && dlc.bytes().all(|b| b.is_ascii_hexdigit()) => d,
        Some(_) => return Err(err(line, payload, "bad `_<dlc>` suffix")),
        None => payload,
    };
    let n = parse_hex(line, data, &mut buf)?;
    make(line, data, word, false, &buf[..n])
}

/// `ID [len] XX XX ...` (after the interface), or `ID [len] remote request`.
fn parse_ascii(line: &str, id: &str, tail: &str) -> Result<Frame, LineError> {
    let word = parse_id(line, id)?;
    let tail = tail.trim_start();
    let (len_tok, rest) = split_token(tail);
    let (len, fd) = parse_len(line, len_tok)?;
    let mut rest = rest.trim_start();
    if rest.starts_with("remote request") {
        return make(
            line,
            len_tok,
            word | frame::RTR_FLAG,
            false,
            &[0u8; 8][..len.min(8)],
        );
    }
    let mut buf = [0u8; frame::MAX_FD_LEN];
    for slot in buf.iter_mut().take(len) {
        let (tok, r) = split_token(rest);
        let b = tok.as_bytes();
        let byte = match b {
            [h, l] => hex_nibble(*h).zip(hex_nibble(*l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        let Some(byte) = byte else {
            return Err(err(
                line,
                if tok.is_empty() { rest } else { tok },
                format!("expected {len} data bytes as two hex digits each"),
            ));
        };
        *slot = byte;
        rest = r.trim_start();
    }
    make(line, len_tok, word, fd, &buf[..len])
}

/// `[8]` (classic) or `[08]`/`[12]` (two digits: FD).
fn parse_len(line: &str, tok: &str) -> Result<(usize, bool), LineError> {
    let inner = tok
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .filter(|t| !t.is_empty() && t.len() <= 2 && t.bytes().all(|b| b.is_ascii_digit()));
    let Some(inner) = inner else {
        return Err(err(line, tok, "expected a length like [8]"));
    };
    let len: usize = inner.parse().map_err(|_| err(line, tok, "bad length"))?;
    let fd = inner.len() == 2;
    if (!fd && len > 8) || !frame::is_fd_len(len) {
        return Err(err(line, tok, format!("length {len} is not a CAN length")));
    }
    Ok((len, fd))
}

/// `<0x18eeff01> [8] 05 a0 ...`.
fn parse_old(line: &str, rest: &str) -> Result<Frame, LineError> {
    let Some(close) = rest.find('>') else {
        return Err(err(line, rest, "id without closing '>'"));
    };
    let inner = &rest[1..close];
    let hex = inner
        .strip_prefix("0x")
        .or_else(|| inner.strip_prefix("0X"))
        .ok_or_else(|| err(line, inner, "expected <0x...>"))?;
    parse_ascii(line, hex, &rest[close + 1..])
}

/// Real-time pacing of a replayed log (sans-IO): when each frame is due, given the log's
/// stamps, a speed factor and the replay's own clock (ms since the replay started).
///
/// The first stamped frame is due at once; a later one `(t - t_first) / speed` after it.
/// Stamps that go backwards (a log concatenated from two captures) re-anchor the pacing at
/// that frame, so the replay never stalls. Frames without a stamp are due at once.
#[derive(Debug, Clone)]
pub struct Pacer {
    speed: f64,
    anchor: Option<(i64, u64)>,
}

impl Pacer {
    /// `speed` 1.0 = real time, 10.0 = ten times faster; 0 or less = as fast as possible.
    pub fn new(speed: f64) -> Self {
        Pacer {
            speed,
            anchor: None,
        }
    }

    /// How many ms after the replay's start (`elapsed_ms` is "now" on that clock) the frame
    /// stamped `time_us` is due; `None` = at once.
    pub fn due_ms(&mut self, time_us: Option<i64>, elapsed_ms: u64) -> Option<u64> {
        if self.speed <= 0.0 || !self.speed.is_finite() {
            return None;
        }
        let t = time_us?;
        let (t0, at) = match self.anchor {
            Some((t0, at)) if t >= t0 => (t0, at),
            _ => {
                self.anchor = Some((t, elapsed_ms));
                return None;
            }
        };
        let offset_ms = (t - t0) as f64 / 1000.0 / self.speed;
        let due = at.saturating_add(offset_ms as u64);
        (due > elapsed_ms).then_some(due)
    }
}

#[cfg(test)]
mod tests;
