//! The line protocol's parser (sans-IO): one line of bytes → a [`Reading`], a [`NewEvent`],
//! nothing (blank line), or a [`LineError`] that names the offending field.
//!
//! The whole line is read in one pass by a hand-written serde visitor straight from the byte
//! slice: string fields are borrowed from the line when they hold no escapes, so a reading costs
//! no allocation beyond the [`Reading`] it becomes. Every field is checked as it is read, so a
//! rejection carries the column where the problem is. `docs/jsonl.md` is the user-facing
//! description of the same rules; keep the two in step.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use uuid::Uuid;
use waymark_wire::time::{EARLIEST_VALID_MS, parse_rfc3339_ms};
use waymark_wire::{Reading, Timestamp, Value};

use crate::store::{Lane, NewEvent};

/// Longest signal name, bytes.
pub const MAX_SIGNAL_BYTES: usize = 128;
/// Longest text value, bytes.
pub const MAX_TEXT_BYTES: usize = 256;
/// Longest unit, bytes.
pub const MAX_UNIT_BYTES: usize = 32;
/// Longest event type, bytes.
pub const MAX_TYPE_BYTES: usize = 128;
/// Longest event subject, bytes.
pub const MAX_SUBJECT_BYTES: usize = 256;
/// Largest serialized event `data`: the CloudEvent around it must stay within
/// [`waymark_wire::event::MAX_EVENT_BYTES`], and its other attributes take less than 1 KiB.
pub const MAX_DATA_BYTES: usize = waymark_wire::event::MAX_EVENT_BYTES - 1024;
/// Longest piece of producer text quoted back in an error.
const QUOTE_MAX: usize = 64;

/// A parsed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Empty or whitespace only: ignored, not answered.
    Blank,
    /// `"kind":"reading"`.
    Reading(Reading),
    /// `"kind":"event"`.
    Event(NewEvent),
}

/// Why a line was rejected; the text names the field (and the column, where known).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LineError(pub String);

impl LineError {
    fn from_json(e: &serde_json::Error) -> Self {
        let text = e.to_string();
        let msg = strip_position(&text);
        // serde_json counts the characters consumed before the error; 0 is the first one.
        let col = e.column().max(1);
        match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                LineError(format!("invalid JSON: {msg} at column {col}"))
            }
            _ => LineError(format!("{msg} at column {col}")),
        }
    }
}

/// Parses one line (without its line terminator).
///
/// `source` goes into each reading's `source`; `received_ms` is the time a reading or event
/// without `time` gets. An event without `id` gets a fresh UUIDv7.
///
/// # Errors
/// [`LineError`] naming the field: bad JSON, not an object, unknown `kind`, a missing, unknown,
/// duplicate, misplaced or invalid field.
pub fn parse_line(line: &[u8], source: &str, received_ms: Timestamp) -> Result<Parsed, LineError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(Parsed::Blank);
    }
    // Valid UTF-8 (the normal case) is checked once for the whole line, which is cheaper than
    // serde_json checking every string on its own; otherwise the byte parser finds the
    // offending field.
    let fields = match std::str::from_utf8(line) {
        Ok(text) => parse_fields(serde_json::Deserializer::from_str(text))?,
        Err(_) => parse_fields(serde_json::Deserializer::from_slice(line))?,
    };
    Ok(match fields {
        Line::Reading {
            signal,
            value,
            unit,
            time,
        } => Parsed::Reading(Reading {
            signal: signal.into_owned(),
            value,
            unit: unit.map(Cow::into_owned).unwrap_or_default(),
            time: time.unwrap_or(received_ms),
            source: source.to_owned(),
        }),
        Line::Event {
            type_,
            data,
            id,
            time,
            subject,
            lane,
        } => Parsed::Event(NewEvent {
            id: id.unwrap_or_else(Uuid::now_v7),
            type_: type_.into_owned(),
            time_ms: time.unwrap_or(received_ms),
            lane,
            subject: subject.map(Cow::into_owned),
            data,
        }),
    })
}

fn parse_fields<'a, R: serde_json::de::Read<'a>>(
    mut de: serde_json::Deserializer<R>,
) -> Result<Line<'a>, LineError> {
    let fields = (&mut de)
        .deserialize_map(LineVisitor)
        .map_err(|e| LineError::from_json(&e))?;
    de.end().map_err(|e| LineError::from_json(&e))?;
    Ok(fields)
}

/// A checked line, still borrowing from the input.
enum Line<'a> {
    Reading {
        signal: Cow<'a, str>,
        value: Value,
        unit: Option<Cow<'a, str>>,
        time: Option<Timestamp>,
    },
    Event {
        type_: Cow<'a, str>,
        data: serde_json::Value,
        id: Option<Uuid>,
        time: Option<Timestamp>,
        subject: Option<Cow<'a, str>>,
        lane: Lane,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Reading,
    Event,
}

/// The fields of the protocol, in the order the docs list them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Field {
    Kind,
    Signal,
    Value,
    Unit,
    Time,
    Type,
    Data,
    Id,
    Subject,
    Priority,
}

impl Field {
    const ALL: [Field; 10] = [
        Field::Kind,
        Field::Signal,
        Field::Value,
        Field::Unit,
        Field::Time,
        Field::Type,
        Field::Data,
        Field::Id,
        Field::Subject,
        Field::Priority,
    ];

    fn name(self) -> &'static str {
        match self {
            Field::Kind => "kind",
            Field::Signal => "signal",
            Field::Value => "value",
            Field::Unit => "unit",
            Field::Time => "time",
            Field::Type => "type",
            Field::Data => "data",
            Field::Id => "id",
            Field::Subject => "subject",
            Field::Priority => "priority",
        }
    }

    fn parse(key: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == key)
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }

    /// Whether the field may appear in a line of this kind.
    fn allowed_in(self, kind: Kind) -> bool {
        match self {
            Field::Kind | Field::Time => true,
            Field::Signal | Field::Value | Field::Unit => kind == Kind::Reading,
            Field::Type | Field::Data | Field::Id | Field::Subject | Field::Priority => {
                kind == Kind::Event
            }
        }
    }
}

fn field_error<E: de::Error>(field: Field, msg: impl fmt::Display) -> E {
    E::custom(format_args!("field `{}`: {msg}", field.name()))
}

/// Everything seen so far in the object.
#[derive(Default)]
struct Fields<'a> {
    seen: u16,
    kind: Option<Kind>,
    signal: Option<Cow<'a, str>>,
    value: Option<Value>,
    unit: Option<Cow<'a, str>>,
    time: Option<Timestamp>,
    type_: Option<Cow<'a, str>>,
    data: Option<serde_json::Value>,
    id: Option<Uuid>,
    subject: Option<Cow<'a, str>>,
    lane: Option<Lane>,
}

struct LineVisitor;

impl<'de> Visitor<'de> for LineVisitor {
    type Value = Line<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Line<'de>, A::Error> {
        let mut f = Fields::default();
        while let Some(key) = map.next_key::<Str<'de>>()? {
            let Some(field) = Field::parse(&key.0) else {
                return Err(de::Error::custom(format_args!(
                    "unknown field {}",
                    quote(&key.0)
                )));
            };
            if f.seen & field.bit() != 0 {
                return Err(field_error(field, "appears twice"));
            }
            f.seen |= field.bit();
            if field == Field::Data {
                let data: serde_json::Value = next_value(&mut map, field)?;
                check_data(&data).map_err(|m| field_error(field, m))?;
                f.data = Some(data);
                continue;
            }
            let v: Json<'de> = next_value(&mut map, field)?;
            read_field(&mut f, field, v).map_err(|m| field_error(field, m))?;
        }
        finish(f)
    }
}

/// Reads one value, naming the field in any error the JSON parser reports inside it.
fn next_value<'de, A: MapAccess<'de>, T: de::Deserialize<'de>>(
    map: &mut A,
    field: Field,
) -> Result<T, A::Error> {
    map.next_value::<T>().map_err(|e| {
        let text = e.to_string();
        let msg = strip_position(&text);
        if msg.starts_with("number out of range") {
            field_error(field, "expected a finite number (number out of range)")
        } else {
            field_error(field, msg)
        }
    })
}

/// Checks and stores one field's value. The error text is prefixed with the field by the caller.
fn read_field<'a>(f: &mut Fields<'a>, field: Field, v: Json<'a>) -> Result<(), String> {
    // Optional fields may be `null`, which is the same as leaving them out.
    let optional = matches!(
        field,
        Field::Unit | Field::Time | Field::Id | Field::Subject | Field::Priority
    );
    if optional && matches!(v, Json::Null) {
        return Ok(());
    }
    match field {
        Field::Kind => {
            let s = expect_str(v, "\"reading\" or \"event\"")?;
            f.kind = Some(match &*s {
                "reading" => Kind::Reading,
                "event" => Kind::Event,
                other => {
                    return Err(format!(
                        "unknown kind {}, expected \"reading\" or \"event\"",
                        quote(other)
                    ));
                }
            });
        }
        Field::Signal => {
            let s = expect_str(v, "a string")?;
            check_signal(&s)?;
            f.signal = Some(s);
        }
        Field::Value => {
            f.value = Some(match v {
                Json::Num(n) if n.is_finite() => Value::Num(n),
                Json::Num(_) => return Err("expected a finite number".into()),
                Json::Bool(b) => Value::Bool(b),
                Json::Str(s) if s.len() > MAX_TEXT_BYTES => {
                    return Err(format!(
                        "text is {} bytes, the limit is {MAX_TEXT_BYTES}",
                        s.len()
                    ));
                }
                Json::Str(s) => Value::Text(s.into_owned()),
                other => {
                    return Err(format!(
                        "expected a number, boolean or string, found {}",
                        other.what()
                    ));
                }
            });
        }
        Field::Unit => {
            let s = expect_str(v, "a string")?;
            if s.len() > MAX_UNIT_BYTES {
                return Err(format!("{} bytes, the limit is {MAX_UNIT_BYTES}", s.len()));
            }
            if s.chars().any(char::is_control) {
                return Err("contains a control character".into());
            }
            f.unit = Some(s);
        }
        Field::Time => {
            let s = expect_str(v, "an RFC 3339 time string")?;
            let ms = parse_rfc3339_ms(&s).map_err(|_| {
                format!(
                    "expected an RFC 3339 time like \"2026-11-23T07:52:50.123Z\", found {}",
                    quote(&s)
                )
            })?;
            if ms < EARLIEST_VALID_MS {
                return Err(format!(
                    "{} is before 2020-01-01T00:00:00Z (leave `time` out if the clock is not set)",
                    quote(&s)
                ));
            }
            f.time = Some(ms);
        }
        Field::Type => {
            let s = expect_str(v, "a string")?;
            check_type(&s)?;
            f.type_ = Some(s);
        }
        Field::Id => {
            let s = expect_str(v, "a UUIDv7 string")?;
            let id = Uuid::try_parse(&s)
                .map_err(|_| format!("expected a UUIDv7, found {}", quote(&s)))?;
            if id.get_version_num() != 7 || id.get_variant() != uuid::Variant::RFC4122 {
                return Err(format!(
                    "expected a UUIDv7, found a version {} UUID",
                    id.get_version_num()
                ));
            }
            f.id = Some(id);
        }
        Field::Subject => {
            let s = expect_str(v, "a string")?;
            if s.is_empty() || s.len() > MAX_SUBJECT_BYTES {
                return Err(format!(
                    "{} bytes, expected 1 to {MAX_SUBJECT_BYTES}",
                    s.len()
                ));
            }
            if s.chars().any(char::is_control) {
                return Err("contains a control character".into());
            }
            f.subject = Some(s);
        }
        Field::Priority => {
            let s = expect_str(v, "\"alert\" or \"milestone\"")?;
            f.lane = Some(match &*s {
                "alert" => Lane::Alert,
                "milestone" => Lane::Milestone,
                other => {
                    return Err(format!(
                        "unknown priority {}, expected \"alert\" or \"milestone\"",
                        quote(other)
                    ));
                }
            });
        }
        // Read as a whole `serde_json::Value` by the caller.
        Field::Data => {}
    }
    Ok(())
}

/// Cross-field checks once the object is complete.
fn finish<'a, E: de::Error>(f: Fields<'a>) -> Result<Line<'a>, E> {
    let Some(kind) = f.kind else {
        return Err(field_error(
            Field::Kind,
            "missing, expected \"reading\" or \"event\"",
        ));
    };
    if let Some(field) = Field::ALL
        .into_iter()
        .find(|x| f.seen & x.bit() != 0 && !x.allowed_in(kind))
    {
        let what = if kind == Kind::Reading {
            "a reading"
        } else {
            "an event"
        };
        return Err(field_error(field, format_args!("not allowed in {what}")));
    }
    match kind {
        Kind::Reading => {
            let signal = f
                .signal
                .ok_or_else(|| field_error(Field::Signal, "missing"))?;
            let value = f
                .value
                .ok_or_else(|| field_error(Field::Value, "missing"))?;
            Ok(Line::Reading {
                signal,
                value,
                unit: f.unit,
                time: f.time,
            })
        }
        Kind::Event => {
            let type_ = f.type_.ok_or_else(|| field_error(Field::Type, "missing"))?;
            let data = f
                .data
                .ok_or_else(|| field_error(Field::Data, "missing, expected an object"))?;
            Ok(Line::Event {
                type_,
                data,
                id: f.id,
                time: f.time,
                subject: f.subject,
                lane: f.lane.unwrap_or(Lane::Milestone),
            })
        }
    }
}

fn expect_str<'a>(v: Json<'a>, expected: &str) -> Result<Cow<'a, str>, String> {
    match v {
        Json::Str(s) => Ok(s),
        other => Err(format!("expected {expected}, found {}", other.what())),
    }
}

/// `signal`: 1 to 128 bytes of printable ASCII without spaces (`!` to `~`).
fn check_signal(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_SIGNAL_BYTES {
        return Err(format!(
            "{} bytes, expected 1 to {MAX_SIGNAL_BYTES}",
            s.len()
        ));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "character {c:?} is not printable ASCII (`!` to `~`)"
        ));
    }
    Ok(())
}

/// `type`: `^[a-z0-9]+(\.[a-z0-9_]+)+$`, at most 128 bytes.
fn check_type(s: &str) -> Result<(), String> {
    if s.len() > MAX_TYPE_BYTES {
        return Err(format!("{} bytes, the limit is {MAX_TYPE_BYTES}", s.len()));
    }
    let mut segments = s.split('.');
    let first_ok = segments.next().is_some_and(|seg| {
        !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    let mut rest = 0;
    let rest_ok = segments.all(|seg| {
        rest += 1;
        !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    });
    if first_ok && rest_ok && rest >= 1 {
        Ok(())
    } else {
        Err(format!(
            "{} is not a dotted lower-case name like \"waymark.pod.delivered\" \
             (segments of a-z, 0-9 and _, at least two, the first without _)",
            quote(s)
        ))
    }
}

fn check_data(data: &serde_json::Value) -> Result<(), String> {
    let serde_json::Value::Object(_) = data else {
        return Err(format!("expected an object, found {}", json_what(data)));
    };
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, data).map_err(|e| format!("cannot be serialized: {e}"))?;
    if counter.0 > MAX_DATA_BYTES {
        return Err(format!(
            "{} bytes serialized, the limit is {MAX_DATA_BYTES}",
            counter.0
        ));
    }
    Ok(())
}

fn json_what(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Counts serialized bytes without keeping them.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Drops serde_json's " at line L column C" suffix (the caller reports the column itself).
fn strip_position(msg: &str) -> &str {
    let Some(i) = msg.rfind(" at line ") else {
        return msg;
    };
    let tail = &msg[i + " at line ".len()..];
    let mut parts = tail.splitn(2, " column ");
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (parts.next(), parts.next()) {
        (Some(l), Some(c)) if digits(l) && digits(c) => &msg[..i],
        _ => msg,
    }
}

/// Producer text quoted in an error: JSON-ish quotes, cut to [`QUOTE_MAX`] bytes.
fn quote(s: &str) -> String {
    if s.len() <= QUOTE_MAX {
        return format!("{s:?}");
    }
    let mut end = QUOTE_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &s[..end])
}

/// A string borrowed from the line when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Str<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Str(Cow::Owned(v)))
    }
}

/// Any JSON value, keeping only what the scalar fields need; arrays and objects are parsed
/// (so syntax errors are still found) and dropped.
enum Json<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl Json<'_> {
    fn what(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Num(_) => "a number",
            Json::Str(_) => "a string",
            Json::Array => "an array",
            Json::Object => "an object",
        }
    }
}

impl<'de> de::Deserialize<'de> for Json<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Json::Bool(v))
    }
    // Integers beyond 2^53 lose precision as readings are f64.
    #[allow(clippy::cast_precision_loss)]
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Json::Num(v as f64))
    }
    #[allow(clippy::cast_precision_loss)]
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Json::Num(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Json::Num(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Json::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Json::Object)
    }
}

#[cfg(test)]
mod tests;
