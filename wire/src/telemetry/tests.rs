//! Unit and property tests of the telemetry batch format (golden bytes live in
//! `wire/tests/golden.rs`).

use proptest::prelude::*;

use super::codec::put_varint;
use super::crc32c::crc32c;
use super::*;

fn num(signal: &str, unit: &str, time: i64, v: f64) -> Reading {
    Reading {
        signal: signal.into(),
        value: Value::Num(v),
        unit: unit.into(),
        time,
        source: "gps".into(),
    }
}

/// Same reading, floats compared bit for bit.
fn same(a: &Reading, b: &Reading) -> bool {
    let values = match (&a.value, &b.value) {
        (Value::Num(x), Value::Num(y)) => x.to_bits() == y.to_bits(),
        (x, y) => x == y,
    };
    values && a.signal == b.signal && a.unit == b.unit && a.source == b.source && a.time == b.time
}

fn kind(v: &Value) -> u8 {
    match v {
        Value::Num(_) => 0,
        Value::Bool(_) => 1,
        Value::Text(_) => 2,
    }
}

/// What decode promises: readings stably grouped by series, series by first appearance.
fn grouped(rs: &[Reading]) -> Vec<Reading> {
    let mut keys: Vec<(&str, &str, &str, u8)> = Vec::new();
    let mut tagged: Vec<(usize, &Reading)> = rs
        .iter()
        .map(|r| {
            let k = (&*r.signal, &*r.unit, &*r.source, kind(&r.value));
            let i = keys.iter().position(|x| *x == k).unwrap_or_else(|| {
                keys.push(k);
                keys.len() - 1
            });
            (i, r)
        })
        .collect();
    tagged.sort_by_key(|(i, _)| *i); // stable
    tagged.into_iter().map(|(_, r)| r.clone()).collect()
}

fn assert_round_trip(rs: &[Reading]) {
    let expected = grouped(rs);
    for bytes in [encode(rs).unwrap(), encode_uncompressed(rs).unwrap()] {
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), expected.len());
        for (a, b) in expected.iter().zip(&back) {
            assert!(same(a, b), "{a:?} != {b:?}");
        }
        let bound: usize = rs.iter().map(reading_size_bound).sum();
        assert!(bytes.len() <= BATCH_OVERHEAD_BOUND + bound);
    }
}

/// A header around `body` with the right length and CRC, so the body parser is reached.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = vec![b'W', b'T', FORMAT_VERSION, COMPRESSION_NONE];
    put_varint(&mut out, body.len() as u64);
    out.extend_from_slice(&crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of an uncompressed payload (header is 9 bytes while the body is < 128 bytes).
fn body_of(payload: &[u8]) -> &[u8] {
    assert_eq!(payload[3], COMPRESSION_NONE);
    assert!(payload[4] < 0x80);
    &payload[9..]
}

#[test]
fn reading_size_matches_the_documented_memory_bound() {
    // telemetry.rs budgets MAX_READINGS × size_of::<Reading>() ≈ 6.5 MiB for the output vector.
    assert!(std::mem::size_of::<Reading>() <= 104);
}

#[test]
fn empty_batch_round_trips() {
    let bytes = encode(&[]).unwrap();
    assert_eq!(bytes.len(), 12);
    assert!(bytes.len() <= BATCH_OVERHEAD_BOUND);
    assert_eq!(decode(&bytes).unwrap(), Vec::<Reading>::new());
}

#[test]
fn special_floats_and_extreme_times_round_trip() {
    let specials = [
        0.0,
        -0.0,
        f64::NAN,
        -f64::NAN,
        f64::from_bits(0x7ff0_0000_0000_0001), // signalling NaN
        f64::from_bits(0x7ff8_dead_beef_0001), // NaN with payload
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        5e-324,
        1e300,
        0.1,
        9_007_199_254_740_993.0,
        -9_007_199_254_740_992.0,
    ];
    let times = [i64::MIN, i64::MAX, 0, -1, i64::MAX, i64::MIN + 1, 1];
    let rs: Vec<Reading> = specials
        .iter()
        .enumerate()
        .map(|(i, &v)| num("x", "", times[i % times.len()], v))
        .collect();
    assert_round_trip(&rs);
    // Each alone too (single-value series take other code paths).
    for r in &rs {
        assert_round_trip(std::slice::from_ref(r));
    }
}

#[test]
fn decimal_codec_picks_the_fewest_decimals() {
    let codec_of = |vals: &[f64]| {
        let rs: Vec<Reading> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| num("Vehicle.Speed", "km/h", i as i64 * 1000, v))
            .collect();
        let bytes = encode_uncompressed(&rs).unwrap();
        assert_round_trip(&rs);
        // base_time 0 (1 byte), 0 strings, 1 series, 3 one-byte refs: codec byte at body[6].
        body_of(&bytes)[6]
    };
    assert_eq!(codec_of(&[1.0, 2.0, 3.0]) & 0xf0, 0x00);
    assert_eq!(codec_of(&[12.5, 13.0]), 0x10);
    assert_eq!(codec_of(&[52.123_456_7, 52.123_456_8]) >> 4, 7);
    assert_eq!(codec_of(&[0.125, 646.75]) >> 4, 3);
    assert_eq!(codec_of(&[0.000_000_001]) >> 4, 9);
    // Not a short decimal: falls back to the float codec.
    assert_eq!(codec_of(&[0.1 + 0.2]), 0x02);
    assert_eq!(codec_of(&[1.0, f64::NAN]), 0x02);
    assert_eq!(codec_of(&[-0.0]), 0x02);
    assert_eq!(codec_of(&[1e-10]), 0x02);
    // A noisy ramp is cheaper as second differences...
    let ramp: Vec<f64> = (0..50)
        .map(|i| f64::from(520_000_000 + 2345 * i + i % 3) / 1e7)
        .collect();
    assert_eq!(codec_of(&ramp), 0x71);
    // ...an exact one as first differences of its step (q = 1 throughout).
    let ramp: Vec<f64> = (0..50)
        .map(|i| f64::from(520_000_000 + 2345 * i) / 1e7)
        .collect();
    assert_eq!(codec_of(&ramp), 0x70);
    // The step: 0.125 rpm resolution gives step 125 at scale 3 (body[9], after count and time).
    let rpm = [646.75, 650.125, 653.75, 648.0];
    assert_eq!(codec_of(&rpm), 0x30);
    let rs: Vec<Reading> = rpm
        .iter()
        .map(|&v| num("Vehicle.Speed", "", 0, v))
        .collect();
    let bytes = encode_uncompressed(&rs).unwrap();
    // codec at 6, count at 7, four times at 8..12, step at 12, first mantissa 646750 after it.
    assert_eq!(&body_of(&bytes)[12..16], &[0x7d, 0xbc, 0xf9, 0x4e]);
}

#[test]
fn round_decimal_makes_can_products_compact() {
    assert_eq!(round_decimal(3.0 * 0.4, 1), 1.2);
    assert_eq!(round_decimal(7.0 * 0.05, 2), 0.35);
    assert_eq!(round_decimal(646.75, 3), 646.75);
    assert!(round_decimal(f64::NAN, 1).is_nan());
    assert_eq!(round_decimal(1e300, 3), 1e300);
    assert_eq!(round_decimal(1.23, 10), 1.23);
    // Every product raw × 0.4 rounds to a value the decimal codec stores at scale 1.
    let rs: Vec<Reading> = (0..251)
        .map(|raw| {
            num(
                "Vehicle.OBD.EngineLoad",
                "%",
                raw,
                round_decimal(raw as f64 * 0.4, 1),
            )
        })
        .collect();
    let bytes = encode_uncompressed(&rs).unwrap();
    assert_round_trip(&rs);
    assert!(bytes.len() < 600, "{}", bytes.len());
}

#[test]
fn mixed_value_types_of_one_signal_stay_separate_series() {
    let mut rs = vec![num("Vehicle.Speed", "km/h", 1, 5.0)];
    rs.push(Reading {
        value: Value::Bool(true),
        ..rs[0].clone()
    });
    rs.push(Reading {
        value: Value::Text("N/A 🚚".into()),
        ..rs[0].clone()
    });
    rs.push(num("Vehicle.Speed", "km/h", 2, 6.0));
    rs.push(Reading {
        value: Value::Bool(false),
        ..rs[0].clone()
    });
    assert_round_trip(&rs);
    let back = decode(&encode(&rs).unwrap()).unwrap();
    assert_eq!(back[1].value, Value::Num(6.0));
}

#[test]
fn contiguous_series_come_back_in_input_order() {
    let rs: Vec<Reading> = (0..20)
        .map(|i| {
            num(
                if i < 10 { "b" } else { "a" },
                "",
                100 - i,
                f64::from(i as i32),
            )
        })
        .collect();
    assert_eq!(decode(&encode(&rs).unwrap()).unwrap(), rs);
}

#[test]
fn bools_fill_bits_lsb_first() {
    let rs: Vec<Reading> = (0..11)
        .map(|i| Reading {
            signal: "Vehicle.IsMoving".into(),
            value: Value::Bool(i % 3 == 0),
            unit: String::new(),
            time: 1000 * i,
            source: "gps".into(),
        })
        .collect();
    let bytes = encode_uncompressed(&rs).unwrap();
    // true at 0, 3, 6, 9: 0b0100_1001, then 0b0000_0010.
    assert_eq!(&bytes[bytes.len() - 2..], &[0x49, 0x02]);
    assert_round_trip(&rs);
}

#[test]
fn text_values_share_table_entries() {
    let rs: Vec<Reading> = (0..30)
        .map(|i| Reading {
            signal: "Vehicle.Powertrain.Transmission.CurrentGear".into(),
            value: Value::Text(["N", "D", "R", "Neutral – ニュートラル"][i % 4].into()),
            unit: String::new(),
            time: i as i64,
            source: "can0".into(),
        })
        .collect();
    assert_round_trip(&rs);
    let bytes = encode_uncompressed(&rs).unwrap();
    let needle = "Neutral".as_bytes();
    let hits = bytes.windows(needle.len()).filter(|w| *w == needle).count();
    assert_eq!(hits, 1, "each distinct text is stored once");
}

#[test]
fn limits_are_enforced_on_encode() {
    let long = "x".repeat(MAX_STRING_LEN + 1);
    let r = num(&long, "", 0, 1.0);
    assert!(matches!(
        encode(&[r]),
        Err(EncodeError::Limit {
            what: "signal length",
            ..
        })
    ));
    let r = Reading {
        value: Value::Text(long),
        ..num("s", "", 0, 0.0)
    };
    assert!(matches!(
        encode(&[r]),
        Err(EncodeError::Limit {
            what: "text value length",
            ..
        })
    ));
    let r = Reading {
        value: Value::Bool(true),
        ..num("s", "", 0, 0.0)
    };
    let many = vec![r; MAX_READINGS + 1];
    assert!(matches!(
        encode(&many),
        Err(EncodeError::Limit {
            what: "readings",
            ..
        })
    ));
    // Exactly at the limit works.
    let back = decode(&encode(&many[1..]).unwrap()).unwrap();
    assert_eq!(back.len(), MAX_READINGS);
}

#[test]
fn worst_case_readings_stay_within_the_bound() {
    // Every reading its own series with long unique strings, extreme times and mantissas.
    let mut rs = Vec::new();
    for i in 0..40i64 {
        let name = format!("{i:04}{}", "é".repeat(500));
        let time = if i % 2 == 0 { i64::MIN } else { i64::MAX };
        let value = match i % 4 {
            0 => Value::Num(if i % 8 == 0 {
                9_007_199_254_740_992.0
            } else {
                -9e15
            }),
            1 => Value::Num(f64::from_bits(0x8123_4567_89ab_cdef)),
            2 => Value::Text(name.clone()),
            _ => Value::Bool(true),
        };
        rs.push(Reading {
            signal: name.clone(),
            value,
            unit: name.clone(),
            time,
            source: name,
        });
    }
    assert_round_trip(&rs);
    // One series with maximal second differences.
    let rs: Vec<Reading> = (0..100)
        .map(|i| {
            let v = if i % 2 == 0 {
                9_007_199_254_740_992.0
            } else {
                -9_007_199_254_740_992.0
            };
            num("s", "", if i % 2 == 0 { i64::MIN } else { i64::MAX }, v)
        })
        .collect();
    assert_round_trip(&rs);
}

#[test]
fn header_errors_name_the_problem() {
    let good = encode_uncompressed(&[num("a", "", 5, 1.5)]).unwrap();
    let with = |i: usize, b: u8| {
        let mut p = good.clone();
        p[i] = b;
        decode(&p).unwrap_err()
    };
    assert!(matches!(
        with(0, b'X'),
        DecodeError::BadMagic {
            found: [b'X', b'T']
        }
    ));
    assert!(matches!(
        with(2, 2),
        DecodeError::UnsupportedVersion { found: 2 }
    ));
    assert!(matches!(
        with(3, 7),
        DecodeError::UnknownCompression { found: 7 }
    ));
    assert!(matches!(
        decode(b"W"),
        Err(DecodeError::Truncated {
            section: Section::Header,
            offset: 0,
            field: "magic"
        })
    ));
    assert!(matches!(
        decode(b"WT\x01\x00\xff\xff\xff\x7f"),
        Err(DecodeError::Limit {
            field: "body_len",
            ..
        })
    ));
    assert!(matches!(
        decode(&good[..good.len() - 1]),
        Err(DecodeError::BodyLength { .. })
    ));
    let mut p = good.clone();
    *p.last_mut().unwrap() ^= 1;
    assert!(matches!(decode(&p), Err(DecodeError::Checksum { .. })));
    let err = decode(&p).unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
}

#[test]
fn hostile_bodies_are_rejected_before_allocating() {
    let cases: &[(&[u8], &str)] = &[
        // base_time 0, 2^21 strings but 1 byte left.
        (&[0x00, 0x80, 0x80, 0x80, 0x01], "string_count"),
        // One string of 2^20 bytes.
        (&[0x00, 0x01, 0x80, 0x80, 0x40], "string_len"),
        // One string, invalid UTF-8.
        (&[0x00, 0x01, 0x01, 0xff, 0x00], "string_bytes"),
        // No strings, 1 series, ref 200 past the table.
        (&[0x00, 0x00, 0x01, 0xc8, 0x01], "signal_ref"),
        // Unknown codec 5.
        (
            &[0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, 0x01, 0x00],
            "codec",
        ),
        // Decimal scale 10.
        (
            &[0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0xa0, 0x01, 0x00],
            "codec",
        ),
        // Count 2^40.
        (
            &[
                0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20,
            ],
            "count",
        ),
        // Count 0.
        (&[0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0x00], "count"),
        // Bool padding bit set: 1 reading, bits 0b10.
        (
            &[0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0x01, 0x00, 0x02],
            "bools",
        ),
        // Decimal step 0 (two readings, times 0 0).
        (
            &[
                0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
            ],
            "step",
        ),
        // Decimal step 2^21.
        (
            &[
                0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x80, 0x80, 0x80, 0x01,
                0x00, 0x00,
            ],
            "step",
        ),
        // Decimal mantissa 2^53 + 1 (zigzag 2^54 + 2); a single value has no step.
        (
            &[
                0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x82, 0x80, 0x80, 0x80, 0x80,
                0x80, 0x80, 0x20,
            ],
            "value",
        ),
        // Float control byte: 4 trailing zero bytes + 5 bytes.
        (
            &[0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x01, 0x00, 0x45],
            "value",
        ),
        // Float bytes not minimal.
        (
            &[
                0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x01, 0x00, 0x01, 0x00,
            ],
            "value",
        ),
        // Trailing byte.
        (&[0x00, 0x00, 0x00, 0x00], "end of body"),
        // Series count promised, series missing.
        (&[0x00, 0x00, 0x02], "signal_ref"),
    ];
    for (body, field) in cases {
        let err = decode(&frame(body)).unwrap_err();
        let named = match &err {
            DecodeError::Invalid { field, .. }
            | DecodeError::Limit { field, .. }
            | DecodeError::Truncated { field, .. }
            | DecodeError::Varint { field, .. } => *field,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(named, *field, "{body:02x?}: {err}");
    }
    // Decoded strings are capped, on both sides. Encoder: 6000 readings × 3 × 1000 bytes.
    let big = "s".repeat(1000);
    let rs: Vec<Reading> = (0..6000)
        .map(|i| Reading {
            signal: big.clone(),
            value: Value::Bool(false),
            unit: big.clone(),
            time: i,
            source: big.clone(),
        })
        .collect();
    assert!(matches!(
        encode(&rs),
        Err(EncodeError::Limit {
            what: "decoded text bytes",
            ..
        })
    ));
    // Decoder: one 1024-byte signal, 60 000 bools; a 69 kB body that would expand to 61 MB.
    let mut body = vec![0x00, 0x01];
    put_varint(&mut body, 1024);
    body.extend_from_slice(&[b's'; 1024]);
    body.extend_from_slice(&[0x01, 0x40, 0x00, 0x00, 0x03]);
    put_varint(&mut body, 60_000);
    body.extend(std::iter::repeat_n(0u8, 60_000 + 7_500));
    assert!(matches!(
        decode(&frame(&body)),
        Err(DecodeError::Limit {
            field: "decoded text bytes",
            ..
        })
    ));
}

#[test]
fn every_truncation_and_bit_flip_is_detected() {
    let rs: Vec<Reading> = (0..50)
        .flat_map(|i| {
            [
                num(
                    "Vehicle.CurrentLocation.Latitude",
                    "deg",
                    1000 * i,
                    52.0 + i as f64 * 1e-4,
                ),
                Reading {
                    signal: "Vehicle.Cargo.Hold.Note".into(),
                    value: Value::Text(format!("n{}", i % 3)),
                    unit: String::new(),
                    time: 1000 * i + 3,
                    source: "device".into(),
                },
            ]
        })
        .collect();
    let original = decode(&encode(&rs).unwrap()).unwrap();
    for bytes in [encode(&rs).unwrap(), encode_uncompressed(&rs).unwrap()] {
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut p = bytes.clone();
                p[i] ^= 1 << bit;
                match decode(&p) {
                    Err(_) => {}
                    // A few zstd frame header bits are ignored by zstd (e.g. the unused bit of
                    // the frame header descriptor); the CRC then proves the data is intact.
                    Ok(back) => assert!(
                        bytes[3] == COMPRESSION_ZSTD && back == original,
                        "flip byte {i} bit {bit} decoded to different readings"
                    ),
                }
            }
        }
    }
}

/// Decodes anything without panicking; whatever decodes is a valid batch that round-trips.
fn decode_any(bytes: &[u8]) {
    if let Ok(rs) = decode(bytes) {
        assert_round_trip(&rs);
    }
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("Vehicle.Speed".to_string()),
        Just("Vehicle.CurrentLocation.Latitude".to_string()),
        "[a-c]{1,3}",
        "\\PC{0,12}",
    ]
}

fn arb_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        proptest::num::f64::ANY,
        (-(1i64 << 53)..=(1i64 << 53), 0usize..=9)
            .prop_map(|(m, k)| m as f64 / 10f64.powi(k as i32)),
        (-100_000i64..100_000, 0usize..=3).prop_map(|(m, k)| m as f64 / 10f64.powi(k as i32)),
        Just(-0.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => arb_f64().prop_map(Value::Num),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => arb_string().prop_map(Value::Text),
    ]
}

fn arb_reading() -> impl Strategy<Value = Reading> {
    (
        arb_string(),
        arb_value(),
        prop_oneof![Just(String::new()), Just("km/h".to_string()), "\\PC{0,3}"],
        prop_oneof![
            any::<i64>(),
            1_700_000_000_000i64..1_700_000_100_000,
            -5i64..5
        ],
        prop_oneof![
            Just("gps".to_string()),
            Just("can0".to_string()),
            "[xy]{1,2}"
        ],
    )
        .prop_map(|(signal, value, unit, time, source)| Reading {
            signal,
            value,
            unit,
            time,
            source,
        })
}

/// Slowly varying series of one signal: the common case, exercising the decimal codecs.
fn arb_smooth_series() -> impl Strategy<Value = Vec<Reading>> {
    (0usize..=7, -1000i64..1000, 1usize..200, any::<u64>()).prop_map(|(k, step, n, seed)| {
        let mut m = (seed % 1_000_000_000) as i64;
        let mut t = 1_790_000_000_000 + (seed % 1000) as i64;
        (0..n)
            .map(|i| {
                m += step + (i as i64 * 7 + seed as i64 % 5) % 11 - 5;
                t += 1000 + (i as i64 % 3) - 1;
                num("Vehicle.Speed", "km/h", t, m as f64 / 10f64.powi(k as i32))
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip_is_exact_per_series(rs in prop::collection::vec(arb_reading(), 0..80)) {
        let expected = grouped(&rs);
        for bytes in [encode(&rs).unwrap(), encode_uncompressed(&rs).unwrap()] {
            let back = decode(&bytes).unwrap();
            prop_assert_eq!(back.len(), expected.len());
            for (a, b) in expected.iter().zip(&back) {
                prop_assert!(same(a, b), "{:?} != {:?}", a, b);
            }
        }
    }

    #[test]
    fn smooth_series_round_trip(a in arb_smooth_series(), b in arb_smooth_series()) {
        let mut rs = a;
        rs.extend(b.into_iter().map(|r| Reading { source: "can0".into(), ..r }));
        assert_round_trip(&rs);
    }

    #[test]
    fn encoded_size_is_within_the_bound(rs in prop::collection::vec(arb_reading(), 0..80)) {
        let bound = BATCH_OVERHEAD_BOUND + rs.iter().map(reading_size_bound).sum::<usize>();
        prop_assert!(encode(&rs).unwrap().len() <= bound);
        prop_assert!(encode_uncompressed(&rs).unwrap().len() <= bound);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        decode_any(&bytes);
        let mut p = b"WT\x01\x01".to_vec();
        p.extend_from_slice(&bytes);
        decode_any(&p);
    }

    #[test]
    fn arbitrary_bodies_with_valid_checksums_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        decode_any(&frame(&body));
    }

    #[test]
    fn mutated_bodies_with_valid_checksums_never_panic(
        rs in prop::collection::vec(arb_reading(), 1..20),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let payload = encode_uncompressed(&rs).unwrap();
        let mut h = super::codec::Reader::new(&payload[4..], Section::Header);
        h.varint("body_len").unwrap();
        let mut body = payload[4 + h.pos() + 4..].to_vec();
        for (i, b) in edits {
            let i = i.index(body.len());
            body[i] = b;
        }
        decode_any(&frame(&body));
    }
}
