//! The decoder: check the header, decompress into a buffer no larger than the declared (and
//! capped) body length, verify the CRC, then parse the body with every count checked against
//! its limit and the bytes left before anything is allocated for it.

use super::codec::Reader;
use super::encode::{
    CODEC_BOOL, CODEC_DECIMAL_DELTA, CODEC_DECIMAL_DELTA2, CODEC_FLOAT_XOR, CODEC_TEXT,
    MAX_MANTISSA, MAX_SCALE, POW10, STEP_LIMIT,
};
use super::{
    COMPRESSION_NONE, COMPRESSION_ZSTD, DecodeError, FORMAT_VERSION, MAGIC, MAX_BODY_BYTES,
    MAX_DECODED_TEXT_BYTES, MAX_READINGS, MAX_SERIES, MAX_STRING_LEN, MAX_STRINGS, Section,
    builtin, crc32c::crc32c,
};
use crate::{Reading, Value};

pub(super) fn decode(bytes: &[u8]) -> Result<Vec<Reading>, DecodeError> {
    let mut h = Reader::new(bytes, Section::Header);
    let magic = h.bytes(2, "magic")?;
    if magic != MAGIC {
        return Err(DecodeError::BadMagic {
            found: [magic[0], magic[1]],
        });
    }
    let version = h.u8("version")?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    let compression = h.u8("compression")?;
    if compression != COMPRESSION_NONE && compression != COMPRESSION_ZSTD {
        return Err(DecodeError::UnknownCompression { found: compression });
    }
    let body_len = h.varint_max("body_len", MAX_BODY_BYTES as u64)? as usize;
    let crc = h.bytes(4, "crc32c")?;
    let declared_crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let body_at = h.pos();
    let rest = h.rest();

    let decompressed;
    let body: &[u8] = if compression == COMPRESSION_ZSTD {
        // `body_len ≤ MAX_BODY_BYTES` bounds the buffer; zstd fails if the frame would overflow it.
        decompressed =
            zstd::bulk::decompress(rest, body_len).map_err(|source| DecodeError::Decompress {
                offset: body_at,
                source,
            })?;
        &decompressed
    } else {
        rest
    };
    if body.len() != body_len {
        return Err(DecodeError::BodyLength {
            declared: body_len,
            actual: body.len(),
        });
    }
    let computed = crc32c(body);
    if computed != declared_crc {
        return Err(DecodeError::Checksum {
            declared: declared_crc,
            computed,
        });
    }
    parse_body(body)
}

fn invalid(offset: usize, field: &'static str, reason: &'static str) -> DecodeError {
    DecodeError::Invalid {
        offset,
        field,
        reason,
    }
}

fn limit(offset: usize, field: &'static str, value: usize, max: usize) -> DecodeError {
    DecodeError::Limit {
        section: Section::Body,
        offset,
        field,
        value: value as u64,
        max: max as u64,
    }
}

/// A string ref: built-in strings first, then the batch's table.
fn string_ref<'a>(
    r: &mut Reader<'a>,
    table: &[&'a str],
    field: &'static str,
) -> Result<&'a str, DecodeError> {
    let at = r.pos();
    let i = r.varint(field)?;
    let found = if i < builtin::COUNT {
        builtin::BUILTIN.get(i as usize).copied()
    } else {
        usize::try_from(i - builtin::COUNT)
            .ok()
            .and_then(|j| table.get(j).copied())
    };
    found.ok_or_else(|| invalid(at, field, "string ref beyond the string table"))
}

fn parse_body(body: &[u8]) -> Result<Vec<Reading>, DecodeError> {
    let mut r = Reader::new(body, Section::Body);
    let base_time = r.zigzag("base_time")?;

    // String table; every entry takes at least one byte.
    let n_strings = r.varint_max("string_count", MAX_STRINGS.min(r.remaining()) as u64)? as usize;
    let mut table: Vec<&str> = Vec::with_capacity(n_strings);
    for _ in 0..n_strings {
        let len = r.varint_max("string_len", MAX_STRING_LEN as u64)? as usize;
        let at = r.pos();
        let bytes = r.bytes(len, "string_bytes")?;
        let s = std::str::from_utf8(bytes).map_err(|_| invalid(at, "string_bytes", "not UTF-8"))?;
        table.push(s);
    }

    let n_series = r.varint_max("series_count", MAX_SERIES as u64)?;
    let mut out: Vec<Reading> = Vec::new();
    let mut times: Vec<i64> = Vec::new();
    let mut text_bytes = 0usize;
    for _ in 0..n_series {
        let signal = string_ref(&mut r, &table, "signal_ref")?;
        let unit = string_ref(&mut r, &table, "unit_ref")?;
        let source = string_ref(&mut r, &table, "source_ref")?;

        let codec_at = r.pos();
        let codec_byte = r.u8("codec")?;
        let (codec, scale) = (codec_byte & 0x0f, usize::from(codec_byte >> 4));
        match codec {
            CODEC_DECIMAL_DELTA | CODEC_DECIMAL_DELTA2 if scale > MAX_SCALE => {
                return Err(invalid(codec_at, "codec", "decimal scale above 9"));
            }
            CODEC_DECIMAL_DELTA | CODEC_DECIMAL_DELTA2 => {}
            CODEC_FLOAT_XOR | CODEC_BOOL | CODEC_TEXT if scale != 0 => {
                return Err(invalid(
                    codec_at,
                    "codec",
                    "scale set on a non-decimal codec",
                ));
            }
            CODEC_FLOAT_XOR | CODEC_BOOL | CODEC_TEXT => {}
            _ => return Err(invalid(codec_at, "codec", "unknown codec id")),
        }

        // Every reading takes at least one time byte, so `count ≤ remaining` bounds the
        // allocation by the body length as well as by MAX_READINGS.
        let count_at = r.pos();
        let count = r.varint("count")?;
        if count == 0 {
            return Err(invalid(
                count_at,
                "count",
                "a series has at least one reading",
            ));
        }
        let max = (MAX_READINGS - out.len()).min(r.remaining());
        let count = match usize::try_from(count) {
            Ok(c) if c <= max => c,
            _ => {
                return Err(DecodeError::Limit {
                    section: Section::Body,
                    offset: count_at,
                    field: "count",
                    value: count,
                    max: max as u64,
                });
            }
        };
        text_bytes += count * (signal.len() + unit.len() + source.len());
        if text_bytes > MAX_DECODED_TEXT_BYTES {
            return Err(limit(
                count_at,
                "decoded text bytes",
                text_bytes,
                MAX_DECODED_TEXT_BYTES,
            ));
        }

        times.clear();
        let (mut prev, mut prev_d) = (base_time, 0i64);
        for j in 0..count {
            let e = r.zigzag("time")?;
            let d = e.wrapping_add(prev_d);
            prev = prev.wrapping_add(d);
            prev_d = if j == 0 { 0 } else { d };
            times.push(prev);
        }

        out.reserve(count);
        let mut push = |time: i64, value: Value| {
            out.push(Reading {
                signal: signal.to_owned(),
                value,
                unit: unit.to_owned(),
                time,
                source: source.to_owned(),
            });
        };
        match codec {
            CODEC_DECIMAL_DELTA | CODEC_DECIMAL_DELTA2 => {
                let p = POW10[scale];
                let step_at = r.pos();
                let step = if count > 1 { r.varint("step")? } else { 1 };
                if step == 0 || step >= STEP_LIMIT {
                    return Err(invalid(step_at, "step", "step outside 1..2^21"));
                }
                let (mut m, mut prev_q) = (0i64, 0i64);
                for (j, &t) in times.iter().enumerate() {
                    let at = r.pos();
                    let e = r.zigzag("value")?;
                    m = if j == 0 {
                        e
                    } else {
                        let q = if codec == CODEC_DECIMAL_DELTA {
                            e
                        } else {
                            e.wrapping_add(prev_q)
                        };
                        prev_q = q;
                        m.wrapping_add(q.wrapping_mul(step as i64))
                    };
                    if m.unsigned_abs() > MAX_MANTISSA as u64 {
                        return Err(invalid(at, "value", "decimal mantissa beyond 2^53"));
                    }
                    push(t, Value::Num(m as f64 / p));
                }
            }
            CODEC_FLOAT_XOR => {
                let mut prev = 0u64;
                for &t in &times {
                    let at = r.pos();
                    let control = r.u8("value")?;
                    if control != 0 {
                        let (tz, n) = (usize::from(control >> 4), usize::from(control & 0x0f));
                        if n == 0 || tz + n > 8 {
                            return Err(invalid(at, "value", "float control byte out of range"));
                        }
                        let bytes = r.bytes(n, "value")?;
                        if bytes[0] == 0 || bytes[n - 1] == 0 {
                            return Err(invalid(at, "value", "float bytes not minimal"));
                        }
                        let mut le = [0u8; 8];
                        le[..n].copy_from_slice(bytes);
                        prev ^= u64::from_le_bytes(le) << (8 * tz);
                    }
                    push(t, Value::Num(f64::from_bits(prev)));
                }
            }
            CODEC_BOOL => {
                let at = r.pos();
                let bits = r.bytes(count.div_ceil(8), "bools")?;
                if !count.is_multiple_of(8) && bits[bits.len() - 1] >> (count % 8) != 0 {
                    return Err(invalid(at, "bools", "padding bits are not zero"));
                }
                for (j, &t) in times.iter().enumerate() {
                    push(t, Value::Bool((bits[j / 8] >> (j % 8)) & 1 == 1));
                }
            }
            _ => {
                for &t in &times {
                    let text = string_ref(&mut r, &table, "text_ref")?;
                    text_bytes += text.len();
                    if text_bytes > MAX_DECODED_TEXT_BYTES {
                        return Err(limit(
                            count_at,
                            "decoded text bytes",
                            text_bytes,
                            MAX_DECODED_TEXT_BYTES,
                        ));
                    }
                    push(t, Value::Text(text.to_owned()));
                }
            }
        }
    }
    if r.remaining() != 0 {
        return Err(invalid(
            r.pos(),
            "end of body",
            "trailing bytes after the last series",
        ));
    }
    Ok(out)
}
