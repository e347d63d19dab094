//! DBC files: parsed with `can-dbc`, decoded by our own code.
//!
//! [`DbcFile::load`] turns a file into [`DbcMessage`]s with everything decoding needs
//! (bit layout, sign, factor/offset, value tables, multiplexing) and [`DbcSignal::decode`]
//! extracts a value from a frame's payload. Decoding never panics and never reads outside
//! the payload: a signal that does not fit the frame it arrived in yields nothing.
//!
//! Real-world quirks tolerated (the data README and the captures in
//! `gateway/tests/data/can/`):
//! - **29-bit ids without the `0x80000000` flag** (`BO_ 506855454`): any id above `0x7FF`
//!   is extended. can-dbc truncates such ids to 16 bits, so ids are read from the `BO_`
//!   lines of the text itself.
//! - **Statements can-dbc refuses** outside `BO_`/`SG_` (e.g. `CM_ SG_ 304 "...";`, a signal
//!   comment without a signal name): the statement is skipped with a warning naming its
//!   line, and parsing goes on. A broken `BO_` or `SG_` line is an error.
//! - **The same message name twice** (CANedge GNSS): messages are addressed by id where the
//!   name is ambiguous.
//! - `VECTOR__INDEPENDENT_SIG_MSG` (pseudo message for unattached signals) is left out.
//! - Windows-1252 text (Vector tools write it) is decoded as such when not UTF-8.
//! - **J1939 DBCs** (`ProtocolType "J1939"`, or `VFrameFormat` `J1939PG`) are matched on
//!   the PGN, ignoring priority and source address (their ids carry a placeholder SA 0xFE).

use std::collections::HashMap;
use std::path::Path;

use can_dbc::{
    AttributeValue, ByteOrder, Dbc, MultiplexIndicator, SignalExtendedValueType, ValueType,
};

use super::frame;
use super::j1939::fms::extract_le;

/// Largest DBC file read.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Most statements skipped before a file is given up on.
pub const MAX_SKIPPED: usize = 100;

/// Why a DBC file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DbcError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A syntax error that cannot be skipped (in a `BO_` or `SG_` line), or too many.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
}

/// How a signal takes part in multiplexing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mux {
    /// Always present.
    Plain,
    /// The multiplexor switch itself (always present).
    Switch,
    /// Present when the switch's raw value is in one of these ranges (simple multiplexing:
    /// one range `n..=n`).
    When(u64, u64),
}

/// A signal, ready to decode.
#[derive(Debug, Clone, PartialEq)]
pub struct DbcSignal {
    /// Name in the DBC.
    pub name: String,
    /// Start bit as the DBC gives it (LSB for Intel, MSB for Motorola).
    pub start_bit: u16,
    /// Width in bits (1 to 64).
    pub size: u8,
    /// Motorola (`@0`) byte order.
    pub big_endian: bool,
    /// Two's complement (`-`).
    pub signed: bool,
    /// IEEE float (`SIG_VALTYPE_ ... : 1` 32-bit, `: 2` 64-bit) rather than integer.
    pub float: Option<u8>,
    /// Scale.
    pub factor: f64,
    /// Offset.
    pub offset: f64,
    /// Unit text from the DBC.
    pub unit: String,
    /// Multiplexing role.
    pub mux: Mux,
    /// Value table (`VAL_`): raw value → text.
    pub values: Vec<(i64, String)>,
}

/// A message, ready to match and decode.
#[derive(Debug, Clone, PartialEq)]
pub struct DbcMessage {
    /// Name in the DBC.
    pub name: String,
    /// The id without flags.
    pub id: u32,
    /// 29-bit id.
    pub extended: bool,
    /// Its signals.
    pub signals: Vec<DbcSignal>,
    /// Index in `signals` of the multiplexor switch, if any.
    pub switch: Option<usize>,
    /// Index of each multiplexed signal's own switch (extended multiplexing), by signal
    /// index; `None` = the message's switch.
    pub switch_of: Vec<Option<usize>>,
}

/// A loaded DBC file.
#[derive(Debug, Clone, PartialEq)]
pub struct DbcFile {
    /// Messages in file order.
    pub messages: Vec<DbcMessage>,
    /// Whether the file describes J1939 parameter groups (match on the PGN).
    pub j1939: bool,
    /// Statements skipped (line, why): quirks the parser refused.
    pub skipped: Vec<(usize, String)>,
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalValue {
    /// A physical number.
    Num(f64),
    /// The value table's text for the raw value.
    Text(String),
}

impl DbcFile {
    /// Reads and parses `path`.
    ///
    /// # Errors
    /// The file is unreadable, or has a syntax error in a `BO_`/`SG_` line.
    pub fn load(path: &Path) -> Result<Self, DbcError> {
        use std::io::Read;
        let shown = path.display().to_string();
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES).read_to_end(&mut bytes))
            .map_err(|source| DbcError::Read {
                path: shown.clone(),
                source,
            })?;
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let bytes = e.into_bytes();
                can_dbc::decode_cp1252(&bytes)
                    .map(|c| c.into_owned())
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned())
            }
        };
        Self::parse(&text, &shown)
    }

    /// Parses DBC text; `path` is for error messages.
    ///
    /// # Errors
    /// As [`DbcFile::load`].
    pub fn parse(text: &str, path: &str) -> Result<Self, DbcError> {
        let mut text = text.replace('\r', "");
        let mut skipped = Vec::new();
        let dbc = loop {
            match Dbc::try_from(text.as_str()) {
                Ok(d) => break d,
                Err(e) => {
                    let (line, column, message) = locate(&e);
                    let bad = |message: String| DbcError::Syntax {
                        path: path.to_string(),
                        line,
                        column,
                        message,
                    };
                    let Some(range) = statement_at(&text, line) else {
                        return Err(bad(message));
                    };
                    let statement = text[range.clone()].trim_start();
                    if statement.starts_with("BO_ ")
                        || statement.starts_with("SG_ ")
                        || skipped.len() >= MAX_SKIPPED
                    {
                        return Err(bad(message));
                    }
                    skipped.push((line, message));
                    // Blank it out, keeping the line count (so later errors name the right
                    // line).
                    let blank: String = text[range.clone()]
                        .chars()
                        .map(|c| if c == '\n' { '\n' } else { ' ' })
                        .collect();
                    text.replace_range(range, &blank);
                }
            }
        };
        Ok(Self::convert(&dbc, &text, skipped))
    }

    fn convert(dbc: &Dbc, text: &str, skipped: Vec<(usize, String)>) -> Self {
        // Ids as written in the `BO_` lines, in file order (can-dbc truncates unflagged
        // 29-bit ids).
        let written: Vec<u64> = text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("BO_ "))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect();
        let ids_usable = written.len() == dbc.messages.len();
        let is_j1939_attr = |v: &AttributeValue| match v {
            AttributeValue::String(s) => s == "J1939PG",
            AttributeValue::Uint(3) | AttributeValue::Int(3) => true,
            _ => false,
        };
        let mut j1939 = dbc
            .attribute_values_database
            .iter()
            .any(|a| a.name == "ProtocolType" && a.value == AttributeValue::String("J1939".into()));
        let mut messages = Vec::new();
        for (i, m) in dbc.messages.iter().enumerate() {
            if m.name == "VECTOR__INDEPENDENT_SIG_MSG" {
                continue;
            }
            let raw = if ids_usable {
                written[i]
            } else {
                u64::from(m.id.raw())
            };
            let Ok(raw) = u32::try_from(raw) else {
                continue;
            };
            let (id, extended) = if raw & frame::EFF_FLAG != 0 {
                (raw & !frame::EFF_FLAG, true)
            } else {
                (raw, raw > frame::SFF_MASK)
            };
            if id > frame::EFF_MASK {
                continue;
            }
            if dbc
                .resolved_message_attribute(m.id, "VFrameFormat")
                .is_some_and(is_j1939_attr)
            {
                j1939 = true;
            }
            let mut signals = Vec::new();
            let mut switch = None;
            for s in &m.signals {
                if s.size == 0 || s.size > 64 {
                    continue;
                }
                let mux = match s.multiplexer_indicator {
                    MultiplexIndicator::Plain => Mux::Plain,
                    MultiplexIndicator::Multiplexor => {
                        switch = Some(signals.len());
                        Mux::Switch
                    }
                    MultiplexIndicator::MultiplexedSignal(n)
                    | MultiplexIndicator::MultiplexorAndMultiplexedSignal(n) => Mux::When(n, n),
                };
                let values = match dbc.value_descriptions_for_signal(m.id, &s.name) {
                    Some(v) => v.iter().map(|d| (d.id, d.description.clone())).collect(),
                    None => Vec::new(),
                };
                let float = match dbc.extended_value_type_for_signal(m.id, &s.name) {
                    Some(SignalExtendedValueType::IEEEfloat32Bit) if s.size == 32 => Some(32),
                    Some(SignalExtendedValueType::IEEEdouble64bit) if s.size == 64 => Some(64),
                    _ => None,
                };
                signals.push(DbcSignal {
                    name: s.name.clone(),
                    start_bit: s.start_bit.min(u64::from(u16::MAX)) as u16,
                    size: s.size as u8,
                    big_endian: s.byte_order == ByteOrder::BigEndian,
                    signed: s.value_type == ValueType::Signed,
                    float,
                    factor: s.factor,
                    offset: s.offset,
                    unit: s.unit.clone(),
                    mux,
                    values,
                });
            }
            // Extended multiplexing: a signal's own switch and ranges.
            let mut switch_of = vec![None; signals.len()];
            for x in dbc
                .extended_multiplex
                .iter()
                .filter(|x| x.message_id == m.id)
            {
                let (Some(si), Some(sw)) = (
                    signals.iter().position(|s| s.name == x.signal_name),
                    signals
                        .iter()
                        .position(|s| s.name == x.multiplexor_signal_name),
                ) else {
                    continue;
                };
                if let Some(r) = x.mappings.first() {
                    signals[si].mux = Mux::When(r.min_value, r.max_value);
                }
                switch_of[si] = Some(sw);
            }
            messages.push(DbcMessage {
                name: m.name.clone(),
                id,
                extended,
                signals,
                switch,
                switch_of,
            });
        }
        DbcFile {
            messages,
            j1939,
            skipped,
        }
    }

    /// The messages called `name`, or whose id as written (decimal or `0x` hex, with or
    /// without the extended flag) is `name`.
    pub fn find(&self, name: &str) -> Vec<&DbcMessage> {
        let as_id = name
            .strip_prefix("0x")
            .or_else(|| name.strip_prefix("0X"))
            .map_or_else(
                || name.parse::<u32>().ok(),
                |h| u32::from_str_radix(h, 16).ok(),
            );
        self.messages
            .iter()
            .filter(|m| {
                m.name == name
                    || as_id.is_some_and(|id| {
                        id & !frame::EFF_FLAG == m.id && (m.extended || id & frame::EFF_FLAG == 0)
                    })
            })
            .collect()
    }
}

/// The line, column and message of a can-dbc error.
fn locate(e: &can_dbc::DbcError) -> (usize, usize, String) {
    match e {
        can_dbc::DbcError::Pest(p) => {
            let (line, column) = match p.line_col {
                pest::error::LineColLocation::Pos(lc) => lc,
                pest::error::LineColLocation::Span(lc, _) => lc,
            };
            let message = p.variant.message().into_owned();
            (line, column, message)
        }
        other => (0, 0, other.to_string()),
    }
}

/// The byte range of the statement that contains 1-based `line`: from that line to the line
/// holding the statement's `;` (comments and value lists may span lines), or just the line.
fn statement_at(text: &str, line: usize) -> Option<std::ops::Range<usize>> {
    let mut start = 0;
    for _ in 1..line {
        start += text[start..].find('\n')? + 1;
    }
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    // A statement keyword starts the line; extend to the terminating `;` outside quotes.
    let mut in_quotes = false;
    for (i, c) in text[start..].char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => {
                let end = text[start + i..]
                    .find('\n')
                    .map_or(text.len(), |j| start + i + j);
                return Some(start..end);
            }
            _ => {}
        }
    }
    Some(start..line_end)
}

impl DbcSignal {
    /// The raw (unscaled) value in `data`, as signed when the signal is; `None` if it does not
    /// fit `data`.
    pub fn raw(&self, data: &[u8]) -> Option<i128> {
        let size = u32::from(self.size);
        let bits = if self.big_endian {
            extract_be(data, self.start_bit, self.size)?
        } else {
            let start = usize::from(self.start_bit);
            extract_le(
                data,
                (start / 8).try_into().ok()?,
                (start % 8) as u8,
                self.size,
            )?
        };
        Some(
            if self.signed && size < 128 && bits >> (size - 1) & 1 == 1 {
                i128::from(bits) - (1i128 << size)
            } else {
                i128::from(bits)
            },
        )
    }

    /// The signal's value in `data`: its value-table text when `text_values` and the raw
    /// value has one, else `raw × factor + offset`. `None` if it does not fit `data`.
    pub fn decode(&self, data: &[u8], text_values: bool) -> Option<SignalValue> {
        let raw = self.raw(data)?;
        if let Some(width) = self.float {
            let bits = raw as u64;
            let v = if width == 32 {
                f64::from(f32::from_bits(bits as u32))
            } else {
                f64::from_bits(bits)
            };
            return Some(SignalValue::Num(v * self.factor + self.offset));
        }
        if text_values
            && !self.values.is_empty()
            && let Ok(r) = i64::try_from(raw)
            && let Some((_, t)) = self.values.iter().find(|(v, _)| *v == r)
        {
            return Some(SignalValue::Text(t.clone()));
        }
        Some(SignalValue::Num(raw as f64 * self.factor + self.offset))
    }
}

/// Motorola (big-endian) extraction: `start` is the most significant bit in the DBC's
/// sawtooth numbering (bit 7 of byte 0 is 7, bit 0 of byte 1 is 8); the field continues
/// towards less significant bits, wrapping to the next byte's bit 7.
pub fn extract_be(data: &[u8], start: u16, size: u8) -> Option<u64> {
    if size == 0 || size > 64 {
        return None;
    }
    let mut pos = usize::from(start);
    let mut v: u64 = 0;
    for _ in 0..size {
        let byte = *data.get(pos / 8)?;
        v = v << 1 | u64::from(byte >> (pos % 8) & 1);
        pos = if pos % 8 == 0 { pos + 15 } else { pos - 1 };
    }
    Some(v)
}

impl DbcMessage {
    /// Whether signal `i` is present in this payload (its multiplexor, if any, selects it).
    pub fn present(&self, i: usize, data: &[u8]) -> bool {
        let Some(s) = self.signals.get(i) else {
            return false;
        };
        let Mux::When(lo, hi) = s.mux else {
            return true;
        };
        let switch = self.switch_of.get(i).copied().flatten().or(self.switch);
        let Some(sw) = switch.and_then(|k| self.signals.get(k)) else {
            return false;
        };
        match sw.raw(data) {
            Some(v) => u64::try_from(v).is_ok_and(|v| (lo..=hi).contains(&v)),
            None => false,
        }
    }
}

/// Message lookup by id: exact `(id, extended)`, and by PGN for J1939 files.
#[derive(Debug, Clone)]
pub struct MessageIndex<T> {
    exact: HashMap<(u32, bool), Vec<T>>,
    pgn: HashMap<u32, Vec<T>>,
}

impl<T> Default for MessageIndex<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            pgn: HashMap::new(),
        }
    }
}

impl<T> MessageIndex<T> {
    /// Adds `value` for frames with this id (or, with `by_pgn`, this id's PGN).
    pub fn insert(&mut self, id: u32, extended: bool, by_pgn: bool, value: T) {
        if by_pgn && extended {
            let pgn = super::j1939::id::J1939Id::from_raw(id).pgn;
            self.pgn.entry(pgn).or_default().push(value);
        } else {
            self.exact.entry((id, extended)).or_default().push(value);
        }
    }

    /// What matches a frame.
    pub fn get(&self, id: u32, extended: bool, pgn: Option<u32>) -> impl Iterator<Item = &T> {
        let exact = self.exact.get(&(id, extended)).into_iter().flatten();
        let by_pgn = pgn.and_then(|p| self.pgn.get(&p)).into_iter().flatten();
        exact.chain(by_pgn)
    }

    /// `(id, extended, by_pgn)` of every key, for acceptance filters.
    pub fn keys(&self) -> impl Iterator<Item = (u32, bool, bool)> + '_ {
        self.exact
            .keys()
            .map(|&(id, ext)| (id, ext, false))
            .chain(self.pgn.keys().map(|&p| (p, true, true)))
    }

    /// Whether nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.pgn.is_empty()
    }
}

#[cfg(test)]
mod tests;
