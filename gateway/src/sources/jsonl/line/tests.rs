//! Line parser: accepted shapes, defaults, one rejection per rule (each naming its field), and
//! property tests (arbitrary bytes never panic; valid readings round-trip).

use super::*;
use proptest::prelude::*;
use serde_json::json;

const RX: Timestamp = 1_795_420_370_000;
const T: &str = "2026-11-23T07:52:50.123Z";
const T_MS: Timestamp = 1_795_420_370_123;
const ID: &str = "019ab0a4-4b3e-7c1a-9f00-0123456789ab";

fn parse(s: &str) -> Result<Parsed, LineError> {
    parse_line(s.as_bytes(), "apps", RX)
}

fn reading(s: &str) -> Reading {
    match parse(s) {
        Ok(Parsed::Reading(r)) => r,
        other => panic!("{s}: {other:?}"),
    }
}

fn event(s: &str) -> NewEvent {
    match parse(s) {
        Ok(Parsed::Event(e)) => e,
        other => panic!("{s}: {other:?}"),
    }
}

fn error(s: &str) -> String {
    match parse(s) {
        Err(LineError(e)) => e,
        other => panic!("{s}: accepted as {other:?}"),
    }
}

#[test]
fn reading_with_every_field() {
    let r = reading(&format!(
        r#"{{"kind":"reading","signal":"Vehicle.Speed","value":52.3,"unit":"km/h","time":"{T}"}}"#
    ));
    assert_eq!(
        r,
        Reading {
            signal: "Vehicle.Speed".into(),
            value: Value::Num(52.3),
            unit: "km/h".into(),
            time: T_MS,
            source: "apps".into(),
        }
    );
}

#[test]
fn reading_defaults_and_value_types() {
    let r = reading(r#"{"signal":"Vehicle.Cabin.Door.Row1.IsOpen","value":true,"kind":"reading"}"#);
    assert_eq!(
        (r.value, r.unit.as_str(), r.time),
        (Value::Bool(true), "", RX)
    );
    let r = reading(
        r#"{"kind":"reading","signal":"Vehicle.Gear","value":"D","unit":null,"time":null}"#,
    );
    assert_eq!(
        (r.value, r.unit.as_str(), r.time),
        (Value::Text("D".into()), "", RX)
    );
    assert_eq!(
        reading(r#"{"kind":"reading","signal":"a","value":-7}"#).value,
        Value::Num(-7.0)
    );
    assert_eq!(
        reading(r#"{"kind":"reading","signal":"a","value":18446744073709551615}"#).value,
        Value::Num(18_446_744_073_709_551_615.0)
    );
    // Escapes are decoded; whitespace around tokens is fine.
    let r = reading(
        " { \"kind\" : \"reading\", \"signal\" : \"A\\u002eB\", \"value\" : \"\\u00b0C\" } ",
    );
    assert_eq!(
        (r.signal.as_str(), r.value),
        ("A.B", Value::Text("°C".into()))
    );
    // Time offsets are converted to UTC.
    let r = reading(
        r#"{"kind":"reading","signal":"a","value":1,"time":"2026-11-23T08:52:50.123+01:00"}"#,
    );
    assert_eq!(r.time, T_MS);
}

#[test]
fn event_with_every_field() {
    let e = event(&format!(
        r#"{{"kind":"event","type":"waymark.pod.delivered","data":{{"stop":"S3","items":[1,2]}},"id":"{ID}","time":"{T}","subject":"stop/S3","priority":"alert"}}"#
    ));
    assert_eq!(
        e,
        NewEvent {
            id: Uuid::parse_str(ID).unwrap(),
            type_: "waymark.pod.delivered".into(),
            time_ms: T_MS,
            lane: Lane::Alert,
            subject: Some("stop/S3".into()),
            data: json!({"stop": "S3", "items": [1, 2]}),
        }
    );
}

#[test]
fn event_defaults() {
    let e = event(r#"{"kind":"event","type":"waymark.milestone.arrived","data":{}}"#);
    assert_eq!(e.id.get_version_num(), 7);
    assert_eq!((e.lane, e.time_ms, e.subject), (Lane::Milestone, RX, None));
    let e =
        event(r#"{"kind":"event","type":"acme.x_1","data":{},"id":null,"priority":"milestone"}"#);
    assert_eq!(e.lane, Lane::Milestone);
    assert_ne!(
        event(r#"{"kind":"event","type":"a.b","data":{}}"#).id,
        event(r#"{"kind":"event","type":"a.b","data":{}}"#).id
    );
}

#[test]
fn blank_lines_are_ignored() {
    for s in ["", " ", "\t  ", "\r"] {
        assert_eq!(parse(s), Ok(Parsed::Blank));
    }
}

/// Every rule, with the field its rejection must name.
#[test]
fn every_rejection_names_its_field() {
    let long_signal = "s".repeat(MAX_SIGNAL_BYTES + 1);
    let long_text = "t".repeat(MAX_TEXT_BYTES + 1);
    let long_type = format!("a.{}", "b".repeat(MAX_TYPE_BYTES));
    let long_subject = "s".repeat(MAX_SUBJECT_BYTES + 1);
    let big_data = format!(r#"{{"x":"{}"}}"#, "d".repeat(MAX_DATA_BYTES));
    let cases: Vec<(String, &str)> = vec![
        // kind
        (r#"{"signal":"a","value":1}"#.into(), "kind"),
        (r#"{"kind":"readings","signal":"a","value":1}"#.into(), "kind"),
        (r#"{"kind":5,"signal":"a","value":1}"#.into(), "kind"),
        // signal
        (r#"{"kind":"reading","value":1}"#.into(), "signal"),
        (r#"{"kind":"reading","signal":"","value":1}"#.into(), "signal"),
        (r#"{"kind":"reading","signal":"Vehicle Speed","value":1}"#.into(), "signal"),
        (r#"{"kind":"reading","signal":"Vehicle.Geschwindigkeit\u00e4","value":1}"#.into(), "signal"),
        (format!(r#"{{"kind":"reading","signal":"{long_signal}","value":1}}"#), "signal"),
        (r#"{"kind":"reading","signal":7,"value":1}"#.into(), "signal"),
        (r#"{"kind":"reading","signal":null,"value":1}"#.into(), "signal"),
        // value
        (r#"{"kind":"reading","signal":"a"}"#.into(), "value"),
        (r#"{"kind":"reading","signal":"a","value":null}"#.into(), "value"),
        (r#"{"kind":"reading","signal":"a","value":[1]}"#.into(), "value"),
        (r#"{"kind":"reading","signal":"a","value":{"v":1}}"#.into(), "value"),
        (r#"{"kind":"reading","signal":"a","value":1e400}"#.into(), "value"),
        (r#"{"kind":"reading","signal":"a","value":[1,}"#.into(), "value"),
        (format!(r#"{{"kind":"reading","signal":"a","value":"{long_text}"}}"#), "value"),
        // unit
        (r#"{"kind":"reading","signal":"a","value":1,"unit":3}"#.into(), "unit"),
        (format!(r#"{{"kind":"reading","signal":"a","value":1,"unit":"{}"}}"#, "u".repeat(33)), "unit"),
        (r#"{"kind":"reading","signal":"a","value":1,"unit":"k\nm"}"#.into(), "unit"),
        // time
        (r#"{"kind":"reading","signal":"a","value":1,"time":"yesterday"}"#.into(), "time"),
        (r#"{"kind":"reading","signal":"a","value":1,"time":1795420370123}"#.into(), "time"),
        (r#"{"kind":"reading","signal":"a","value":1,"time":"1970-01-01T00:00:01Z"}"#.into(), "time"),
        (r#"{"kind":"event","type":"a.b","data":{},"time":"2026-11-23"}"#.into(), "time"),
        // type
        (r#"{"kind":"event","data":{}}"#.into(), "type"),
        (r#"{"kind":"event","type":"waymark","data":{}}"#.into(), "type"),
        (r#"{"kind":"event","type":"Waymark.pod","data":{}}"#.into(), "type"),
        (r#"{"kind":"event","type":"waymark..pod","data":{}}"#.into(), "type"),
        (r#"{"kind":"event","type":"way_mark.pod","data":{}}"#.into(), "type"),
        (r#"{"kind":"event","type":"waymark.pod.","data":{}}"#.into(), "type"),
        (r#"{"kind":"event","type":"waymark.pod-delivered","data":{}}"#.into(), "type"),
        (format!(r#"{{"kind":"event","type":"{long_type}","data":{{}}}}"#), "type"),
        // data
        (r#"{"kind":"event","type":"a.b"}"#.into(), "data"),
        (r#"{"kind":"event","type":"a.b","data":[1]}"#.into(), "data"),
        (r#"{"kind":"event","type":"a.b","data":"x"}"#.into(), "data"),
        (r#"{"kind":"event","type":"a.b","data":null}"#.into(), "data"),
        (r#"{"kind":"event","type":"a.b","data":{"x":}}"#.into(), "data"),
        (format!(r#"{{"kind":"event","type":"a.b","data":{big_data}}}"#), "data"),
        // id
        (r#"{"kind":"event","type":"a.b","data":{},"id":"nope"}"#.into(), "id"),
        (r#"{"kind":"event","type":"a.b","data":{},"id":"67e55044-10b1-426f-9247-bb680e5fe0c8"}"#.into(), "id"),
        (r#"{"kind":"event","type":"a.b","data":{},"id":"00000000-0000-0000-0000-000000000000"}"#.into(), "id"),
        (r#"{"kind":"event","type":"a.b","data":{},"id":12}"#.into(), "id"),
        // subject
        (r#"{"kind":"event","type":"a.b","data":{},"subject":""}"#.into(), "subject"),
        (format!(r#"{{"kind":"event","type":"a.b","data":{{}},"subject":"{long_subject}"}}"#), "subject"),
        (r#"{"kind":"event","type":"a.b","data":{},"subject":"a\u0000b"}"#.into(), "subject"),
        // priority
        (r#"{"kind":"event","type":"a.b","data":{},"priority":"urgent"}"#.into(), "priority"),
        (r#"{"kind":"event","type":"a.b","data":{},"priority":1}"#.into(), "priority"),
        // fields of the other kind
        (r#"{"kind":"reading","signal":"a","value":1,"type":"a.b"}"#.into(), "type"),
        (r#"{"kind":"reading","signal":"a","value":1,"data":{}}"#.into(), "data"),
        (r#"{"kind":"reading","signal":"a","value":1,"priority":"alert"}"#.into(), "priority"),
        (r#"{"kind":"event","type":"a.b","data":{},"signal":"a"}"#.into(), "signal"),
        (r#"{"kind":"event","type":"a.b","data":{},"unit":"m"}"#.into(), "unit"),
        (r#"{"kind":"event","type":"a.b","data":{},"value":1}"#.into(), "value"),
        // duplicates
        (r#"{"kind":"reading","signal":"a","value":1,"value":2}"#.into(), "value"),
        (r#"{"kind":"reading","kind":"event","signal":"a","value":1}"#.into(), "kind"),
    ];
    for (line, field) in cases {
        let e = error(&line);
        let shown: String = line.chars().take(120).collect();
        assert!(
            e.starts_with(&format!("field `{field}`: ")),
            "{shown}\n  -> {e}"
        );
        assert!(e.contains(" at column "), "{shown}\n  -> {e}");
        assert!(e.len() < 400, "error quotes too much: {e}");
    }
}

#[test]
fn rejection_messages_read_well() {
    assert_eq!(
        error(r#"{"kind":"reading","signal":"a","value":[1]}"#),
        "field `value`: expected a number, boolean or string, found an array at column 43"
    );
    assert_eq!(
        error(r#"{"kind":"reading","signal":"a","value":1e400}"#),
        "field `value`: expected a finite number (number out of range) at column 45"
    );
    assert_eq!(
        error(r#"{"kind":"reading","signal":"a"}"#),
        "field `value`: missing at column 31"
    );
    assert_eq!(
        error(r#"{"kind":"telemetry"}"#),
        "field `kind`: unknown kind \"telemetry\", expected \"reading\" or \"event\" at column 20"
    );
    assert_eq!(
        error(&format!(
            r#"{{"kind":"event","type":"a.b","data":{{}},"id":"{}"}}"#,
            "x".repeat(500)
        )),
        format!(
            "field `id`: expected a UUIDv7, found \"{}\"... at column 547",
            "x".repeat(64)
        )
    );
}

#[test]
fn structural_rejections() {
    for (line, starts) in [
        (
            r#"{"kind":"reading","signal":"a","value":1"#,
            "invalid JSON: EOF while parsing an object",
        ),
        // The parser reads the colon with the value, so the error names the field.
        (
            r#"{"kind" "reading","signal":"a","value":1}"#,
            "field `kind`: expected `:`",
        ),
        (
            r#"{"kind":"reading" "signal":"a","value":1}"#,
            "invalid JSON: expected `,` or `}`",
        ),
        (
            r#"{"kind":"reading","signal":"a","value":1} x"#,
            "invalid JSON: trailing characters",
        ),
        (
            r#"{"kind":"reading","signal":"a","value":1}{}"#,
            "invalid JSON: trailing characters",
        ),
        ("[1,2]", "invalid type: sequence, expected a JSON object"),
        ("42", "invalid type: integer `42`, expected a JSON object"),
        ("null", "invalid type: null, expected a JSON object"),
        (
            r#"{"kind":"reading","signal":"a","value":1,"unti":"m"}"#,
            "unknown field \"unti\"",
        ),
        ("\u{feff}{}", "invalid JSON: expected value"),
    ] {
        let e = match parse_line(line.as_bytes(), "apps", RX) {
            Err(LineError(e)) => e,
            other => panic!("{line}: {other:?}"),
        };
        assert!(e.starts_with(starts), "{line}\n  -> {e}");
        assert!(e.contains(" at column "), "{line}\n  -> {e}");
    }
    // Invalid UTF-8 inside a string.
    let e = parse_line(
        b"{\"kind\":\"reading\",\"signal\":\"a\xff\",\"value\":1}",
        "apps",
        RX,
    );
    let Err(LineError(e)) = e else {
        panic!("accepted invalid UTF-8")
    };
    assert!(
        e.starts_with("field `signal`: invalid unicode code point"),
        "{e}"
    );
}

#[test]
fn accepted_strings_are_borrowed_when_unescaped() {
    // The visitor borrows; this checks the public effect: escaped and unescaped parse the same.
    let a = reading(r#"{"kind":"reading","signal":"a.b","value":"x","unit":"m"}"#);
    let b = reading(r#"{"kind":"reading","signal":"a\u002eb","value":"\u0078","unit":"\u006d"}"#);
    assert_eq!(a, b);
}

#[test]
fn strip_position_only_strips_a_real_suffix() {
    assert_eq!(
        strip_position("expected value at line 1 column 5"),
        "expected value"
    );
    assert_eq!(
        strip_position("field `a`: found \"x at line y\""),
        "field `a`: found \"x at line y\""
    );
    assert_eq!(strip_position("no position"), "no position");
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(Value::Num),
        any::<i32>().prop_map(|v| Value::Num(f64::from(v))),
        any::<bool>().prop_map(Value::Bool),
        "\\PC{0,64}"
            .prop_filter("≤ 256 bytes", |s: &String| s.len() <= MAX_TEXT_BYTES)
            .prop_map(Value::Text),
    ]
}

fn arb_reading() -> impl Strategy<Value = (Reading, bool, bool)> {
    (
        "[!-~]{1,128}",
        arb_value(),
        "[^\\p{Cc}]{0,8}".prop_filter("≤ 32 bytes", |s: &String| s.len() <= MAX_UNIT_BYTES),
        EARLIEST_VALID_MS..4_102_444_800_000i64,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(signal, value, unit, time, with_unit, with_time)| {
            let r = Reading {
                signal,
                value,
                unit: if with_unit { unit } else { String::new() },
                time: if with_time { time } else { RX },
                source: "apps".into(),
            };
            (r, with_unit, with_time)
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        // Any answer is fine; not panicking is the property.
        let _answer = parse_line(&bytes, "apps", RX);
    }

    #[test]
    fn mutated_valid_lines_never_panic(
        pos in 0usize..200, byte in any::<u8>(), cut in 0usize..200,
    ) {
        let base = format!(
            r#"{{"kind":"event","type":"waymark.pod.delivered","data":{{"a":[1,{{"b":null}}]}},"id":"{ID}","time":"{T}"}}"#
        );
        let mut bytes = base.into_bytes();
        let p = pos % bytes.len();
        bytes[p] = byte;
        bytes.truncate(bytes.len() - cut % bytes.len());
        // Any answer is fine; not panicking is the property.
        let _answer = parse_line(&bytes, "apps", RX);
    }

    #[test]
    fn valid_readings_round_trip((r, with_unit, with_time) in arb_reading()) {
        let mut obj = json!({"kind": "reading", "signal": r.signal, "value": r.value});
        if with_unit {
            obj["unit"] = json!(r.unit);
        }
        if with_time {
            obj["time"] = json!(waymark_wire::time::format_rfc3339_ms(r.time));
        }
        let line = serde_json::to_string(&obj).unwrap();
        // serde_json's default float parsing may differ from the shortest representation in
        // the last bit; the gateway promises what serde_json reads from the text.
        let mut expected = r.clone();
        if let Value::Num(v) = r.value {
            let text = serde_json::to_string(&v).unwrap();
            expected.value = Value::Num(serde_json::from_str(&text).unwrap());
        }
        prop_assert_eq!(parse(&line), Ok(Parsed::Reading(expected)));
    }
}
