//! Golden bytes of the telemetry batch format, version 1 (`docs/telemetry-format.md`): a fixed
//! batch that uses every codec must encode to exactly these bytes, and these bytes must decode
//! to exactly that batch, forever. Changing them means a new `FORMAT_VERSION`.
//!
//! The compressed golden depends on zstd's output, which a zstd upgrade may change; if only
//! `compressed_encoding_is_pinned` fails after such an upgrade, re-pin `GOLDEN_ZSTD` (its
//! decompressed body must stay `GOLDEN_RAW`'s, which `golden_payloads_decode_to_the_batch`
//! checks). Old payloads keep decoding either way.

use waymark_wire::telemetry::{
    BATCH_OVERHEAD_BOUND, FORMAT_VERSION, decode, encode, encode_uncompressed, reading_size_bound,
};
use waymark_wire::{Reading, Value};

#[rustfmt::skip]
const GOLDEN_RAW: &str = concat!(
    // Header (offsets from the first byte of the payload).
    "5754",          //   0: magic "WT"
    "01",            //   2: version 1
    "00",            //   3: compression 0
    "b902",          //   4: body_len 313
    "9bb1d359",      //   6: crc32c 0x59d3b19b
    // Body (offsets from its first byte).
    "a0d1a5f6c068",  //   0: base_time = zigzag 3590840740000 -> 1795420370000
    "07",            //   6: string_count = 7
    "1f",            //   7: string[64] len = 31
    //   8: "Vehicle.Cargo.Hold1.Temperature"
    "56656869636c652e436172676f2e486f6c64312e54656d7065726174757265",
    "09",            //  39: string[65] len = 9
    //  40: "probe-bus"
    "70726f62652d627573",
    "1f",            //  49: string[66] len = 31
    //  50: "Vehicle.Cargo.Hold2.Temperature"
    "56656869636c652e436172676f2e486f6c64322e54656d7065726174757265",
    "1f",            //  81: string[67] len = 31
    //  82: "Vehicle.Cargo.Hold3.Temperature"
    "56656869636c652e436172676f2e486f6c64332e54656d7065726174757265",
    "19",            // 113: string[68] len = 25
    // 114: "Vehicle.Cargo.Hold1.Ratio"
    "56656869636c652e436172676f2e486f6c64312e526174696f",
    "12",            // 139: string[69] len = 18
    // 140: "Vehicle.Cargo.Note"
    "56656869636c652e436172676f2e4e6f7465",
    "0c",            // 158: string[70] len = 12
    // 159: "Ökobox 🚚"
    "c3966b6f626f7820f09f9a9a",
    "09",            // 171: series_count = 9
    "1c",            // 172: series 0: signal = ref 28 "Vehicle.CurrentLocation.Latitude"
    "0a",            // 173: unit = ref 10 "deg"
    "01",            // 174: source = ref 1 "gps"
    "71",            // 175: codec 0x71: id 1 scale 7
    "03",            // 176: count = 3
    "00",            // 177: time[0] = zigzag 0 -> 0
    "d00f",          // 178: time[1] = zigzag 2000 -> 1000
    "00",            // 180: time[2] = zigzag 0 -> 0
    "01",            // 181: step = 1
    "a0abeff403",    // 182: value[0] = zigzag 1050400160 -> 525200080
    "ba03",          // 187: value[1] = zigzag 442 -> 221
    "02",            // 189: value[2] = zigzag 2 -> 1
    "23",            // 190: series 1: signal = ref 35 "Vehicle.Speed"
    "0e",            // 191: unit = ref 14 "km/h"
    "01",            // 192: source = ref 1 "gps"
    "10",            // 193: codec 0x10: id 0 scale 1
    "03",            // 194: count = 3
    "00",            // 195: time[0] = zigzag 0 -> 0
    "d00f",          // 196: time[1] = zigzag 2000 -> 1000
    "00",            // 198: time[2] = zigzag 0 -> 0
    "01",            // 199: step = 1
    "d206",          // 200: value[0] = zigzag 850 -> 425
    "0c",            // 202: value[1] = zigzag 12 -> 6
    "0a",            // 203: value[2] = zigzag 10 -> 5
    "27",            // 204: series 2: signal = ref 39 "Vehicle.Powertrain.CombustionEngine.Speed"
    "12",            // 205: unit = ref 18 "rpm"
    "03",            // 206: source = ref 3 "can0"
    "30",            // 207: codec 0x30: id 0 scale 3
    "03",            // 208: count = 3
    "18",            // 209: time[0] = zigzag 24 -> 12
    "ce0f",          // 210: time[1] = zigzag 1998 -> 999
    "04",            // 212: time[2] = zigzag 4 -> 2
    "7d",            // 213: step = 125
    "bcf94e",        // 214: value[0] = zigzag 1293500 -> 646750
    "36",            // 217: value[1] = zigzag 54 -> 27
    "3a",            // 218: value[2] = zigzag 58 -> 29
    "40",            // 219: series 3: signal = ref 64 "Vehicle.Cargo.Hold1.Temperature"
    "11",            // 220: unit = ref 17 "celsius"
    "41",            // 221: source = ref 65 "probe-bus"
    "40",            // 222: codec 0x40: id 0 scale 4
    "02",            // 223: count = 2
    "50",            // 224: time[0] = zigzag 80 -> 40
    "d00f",          // 225: time[1] = zigzag 2000 -> 1000
    "01",            // 227: step = 1
    "a18616",        // 228: value[0] = zigzag 361249 -> -180625
    "e209",          // 231: value[1] = zigzag 1250 -> 625
    "42",            // 233: series 4: signal = ref 66 "Vehicle.Cargo.Hold2.Temperature"
    "11",            // 234: unit = ref 17 "celsius"
    "41",            // 235: source = ref 65 "probe-bus"
    "40",            // 236: codec 0x40: id 0 scale 4
    "02",            // 237: count = 2
    "52",            // 238: time[0] = zigzag 82 -> 41
    "d00f",          // 239: time[1] = zigzag 2000 -> 1000
    "01",            // 241: step = 1
    "afae15",        // 242: value[0] = zigzag 349999 -> -175000
    "e209",          // 245: value[1] = zigzag 1250 -> 625
    "43",            // 247: series 5: signal = ref 67 "Vehicle.Cargo.Hold3.Temperature"
    "11",            // 248: unit = ref 17 "celsius"
    "41",            // 249: source = ref 65 "probe-bus"
    "40",            // 250: codec 0x40: id 0 scale 4
    "02",            // 251: count = 2
    "54",            // 252: time[0] = zigzag 84 -> 42
    "d00f",          // 253: time[1] = zigzag 2000 -> 1000
    "01",            // 255: step = 1
    "a3ac17",        // 256: value[0] = zigzag 382499 -> -191250
    "e209",          // 259: value[1] = zigzag 1250 -> 625
    "3a",            // 261: series 6: signal = ref 58 "Vehicle.Cargo.Door.IsOpen"
    "00",            // 262: unit = ref 0 ""
    "08",            // 263: source = ref 8 "device"
    "03",            // 264: codec 0x03: id 3 scale 0
    "02",            // 265: count = 2
    "e807",          // 266: time[0] = zigzag 1000 -> 500
    "d00f",          // 268: time[1] = zigzag 2000 -> 1000
    "01",            // 270: bools [True, False]
    "44",            // 271: series 7: signal = ref 68 "Vehicle.Cargo.Hold1.Ratio"
    "00",            // 272: unit = ref 0 ""
    "41",            // 273: source = ref 65 "probe-bus"
    "02",            // 274: codec 0x02: id 2 scale 0
    "03",            // 275: count = 3
    "8019",          // 276: time[0] = zigzag 3200 -> 1600
    "c801",          // 278: time[1] = zigzag 200 -> 100
    "00",            // 280: time[2] = zigzag 0 -> 0
    // 281: value[0] xor: bits 3fd3333333333334 = 0.30000000000000004
    "08343333333333d33f",
    // 290: value[1] xor: bits 7ff8000000000000 = nan
    "083433333333332b40",
    "62f8ff",        // 299: value[2] xor: bits 8000000000000000 = -0.0
    "45",            // 302: series 8: signal = ref 69 "Vehicle.Cargo.Note"
    "00",            // 303: unit = ref 0 ""
    "08",            // 304: source = ref 8 "device"
    "04",            // 305: codec 0x04: id 4 scale 0
    "02",            // 306: count = 2
    "d81d",          // 307: time[0] = zigzag 3800 -> 1900
    "9f1f",          // 309: time[1] = zigzag 3999 -> -2000
    "46",            // 311: value[0] = ref 70 "Ökobox 🚚"
    "46",            // 312: value[1] = ref 70 "Ökobox 🚚"
);

const GOLDEN_ZSTD: &str = concat!(
    "5754",     // magic
    "01",       // version
    "01",       // compression: zstd
    "b902",     // body_len 313
    "9bb1d359", // crc32c of the uncompressed body, as in GOLDEN_RAW
    // One zstd frame (level 3) that decompresses to the body of GOLDEN_RAW.
    "28b52ffd6039000d0700240ca0d1a5f6c068071f56656869636c652e43617267",
    "6f2e486f6c64312e54656d70657261747572650970726f62652d627573323319",
    "312e526174696f124e6f74650cc3966b6f626f7820f09f9a9a091c0a01710300",
    "d00f0001a0abeff403ba0302230e0110d2060c0a271203300318ce0f047dbcf9",
    "4e363a401141400250d00f01a18616e2094252d00f01afae15e2094354d00f01",
    "a3ac17e2093a00080302e807d00f0144004102038019c80100083433d33f2b40",
    "62f8ff4500080402d81d9f1f46460b002c8981b3070c29a67da83994aee4083c",
    "01dc0d9504e06eb4444101",
);

fn r(signal: &str, unit: &str, source: &str, time: i64, value: Value) -> Reading {
    Reading {
        signal: signal.into(),
        value,
        unit: unit.into(),
        time,
        source: source.into(),
    }
}

fn batch() -> Vec<Reading> {
    let t = 1_795_420_370_000; // 2026-11-23T07:52:50Z
    let lat = "Vehicle.CurrentLocation.Latitude";
    let hold = |n: u8| format!("Vehicle.Cargo.Hold{n}.Temperature");
    vec![
        r(lat, "deg", "gps", t, Value::Num(52.520_008)),
        r("Vehicle.Speed", "km/h", "gps", t, Value::Num(42.5)),
        r(
            "Vehicle.Powertrain.CombustionEngine.Speed",
            "rpm",
            "can0",
            t + 12,
            Value::Num(646.75),
        ),
        r(
            &hold(1),
            "celsius",
            "probe-bus",
            t + 40,
            Value::Num(-18.0625),
        ),
        r(&hold(2), "celsius", "probe-bus", t + 41, Value::Num(-17.5)),
        r(
            &hold(3),
            "celsius",
            "probe-bus",
            t + 42,
            Value::Num(-19.125),
        ),
        r(
            "Vehicle.Cargo.Door.IsOpen",
            "",
            "device",
            t + 500,
            Value::Bool(true),
        ),
        r(lat, "deg", "gps", t + 1000, Value::Num(52.520_030_1)),
        r("Vehicle.Speed", "km/h", "gps", t + 1000, Value::Num(43.1)),
        r(
            "Vehicle.Powertrain.CombustionEngine.Speed",
            "rpm",
            "can0",
            t + 1011,
            Value::Num(650.125),
        ),
        r(
            &hold(1),
            "celsius",
            "probe-bus",
            t + 1040,
            Value::Num(-18.0),
        ),
        r(
            &hold(2),
            "celsius",
            "probe-bus",
            t + 1041,
            Value::Num(-17.4375),
        ),
        r(
            &hold(3),
            "celsius",
            "probe-bus",
            t + 1042,
            Value::Num(-19.0625),
        ),
        r(
            "Vehicle.Cargo.Door.IsOpen",
            "",
            "device",
            t + 1500,
            Value::Bool(false),
        ),
        r(
            "Vehicle.Cargo.Hold1.Ratio",
            "",
            "probe-bus",
            t + 1600,
            Value::Num(0.1 + 0.2),
        ),
        r(
            "Vehicle.Cargo.Hold1.Ratio",
            "",
            "probe-bus",
            t + 1700,
            Value::Num(f64::NAN),
        ),
        r(
            "Vehicle.Cargo.Hold1.Ratio",
            "",
            "probe-bus",
            t + 1800,
            Value::Num(-0.0),
        ),
        r(
            "Vehicle.Cargo.Note",
            "",
            "device",
            t + 1900,
            Value::Text("Ökobox 🚚".into()),
        ),
        r(
            "Vehicle.Cargo.Note",
            "",
            "device",
            t - 100,
            Value::Text("Ökobox 🚚".into()),
        ),
        r(lat, "deg", "gps", t + 2000, Value::Num(52.520_052_3)),
        r(
            "Vehicle.Powertrain.CombustionEngine.Speed",
            "rpm",
            "can0",
            t + 2012,
            Value::Num(653.75),
        ),
        r("Vehicle.Speed", "km/h", "gps", t + 2000, Value::Num(43.6)),
    ]
}

/// The order decode promises: series by first appearance, each in input order.
const DECODED_ORDER: [usize; 22] = [
    0, 7, 19, // latitude
    1, 8, 21, // speed
    2, 9, 20, // engine speed
    3, 10, // hold 1
    4, 11, // hold 2
    5, 12, // hold 3
    6, 13, // door
    14, 15, 16, // ratio (float codec)
    17, 18, // note (text)
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("golden constants are hex"))
        .collect()
}

/// Same readings, floats compared bit for bit (the batch holds a NaN).
fn assert_same(got: &[Reading], want: &[Reading]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let values_equal = match (&g.value, &w.value) {
            (Value::Num(a), Value::Num(b)) => a.to_bits() == b.to_bits(),
            (a, b) => a == b,
        };
        assert!(
            values_equal
                && g.signal == w.signal
                && g.unit == w.unit
                && g.source == w.source
                && g.time == w.time,
            "{g:?} != {w:?}"
        );
    }
}

#[test]
fn uncompressed_encoding_is_pinned() {
    assert_eq!(FORMAT_VERSION, 1);
    assert_eq!(hex(&encode_uncompressed(&batch()).unwrap()), GOLDEN_RAW);
}

#[test]
fn compressed_encoding_is_pinned() {
    assert_eq!(hex(&encode(&batch()).unwrap()), GOLDEN_ZSTD);
}

#[test]
fn golden_payloads_decode_to_the_batch() {
    let batch = batch();
    let want: Vec<Reading> = DECODED_ORDER.iter().map(|&i| batch[i].clone()).collect();
    for golden in [GOLDEN_RAW, GOLDEN_ZSTD] {
        assert_same(&decode(&unhex(golden)).unwrap(), &want);
    }
    // Both carry the same body: same declared length and checksum.
    assert_eq!(GOLDEN_RAW[8..20], GOLDEN_ZSTD[8..20]);
}

#[test]
fn golden_sizes_are_within_the_bound() {
    let batch = batch();
    let bound = BATCH_OVERHEAD_BOUND + batch.iter().map(reading_size_bound).sum::<usize>();
    assert!(GOLDEN_RAW.len() / 2 <= bound);
    assert!(GOLDEN_ZSTD.len() / 2 < GOLDEN_RAW.len() / 2);
}

#[test]
fn truncated_golden_payloads_are_errors() {
    for golden in [unhex(GOLDEN_RAW), unhex(GOLDEN_ZSTD)] {
        for n in 0..golden.len() {
            assert!(decode(&golden[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        let mut longer = golden.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "trailing byte accepted");
    }
}

#[test]
fn bit_flipped_golden_payloads_are_errors() {
    let batch = batch();
    let want: Vec<Reading> = DECODED_ORDER.iter().map(|&i| batch[i].clone()).collect();
    for golden in [unhex(GOLDEN_RAW), unhex(GOLDEN_ZSTD)] {
        let compressed = golden[3] == 1;
        for i in 0..golden.len() {
            for bit in 0..8 {
                let mut p = golden.clone();
                p[i] ^= 1 << bit;
                match decode(&p) {
                    Err(e) => assert!(!e.to_string().is_empty()),
                    // zstd ignores a few frame-header bits (the descriptor's unused bit); the
                    // CRC then proves the body intact, so the readings must be the original.
                    Ok(got) => {
                        assert!(compressed, "flip of byte {i} bit {bit} accepted");
                        assert_same(&got, &want);
                    }
                }
            }
        }
    }
}
