//! The real DBC files parse (with their quirks) and decode; the bit codec against a
//! reference implementation under property tests.

use proptest::prelude::*;

use super::*;

fn dbc_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/can/dbc")
}

fn load(name: &str) -> DbcFile {
    DbcFile::load(&dbc_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn one<'a>(f: &'a DbcFile, name: &str) -> &'a DbcMessage {
    let found = f.find(name);
    assert_eq!(found.len(), 1, "{name}");
    found[0]
}

fn sig<'a>(m: &'a DbcMessage, name: &str) -> &'a DbcSignal {
    m.signals.iter().find(|s| s.name == name).expect(name)
}

#[test]
fn every_file_parses() {
    for name in [
        "css-electronics-SAE-J1939-DEMO.dbc",
        "css-electronics-canedge-gnss.dbc",
        "opendbc-acura_ilx_2016_can_generated.dbc",
        "opendbc-fca_giorgio.dbc",
        "opendbc-tesla_powertrain.dbc",
        "opendbc-toyota_prius_2010_pt.dbc",
    ] {
        let f = load(name);
        assert!(!f.messages.is_empty(), "{name}");
    }
}

#[test]
fn j1939_demo_matches_by_pgn() {
    let f = load("css-electronics-SAE-J1939-DEMO.dbc");
    assert!(f.j1939);
    let eec1 = one(&f, "EEC1");
    assert_eq!((eec1.id, eec1.extended), (0x0CF0_04FE, true));
    // 0CF00400#607D84481400F084 from the idle truck: 649 rpm.
    let d = [0x60, 0x7D, 0x84, 0x48, 0x14, 0x00, 0xF0, 0x84];
    assert_eq!(
        sig(eec1, "EngineSpeed").decode(&d, true),
        Some(SignalValue::Num(649.0))
    );
    // The id as written, with the flag, finds it too.
    assert_eq!(f.find("2364540158").len(), 1);
    assert_eq!(f.find("0x8CF004FE").len(), 1);
}

#[test]
fn motorola_and_value_tables() {
    let f = load("opendbc-toyota_prius_2010_pt.dbc");
    let gear = one(&f, "GEAR_PACKET");
    let g = sig(gear, "GEAR");
    assert!(g.big_endian);
    // GEAR : 47|4@0+ → byte 5, bits 7..4.
    let mut d = [0u8; 8];
    d[5] = 0x30;
    assert_eq!(g.decode(&d, true), Some(SignalValue::Text("D".into())));
    assert_eq!(g.decode(&d, false), Some(SignalValue::Num(3.0)));
    d[5] = 0xF0;
    assert_eq!(g.decode(&d, true), Some(SignalValue::Num(15.0)));
    // SPEED : 47|16@0+ (0.0062,0): bytes 5..6 big-endian.
    let speed = sig(one(&f, "SPEED"), "SPEED");
    let mut d = [0u8; 8];
    d[5] = 0x12;
    d[6] = 0x34;
    let Some(SignalValue::Num(v)) = speed.decode(&d, true) else {
        panic!("speed")
    };
    assert!((v - f64::from(0x1234) * 0.0062).abs() < 1e-9);
    // Signed Motorola: CAR_MOVEMENT : 39|8@0- .
    let cm = sig(gear, "CAR_MOVEMENT");
    let mut d = [0u8; 8];
    d[4] = 0xFE;
    assert_eq!(cm.decode(&d, true), Some(SignalValue::Num(-2.0)));
    // A frame too short for the signal yields nothing.
    assert_eq!(cm.decode(&d[..4], true), None);
}

#[test]
fn signed_intel() {
    let f = load("opendbc-tesla_powertrain.dbc");
    let m = one(&f, "DI_torque1");
    let s = sig(m, "DI_torqueMotor");
    assert!(s.signed && !s.big_endian);
    // 16|13@1- (0.25,0): -100 Nm = raw -400 in 13 bits.
    let raw = (-400i32 as u32) & 0x1FFF;
    let mut d = [0u8; 8];
    d[2] = raw as u8;
    d[3] = (raw >> 8) as u8;
    assert_eq!(s.decode(&d, false), Some(SignalValue::Num(-100.0)));
    // VAL_ -4096 "SNA".
    let raw = (-4096i32 as u32) & 0x1FFF;
    d[2] = raw as u8;
    d[3] = (raw >> 8) as u8;
    assert_eq!(s.decode(&d, true), Some(SignalValue::Text("SNA".into())));
}

#[test]
fn multiplexed_and_unflagged_extended_ids() {
    let f = load("opendbc-fca_giorgio.dbc");
    let cam = one(&f, "CAM_UNKNOWN_6");
    assert_eq!((cam.id, cam.extended), (506_855_454, true));
    let m = one(&f, "NEW_MSG_416");
    let i0 = m
        .signals
        .iter()
        .position(|s| s.name == "UNKNOWN_M0_1")
        .expect("m0");
    let i1 = m
        .signals
        .iter()
        .position(|s| s.name == "UNKNOWN_M1_1")
        .expect("m1");
    // MUX : 1|2@0+ → byte 0 bits 1..0.
    let mut d = [0u8; 8];
    d[1] = 0xAB;
    assert!(m.present(i0, &d) && !m.present(i1, &d));
    d[0] = 1;
    assert!(!m.present(i0, &d) && m.present(i1, &d));
    assert_eq!(
        m.signals[i1].decode(&d, true),
        Some(SignalValue::Num(f64::from(0xABu8)))
    );
}

#[test]
fn quirks_are_tolerated() {
    // `CM_ SG_ 304 "...";`: can-dbc 10 reads it; the file's messages are all there.
    let f = load("opendbc-acura_ilx_2016_can_generated.dbc");
    assert!(f.find("0x130").len() == 1 || f.find("304").len() == 1);
    // A statement the parser refuses, outside BO_/SG_, is skipped with its line named.
    let text = "VERSION \"\"\n\nBO_ 100 M: 8 X\n SG_ S : 0|8@1+ (1,0) [0|255] \"\" X\n\n\
                CM_ SG_ 100 S \"ok\";\nBA_ ??? broken;\nVAL_ 100 S 1 \"one\" ;\n";
    let f = DbcFile::parse(text, "q.dbc").expect("tolerated");
    assert_eq!(f.skipped.iter().map(|s| s.0).collect::<Vec<_>>(), vec![7]);
    assert_eq!(
        f.messages[0].signals[0].values,
        vec![(1, "one".to_string())]
    );
    // Duplicate names: ambiguous by name, unique by id.
    let g = load("css-electronics-canedge-gnss.dbc");
    assert_eq!(g.find("gnss_pos").len(), 2);
    assert_eq!(g.find("19").len(), 1);
    assert!(
        g.messages
            .iter()
            .all(|m| m.name != "VECTOR__INDEPENDENT_SIG_MSG")
    );
}

#[test]
fn broken_message_lines_are_errors_with_position() {
    let text =
        "VERSION \"\"\n\nBO_ 100 M: 8 X\n SG_ S : 0|8@1+ (1,0) [0|255] \"\" X\nBO_ x N: 8 X\n";
    match DbcFile::parse(text, "t.dbc") {
        Err(DbcError::Syntax { path, line, .. }) => assert_eq!((path.as_str(), line), ("t.dbc", 5)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        DbcFile::load(std::path::Path::new("/nonexistent.dbc")),
        Err(DbcError::Read { .. })
    ));
}

/// Reference: Motorola bit numbering walked one bit at a time over a big-endian u64.
fn reference_be(data: &[u8; 8], start: u16, size: u8) -> Option<u64> {
    // Position of the MSB in "big-endian linear" numbering (0 = byte 0 bit 7).
    let msb = (start / 8) * 8 + (7 - start % 8);
    let end = u32::from(msb) + u32::from(size);
    if end > 64 {
        return None;
    }
    let whole = u64::from_be_bytes(*data);
    let shift = 64 - end;
    let mask = if size == 64 {
        u64::MAX
    } else {
        (1u64 << size) - 1
    };
    Some((whole >> shift) & mask)
}

proptest! {
    #[test]
    fn motorola_matches_reference(data in any::<[u8; 8]>(), start in 0u16..64, size in 1u8..=64) {
        prop_assert_eq!(extract_be(&data, start, size), reference_be(&data, start, size));
    }

    #[test]
    fn arbitrary_text_never_panics(text in "(BO_ [0-9]{1,10} [A-Z]{1,3}: [0-9] X\n( SG_ [a-z] [mM0-9]{0,3} ?: [0-9]{1,2}\\|[0-9]{1,2}@[01][+-] \\([0-9.]{1,4},[0-9-]{1,3}\\) \\[0\\|1\\] \"\" X\n){0,3}){0,3}") {
        if let Ok(f) = DbcFile::parse(&text, "p.dbc") {
            for m in &f.messages {
                for (i, s) in m.signals.iter().enumerate() {
                    let _ = m.present(i, &[0xA5; 8]);
                    let _ = s.decode(&[0x5A; 8], true);
                    let _ = s.decode(&[], true);
                }
            }
        }
    }
}
