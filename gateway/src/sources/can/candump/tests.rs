//! The candump parser on every format in the real captures, on hand-made edge cases, and
//! under property tests.

use proptest::prelude::*;

use super::*;
use crate::sources::can::frame::Kind;

fn data_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/can/logs")
}

/// Parses every line of a capture; returns the frames (with iface and time).
fn parse_file(name: &str) -> Vec<(Option<i64>, String, Frame)> {
    let text = std::fs::read_to_string(data_dir().join(name)).expect("capture");
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| match parse_line(l) {
            Ok(Some(f)) => Some((f.time_us, f.iface.to_string(), f.frame)),
            Ok(None) => None,
            Err(e) => panic!("{name}:{}: {e}", i + 1),
        })
        .collect()
}

#[test]
fn log_format_idle_truck() {
    let frames = parse_file("css-j1939-truck-idle-10s.candump.log");
    assert_eq!(frames.len(), 3582);
    let (t, iface, f) = &frames[2];
    assert_eq!(*t, Some(1_635_188_455_029_900));
    assert_eq!(iface, "can0");
    assert_eq!(
        (f.id, f.extended, f.fd, f.kind),
        (0x0CF0_0400, true, false, Kind::Data)
    );
    assert_eq!(f.data(), &[0x60, 0x7D, 0x84, 0x48, 0x14, 0x00, 0xF0, 0x84]);
    // Spans 10 s.
    let span = frames.last().and_then(|x| x.0).unwrap() - frames[0].0.unwrap();
    assert!((9_000_000..=10_000_000).contains(&span), "{span}");
}

#[test]
fn log_format_two_buses() {
    let frames = parse_file("css-j1939-truck-tp-2bus.candump.log");
    assert_eq!(frames.len(), 1815);
    assert!(frames.iter().any(|f| f.1 == "can0"));
    assert!(frames.iter().any(|f| f.1 == "can1"));
}

#[test]
fn log_with_comment_header_and_short_frames() {
    let frames = parse_file("canboat-candumpSample3.txt");
    assert_eq!(frames.len(), 2368);
    assert!(frames.iter().all(|f| f.1 == "slcan0"));
    // A DLC-3 frame in the NMEA 2000 capture.
    let n2k = parse_file("css-nmea2000-gnss-20s.candump.log");
    assert_eq!(n2k.len(), 3233);
    assert!(
        n2k.iter()
            .any(|f| f.2.id == 0x18EA_FF05 && f.2.data() == [0x09, 0xFD, 0x01])
    );
}

#[test]
fn default_ascii_format() {
    let frames = parse_file("canboat-candumpSample2.txt");
    assert_eq!(frames.len(), 402);
    let (t, iface, f) = &frames[0];
    assert_eq!((*t, iface.as_str()), (None, "can0"));
    assert_eq!((f.id, f.extended), (0x09F8_027F, true));
    assert_eq!(f.data(), &[0x00, 0xFC, 0xFF, 0xFF, 0x00, 0x00, 0xFF, 0xFF]);
}

#[test]
fn old_format_with_interface_header() {
    let frames = parse_file("canboat-candumpSample1.txt");
    assert_eq!(frames.len(), 6026);
    let (t, iface, f) = &frames[0];
    assert_eq!((*t, iface.as_str()), (None, ""));
    assert_eq!((f.id, f.extended), (0x18EE_FF01, true));
    assert_eq!(f.data(), &[0x05, 0xa0, 0xbe, 0x1c, 0x00, 0xa0, 0xa0, 0xc0]);
}

#[test]
fn fd_remote_error_and_standard_frames() {
    let f = parse_line("(1.5) vcan0 123##100112233445566778899AABB")
        .unwrap()
        .unwrap();
    assert_eq!(f.time_us, Some(1_500_000));
    assert!(f.frame.fd && !f.frame.extended);
    assert_eq!(f.frame.data().len(), 12);
    let f = parse_line("(0.000001) can0 123#R").unwrap().unwrap();
    assert_eq!((f.frame.kind, f.frame.len), (Kind::Remote, 0));
    let f = parse_line("(0.0) can0 1ABCDEF0#R8").unwrap().unwrap();
    assert_eq!(
        (f.frame.kind, f.frame.len, f.frame.extended),
        (Kind::Remote, 8, true)
    );
    let f = parse_line("(0.0) can0 20000040#0000000000000000")
        .unwrap()
        .unwrap();
    assert_eq!((f.frame.kind, f.frame.id), (Kind::Error, 0x40));
    let f = parse_line("(0.0) can0 7FF#").unwrap().unwrap();
    assert_eq!((f.frame.id, f.frame.data().len()), (0x7FF, 0));
    let f = parse_line("(0.0) can0 123#11.22.33").unwrap().unwrap();
    assert_eq!(f.frame.data(), &[0x11, 0x22, 0x33]);
    let f = parse_line("(0.0) can0 123#1122334455667788_E")
        .unwrap()
        .unwrap();
    assert_eq!(f.frame.data().len(), 8);
    // Default format: FD with a two-digit length, remote request, error frame text.
    let f = parse_line("  can0  123  [12]  00 11 22 33 44 55 66 77 88 99 AA BB")
        .unwrap()
        .unwrap();
    assert!(f.frame.fd);
    let f = parse_line("  can0  123   [2]  remote request")
        .unwrap()
        .unwrap();
    assert_eq!((f.frame.kind, f.frame.len), (Kind::Remote, 2));
    let f = parse_line("(1.000000)  can0  20000004   [8]  00 10 00 00 00 00 00 00   ERRORFRAME")
        .unwrap()
        .unwrap();
    assert_eq!((f.frame.kind, f.frame.id), (Kind::Error, 4));
    for skip in [
        "",
        "   ",
        "# comment",
        "interface = can0, family = 29, type = 3, proto = 1",
    ] {
        assert_eq!(parse_line(skip), Ok(None), "{skip:?}");
    }
}

#[test]
fn errors_name_the_column() {
    let cases: &[(&str, usize)] = &[
        ("(1.0) can0 12G#00", 12),
        ("(1.0) can0 123#0", 16),
        ("(1.0) can0 123#001122334455667788", 16),
        ("(1.0) can0 20000000A#00", 12),
        ("(1.0) can0 5FFFFFFF#00", 12),
        ("(1.x) can0 123#00", 2),
        ("(1.0 can0 123#00", 1),
        ("(1.0) can0", 11),
        ("(1.0) can0 123#00 junk", 19),
        ("  can0  123   [9]  00", 15),
        ("  can0  123   [3]  00 11", 25),
        ("  can0  123   [13]  00", 15),
        ("<0x18eeff01 [8] 05", 1),
        ("<18eeff01> [8] 05", 2),
        ("(1.0) can0 123##", 17),
        ("(1.0) can0 123#R9", 17),
        ("(1.0) can0 123##0112", 20),
        ("(1.0) can0 123#00_XX", 16),
    ];
    for (line, column) in cases {
        let e = parse_line(line).expect_err(line);
        assert_eq!(e.column, *column, "{line:?}: {e}");
    }
    // Columns count characters, not bytes.
    let e = parse_line("(1.0) cän0 12G#00").expect_err("bad id");
    assert_eq!(e.column, 12);
    assert!(parse_line(&"1".repeat(MAX_LINE + 1)).is_err());
}

#[test]
fn pacer_follows_the_log_scaled() {
    let mut p = Pacer::new(2.0);
    assert_eq!(p.due_ms(Some(10_000_000), 0), None);
    // 1 s later in the log at 2× speed: due at 500 ms.
    assert_eq!(p.due_ms(Some(11_000_000), 100), Some(500));
    // Already late: at once.
    assert_eq!(p.due_ms(Some(11_000_000), 600), None);
    // Time going backwards re-anchors.
    assert_eq!(p.due_ms(Some(5_000_000), 700), None);
    assert_eq!(p.due_ms(Some(5_100_000), 700), Some(750));
    // No stamp: at once. Speed 0: always at once.
    assert_eq!(p.due_ms(None, 0), None);
    let mut fast = Pacer::new(0.0);
    assert_eq!(fast.due_ms(Some(1), 0), None);
    assert_eq!(fast.due_ms(Some(100_000_000), 0), None);
}

fn frame_strategy() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (0u32..=0x7FF, proptest::collection::vec(any::<u8>(), 0..=8))
            .prop_map(|(id, d)| Frame::data_frame(id, false, false, &d).unwrap()),
        (
            0u32..=0x1FFF_FFFF,
            proptest::collection::vec(any::<u8>(), 0..=8)
        )
            .prop_map(|(id, d)| Frame::data_frame(id, true, false, &d).unwrap()),
        (
            0u32..=0x1FFF_FFFF,
            prop::sample::select(vec![0usize, 5, 8, 12, 16, 20, 24, 32, 48, 64]),
            any::<[u8; 64]>()
        )
            .prop_map(|(id, n, d)| Frame::data_frame(id, true, true, &d[..n]).unwrap()),
    ]
}

/// Writes `f` as candump -l does.
fn log_line(t: i64, iface: &str, f: &Frame) -> String {
    let id = if f.extended {
        format!("{:08X}", f.id)
    } else {
        format!("{:03X}", f.id)
    };
    let sep = if f.fd { "##0" } else { "#" };
    let data: String = f.data().iter().map(|b| format!("{b:02X}")).collect();
    format!(
        "({}.{:06}) {iface} {id}{sep}{data}",
        t / 1_000_000,
        t % 1_000_000
    )
}

/// Writes `f` in the default ASCII format.
fn ascii_line(iface: &str, f: &Frame) -> String {
    let id = if f.extended {
        format!("{:08X}", f.id)
    } else {
        format!("{:03X}", f.id)
    };
    let len = if f.fd {
        format!("[{:02}]", f.len)
    } else {
        format!("[{}]", f.len)
    };
    let data: Vec<String> = f.data().iter().map(|b| format!("{b:02X}")).collect();
    format!("  {iface}  {id}   {len}  {}", data.join(" "))
}

proptest! {
    /// Whatever bytes: no panic; an error's column is within the line.
    #[test]
    fn never_panics(line in "\\PC{0,120}") {
        match parse_line(&line) {
            Ok(_) => {}
            Err(e) => prop_assert!(e.column >= 1 && e.column <= line.chars().count() + 1),
        }
    }

    /// Near-miss lines built from valid pieces: no panic.
    #[test]
    fn near_misses(
        stamp in "(\\([0-9]{0,3}\\.?[0-9]{0,7}\\)?)?",
        iface in "[a-z0-9]{0,5}",
        id in "[0-9A-Fa-fR#<>x\\[\\]]{0,10}",
        data in "[0-9A-F#R. _]{0,40}",
    ) {
        parse_line(&format!("{stamp} {iface} {id}{data}")).ok();
        parse_line(&format!("  {iface}  {id}  {data}")).ok();
    }

    /// What candump writes, we read back.
    #[test]
    fn round_trip(t in 0i64..4_000_000_000_000_000, f in frame_strategy()) {
        let line = log_line(t, "can1", &f);
        let got = parse_line(&line).unwrap().unwrap();
        prop_assert_eq!(got.time_us, Some(t));
        prop_assert_eq!(got.iface, "can1");
        prop_assert_eq!(got.frame, f);
        let ascii = ascii_line("vcan0", &f);
        let a = parse_line(&ascii).unwrap().unwrap();
        // The ASCII format marks FD only by a two-digit length, which 0..=8 also gets.
        prop_assert_eq!(a.frame.data(), f.data());
        prop_assert_eq!((a.frame.id, a.frame.extended), (f.id, f.extended));
    }
}
