//! The encoder: group readings into series, build the string table, write the body, compress.

use std::collections::HashMap;

use super::codec::{put_varint, put_zigzag, varint_len, zigzag};
use super::{
    COMPRESSION_NONE, COMPRESSION_ZSTD, EncodeError, FORMAT_VERSION, MAGIC, MAX_BODY_BYTES,
    MAX_DECODED_TEXT_BYTES, MAX_READINGS, MAX_STRING_LEN, ZSTD_LEVEL, builtin, crc32c::crc32c,
};
use crate::{Reading, Value};

/// Codec ids: the low nibble of a series' codec byte.
pub(super) const CODEC_DECIMAL_DELTA: u8 = 0;
pub(super) const CODEC_DECIMAL_DELTA2: u8 = 1;
pub(super) const CODEC_FLOAT_XOR: u8 = 2;
pub(super) const CODEC_BOOL: u8 = 3;
pub(super) const CODEC_TEXT: u8 = 4;

/// Largest decimal scale: a value is `mantissa / 10^scale`, `scale ∈ 0..=9`.
pub(super) const MAX_SCALE: usize = 9;
/// Largest mantissa magnitude: every integer up to 2⁵³ is exact in an `f64`.
pub(super) const MAX_MANTISSA: i64 = 1 << 53;
/// `10^k` for `k ∈ 0..=9`; all exact in an `f64`.
pub(super) const POW10: [f64; MAX_SCALE + 1] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// Value type of a series; part of the series key so that a signal that changes type stays
/// lossless.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Num,
    Bool,
    Text,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key<'a> {
    signal: &'a str,
    unit: &'a str,
    source: &'a str,
    kind: Kind,
}

fn limit(what: &'static str, value: usize, max: usize) -> Result<(), EncodeError> {
    if value > max {
        return Err(EncodeError::Limit {
            what,
            value: value as u64,
            max: max as u64,
        });
    }
    Ok(())
}

/// The batch's own string table; refs start after the built-in strings.
#[derive(Default)]
struct Table<'a> {
    index: HashMap<&'a str, u32>,
    strings: Vec<&'a str>,
}

impl<'a> Table<'a> {
    fn intern(&mut self, s: &'a str) -> u32 {
        if let Some(b) = builtin::lookup(s) {
            return b;
        }
        let next = builtin::COUNT as u32 + self.strings.len() as u32;
        *self.index.entry(s).or_insert_with(|| {
            self.strings.push(s);
            next
        })
    }
}

pub(super) fn encode(readings: &[Reading], compress: bool) -> Result<Vec<u8>, EncodeError> {
    limit("readings", readings.len(), MAX_READINGS)?;

    // 1. Series by first appearance; `series_of[i]` is reading i's series.
    let mut keys: Vec<Key<'_>> = Vec::new();
    let mut lookup: HashMap<Key<'_>, u32> = HashMap::new();
    let mut series_of: Vec<u32> = Vec::with_capacity(readings.len());
    let mut text_bytes = 0usize;
    let mut last: Option<u32> = None;
    for r in readings {
        let kind = match &r.value {
            Value::Num(_) => Kind::Num,
            Value::Bool(_) => Kind::Bool,
            Value::Text(t) => {
                limit("text value length", t.len(), MAX_STRING_LEN)?;
                text_bytes += t.len();
                Kind::Text
            }
        };
        text_bytes += r.signal.len() + r.unit.len() + r.source.len();
        let key = Key {
            signal: &r.signal,
            unit: &r.unit,
            source: &r.source,
            kind,
        };
        // Input usually cycles through the same series in the same order (one instant after
        // another) or repeats one series; try those guesses before hashing three strings.
        let guess = match last {
            Some(s) if keys[s as usize] == key => Some(s),
            Some(s) if keys.get(s as usize + 1) == Some(&key) => Some(s + 1),
            Some(_) if keys.first() == Some(&key) => Some(0),
            _ => None,
        };
        let s = match guess {
            Some(s) => s,
            None => match lookup.get(&key) {
                Some(&s) => s,
                None => {
                    limit("signal length", r.signal.len(), MAX_STRING_LEN)?;
                    limit("unit length", r.unit.len(), MAX_STRING_LEN)?;
                    limit("source length", r.source.len(), MAX_STRING_LEN)?;
                    let s = keys.len() as u32;
                    keys.push(key);
                    lookup.insert(key, s);
                    s
                }
            },
        };
        last = Some(s);
        series_of.push(s);
    }
    drop(lookup);
    limit("decoded text bytes", text_bytes, MAX_DECODED_TEXT_BYTES)?;

    // 2. Stable counting sort of reading indices by series.
    let mut start = vec![0u32; keys.len() + 1];
    for &s in &series_of {
        start[s as usize + 1] += 1;
    }
    for i in 0..keys.len() {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut order = vec![0u32; readings.len()];
    for (i, &s) in series_of.iter().enumerate() {
        order[fill[s as usize] as usize] = i as u32;
        fill[s as usize] += 1;
    }

    // 3. String table in order of first use: per series signal, unit, source, text values.
    let mut table = Table::default();
    let mut refs: Vec<[u32; 3]> = Vec::with_capacity(keys.len());
    let mut text_refs: Vec<u32> = Vec::new();
    for (s, key) in keys.iter().enumerate() {
        refs.push([
            table.intern(key.signal),
            table.intern(key.unit),
            table.intern(key.source),
        ]);
        if key.kind == Kind::Text {
            if text_refs.is_empty() {
                text_refs = vec![0; readings.len()];
            }
            for &i in &order[start[s] as usize..start[s + 1] as usize] {
                if let Value::Text(t) = &readings[i as usize].value {
                    text_refs[i as usize] = table.intern(t);
                }
            }
        }
    }

    // 4. Body.
    let base_time = readings.first().map_or(0, |r| r.time);
    let mut body = Vec::with_capacity(64 + readings.len() * 4);
    put_zigzag(&mut body, base_time);
    put_varint(&mut body, table.strings.len() as u64);
    for s in &table.strings {
        put_varint(&mut body, s.len() as u64);
        body.extend_from_slice(s.as_bytes());
    }
    put_varint(&mut body, keys.len() as u64);
    let mut nums: Vec<f64> = Vec::new();
    let mut mants: Vec<i64> = Vec::new();
    for (s, key) in keys.iter().enumerate() {
        let members = &order[start[s] as usize..start[s + 1] as usize];
        for r in refs[s] {
            put_varint(&mut body, u64::from(r));
        }
        let codec_at = body.len();
        body.push(0); // codec byte, set below once chosen
        put_varint(&mut body, members.len() as u64);
        write_delta2(
            &mut body,
            base_time,
            members.iter().map(|&i| readings[i as usize].time),
        );
        body[codec_at] = match key.kind {
            Kind::Num => {
                nums.clear();
                nums.extend(members.iter().map(|&i| match readings[i as usize].value {
                    Value::Num(v) => v,
                    // Unreachable: the series key holds the kind.
                    _ => f64::NAN,
                }));
                write_numbers(&mut body, &nums, &mut mants)
            }
            Kind::Bool => {
                let mut byte = 0u8;
                for (j, &i) in members.iter().enumerate() {
                    if matches!(readings[i as usize].value, Value::Bool(true)) {
                        byte |= 1 << (j % 8);
                    }
                    if j % 8 == 7 {
                        body.push(byte);
                        byte = 0;
                    }
                }
                if !members.len().is_multiple_of(8) {
                    body.push(byte);
                }
                CODEC_BOOL
            }
            Kind::Text => {
                for &i in members {
                    put_varint(&mut body, u64::from(text_refs[i as usize]));
                }
                CODEC_TEXT
            }
        };
    }
    limit("body bytes", body.len(), MAX_BODY_BYTES)?;

    // 5. Header, and the smaller of raw and zstd.
    let crc = crc32c(&body);
    let packed = if compress && !body.is_empty() {
        zstd::bulk::compress(&body, ZSTD_LEVEL)
            .ok()
            .filter(|z| z.len() < body.len())
    } else {
        None
    };
    let (compression, wire_body) = match &packed {
        Some(z) => (COMPRESSION_ZSTD, z.as_slice()),
        None => (COMPRESSION_NONE, body.as_slice()),
    };
    let mut out = Vec::with_capacity(12 + wire_body.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(compression);
    put_varint(&mut out, body.len() as u64);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(wire_body);
    Ok(out)
}

/// Writes `values` as zigzag varints of their second differences (wrapping): the first value
/// relative to `base`, the second relative to the first, then the change of the difference.
fn write_delta2(out: &mut Vec<u8>, base: i64, values: impl Iterator<Item = i64>) {
    let mut prev = base;
    let mut prev_d = 0i64;
    for (j, v) in values.enumerate() {
        let d = v.wrapping_sub(prev);
        put_zigzag(out, d.wrapping_sub(prev_d));
        prev = v;
        prev_d = if j == 0 { 0 } else { d };
    }
}

/// The mantissa of `v` at `scale` if `mantissa / 10^scale` gives back `v` bit for bit.
pub(super) fn mantissa(v: f64, scale: usize) -> Option<i64> {
    let p = POW10[scale];
    let x = v * p;
    // Also rejects NaN and ±inf.
    if x.is_nan() || x.abs() > MAX_MANTISSA as f64 {
        return None;
    }
    let m = x.round() as i64;
    ((m as f64 / p).to_bits() == v.to_bits()).then_some(m)
}

/// Smallest scale at which every value round-trips (values round-trip at every larger scale
/// too as long as the mantissa stays within 2⁵³, so one pass suffices; the caller verifies).
fn decimal_scale(values: &[f64]) -> Option<usize> {
    let mut k = 0;
    for &v in values {
        while mantissa(v, k).is_none() {
            k += 1;
            if k > MAX_SCALE {
                return None;
            }
        }
    }
    Some(k)
}

/// Largest step of the decimal codecs (exclusive), so that it fits a 3-byte varint.
pub(super) const STEP_LIMIT: u64 = 1 << 21;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Writes a number column and returns its codec byte.
fn write_numbers(out: &mut Vec<u8>, values: &[f64], mants: &mut Vec<i64>) -> u8 {
    if let Some(scale) = decimal_scale(values) {
        mants.clear();
        let mut exact = true;
        for &v in values {
            match mantissa(v, scale) {
                Some(m) => mants.push(m),
                None => {
                    exact = false;
                    break;
                }
            }
        }
        if exact {
            // Quantised sensors (0.125 rpm, 0.4 %, 0.0625 °C) change in multiples of a step.
            // With two values the gcd is the one difference itself, which never pays.
            let step = if mants.len() < 3 {
                1
            } else {
                mants
                    .windows(2)
                    .fold(0, |g, w| gcd(g, (w[1] - w[0]).unsigned_abs()))
            };
            let step = if step == 0 || step >= STEP_LIMIT {
                1
            } else {
                step
            };
            let step_i = step as i64;
            // Pick the difference order with fewer varint bytes (ties: first order).
            let (mut size1, mut size2) = (0usize, 0usize);
            let mut prev_q = 0i64;
            for w in mants.windows(2) {
                let q = (w[1] - w[0]) / step_i;
                size1 += varint_len(zigzag(q));
                size2 += varint_len(zigzag(q - prev_q));
                prev_q = q;
            }
            // A single value has no differences, hence no step.
            if mants.len() > 1 {
                put_varint(out, step);
            }
            put_zigzag(out, mants[0]);
            let mut prev_q = 0i64;
            for w in mants.windows(2) {
                let q = (w[1] - w[0]) / step_i;
                put_zigzag(out, if size2 < size1 { q - prev_q } else { q });
                prev_q = q;
            }
            let codec = if size2 < size1 {
                CODEC_DECIMAL_DELTA2
            } else {
                CODEC_DECIMAL_DELTA
            };
            return ((scale as u8) << 4) | codec;
        }
    }
    // Gorilla-style: XOR with the previous value's bits, store only the non-zero byte span.
    let mut prev = 0u64;
    for &v in values {
        let bits = v.to_bits();
        let x = bits ^ prev;
        prev = bits;
        if x == 0 {
            out.push(0);
            continue;
        }
        let tz = x.trailing_zeros() / 8;
        let n = 8 - tz - x.leading_zeros() / 8;
        out.push(((tz as u8) << 4) | n as u8);
        out.extend_from_slice(&(x >> (8 * tz)).to_le_bytes()[..n as usize]);
    }
    CODEC_FLOAT_XOR
}
