//! Epoch assembly, and every capture in `gateway/tests/data/nmea/` replayed through framer,
//! parser, epoch assembly and hygiene in random chunkings.

use super::epoch::{EpochAssembler, Fix};
use super::nmea::{self, Date, FixType, Quality, Sentence, TimeOfDay};
use super::*;
use proptest::prelude::*;

fn sentence(s: &str) -> Sentence {
    let line = format!("{s}*{:02X}", nmea::checksum(&s.as_bytes()[1..]));
    nmea::parse(line.as_bytes(), ParseOptions::default())
        .unwrap()
        .sentence
}

#[test]
fn epoch_combines_rmc_gga_gsa_vtg() {
    let mut a = EpochAssembler::new();
    assert_eq!(
        a.push(&sentence(
            "$GPGGA,235959.00,4808.9993,N,01135.0798,E,1,07,1.4,460.0,M,46.2,M,,"
        )),
        None
    );
    assert_eq!(
        a.push(&sentence("$GPGSA,A,3,20,13,31,04,05,,,,,,,,2.7,1.5,2.3")),
        None
    );
    assert_eq!(
        a.push(&sentence(
            "$GPRMC,235959.00,A,4808.9990,N,01135.0790,E,10.0,45.0,311226,,,A"
        )),
        None
    );
    assert_eq!(a.push(&sentence("$GPVTG,44.0,T,,M,9.0,N,16.0,K,A")), None);
    // The next epoch closes this one: midnight, and the date moves on without an RMC date.
    let fix = a
        .push(&sentence(
            "$GPGGA,000000.00,4808.9993,N,01135.0798,E,1,07,1.4,460.0,M,46.2,M,,",
        ))
        .unwrap();
    let ms = Date {
        year: 2026,
        month: 12,
        day: 31,
    }
    .utc_ms(TimeOfDay(86_399_000))
    .unwrap();
    assert_eq!(
        fix,
        Fix {
            time: TimeOfDay(86_399_000),
            utc_ms: Some(ms),
            lat: Some(48.0 + 8.9993 / 60.0),
            lon: Some(11.0 + 35.0798 / 60.0),
            altitude_m: Some(460.0),
            speed_kmh: Some(18.52),
            course_deg: Some(45.0),
            valid: Some(true),
            quality: Some(Quality::Gps),
            mode: Some(nmea::Mode::Autonomous),
            fix_type: Some(FixType::ThreeD),
            satellites: Some(7),
            hdop: Some(1.4),
            pdop: Some(2.7),
            vdop: Some(2.3),
        }
    );
    let next = a.flush().unwrap();
    assert_eq!(next.utc_ms, Some(ms + 1000));
    assert_eq!(a.flush(), None);
    assert_eq!(a.stats().epochs, 2);
}

#[test]
fn epoch_without_date_has_no_utc_and_zda_alone_is_no_fix() {
    let mut a = EpochAssembler::new();
    a.push(&sentence(
        "$GPGGA,120000.00,4808.9993,N,01135.0798,E,1,07,1.4,460.0,M,,M,,",
    ));
    let fix = a
        .push(&sentence("$GPZDA,120001.00,04,07,2026,00,00"))
        .unwrap();
    assert_eq!(fix.utc_ms, None);
    // A ZDA-only epoch gives the date but no fix.
    assert_eq!(
        a.push(&sentence(
            "$GPGGA,120002.00,4808.9993,N,01135.0798,E,1,07,1.4,460.0,M,,M,,"
        )),
        None
    );
    let fix = a.flush().unwrap();
    let day = Date {
        year: 2026,
        month: 7,
        day: 4,
    };
    assert_eq!(fix.utc_ms, day.utc_ms(TimeOfDay(43_202_000)));
    // Untimed RMC (cold start) is dropped and counted.
    assert_eq!(a.push(&sentence("$GPRMC,,V,,,,,,,,,,N")), None);
    assert_eq!(a.stats().untimed, 1);
}

/// The capture without gpsd's leading `#` metadata lines (a receiver never sends them).
pub(super) fn capture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/nmea/{name}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read(&path).unwrap();
    let mut out = Vec::with_capacity(raw.len());
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b"#") {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Replays `bytes` in chunks whose sizes come from `seed` (0 = one chunk).
fn replay(bytes: &[u8], seed: u64) -> (Vec<Fix>, GnssStats) {
    let mut core = GnssCore::new(GnssConfig::default());
    let mut fixes = Vec::new();
    let mut rng = seed;
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = if seed == 0 {
            rest.len()
        } else {
            // xorshift64: chunks of 1 to 64 bytes.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            usize::try_from(rng % 64).unwrap() + 1
        };
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        core.push(chunk, |f| fixes.push(f));
        rest = tail;
    }
    fixes.extend(core.flush());
    (fixes, core.stats())
}

/// (file, accepted fixes, epochs, parsed, bad checksum, invalid, overlong + truncated).
///
/// Measured, then checked by hand against `grep -c '^\$..RMC,[^,]*,A'` and the files:
/// - bu353s4 25, mt3339 30, sirfstarv 59, nmea-fuzzy-cases 14, com-1289 14 (+ its one bad
///   GSV), bu353-glonass 9, isync 12, quectel 3, ublox-lea-4s 3: one fix per RMC with status A.
/// - firefly-II: 23 RMC A; all 23 GGA have wrong checksums (counted), epochs are RMC+ZDA.
/// - telit-pls83-w: 20 RMC A, but GP and GA send one each per epoch: 10 fixes.
/// - garmin-10x: 9 RMC A, two of them with 3 satellites (rule 4): 7.
/// - GPSmap-76S: simulator mode (RMC `V`, GGA quality 8): 0. polarx2: 3 satellites and HDOP
///   10.5 in every epoch: 0. mtk-3301: cold start, status V, latitude `8960.000000` (invalid
///   minutes: 12 invalid), 11 `$PMTKCHN` lines longer than 120 bytes: 0.
/// - gp-320fw cold boot: 3 RMC A, one truncated into a bad checksum: 2; 40 bad checksums.
/// - ublox8-uniqid-monhw: UBX frames break 14 lines; 6 fixes survive.
pub(super) const EXPECTED: &[(&str, u64, u64, u64, u64, u64, u64)] = &[
    ("GPSmap-76S.log", 0, 12, 95, 0, 0, 0),
    ("beidou-bd.log", 5, 10, 67, 0, 0, 0),
    ("bu353-glonass.log", 9, 19, 112, 0, 0, 0),
    ("bu353s4.log", 25, 25, 90, 0, 0, 0),
    ("com-1289.log", 14, 14, 83, 1, 0, 0),
    ("firefly-II.log", 23, 23, 46, 23, 0, 0),
    ("garmin-10x.log", 7, 14, 84, 0, 0, 0),
    ("gp-320fw-2019-04-07-coldboot.log", 2, 20, 92, 40, 1, 4),
    ("isync.log", 12, 12, 100, 0, 0, 1),
    ("mt3339.log", 30, 30, 138, 0, 0, 0),
    ("mtk-3301.log", 0, 5, 32, 3, 12, 11),
    ("nmea-fuzzy-cases.log", 14, 14, 28, 0, 0, 0),
    ("polarx2.log", 0, 5, 60, 0, 0, 0),
    ("quectel-eg25-g-2.log", 3, 3, 42, 0, 0, 0),
    ("sirfstarv-nmea.log", 59, 59, 367, 0, 0, 0),
    ("telit-pls83-w.log", 10, 10, 225, 0, 0, 0),
    ("ublox-lea-4s.log", 3, 3, 27, 0, 0, 0),
    ("ublox8-uniqid-monhw.log", 6, 6, 45, 0, 0, 14),
];

#[test]
fn every_capture_replays_the_same_in_any_chunking() {
    let dir = format!("{}/tests/data/nmea", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 18);
    for name in &names {
        let bytes = capture(name);
        let (fixes, stats) = replay(&bytes, 0);
        for seed in 1..=20 {
            let (f, s) = replay(&bytes, seed);
            assert_eq!((&f, s), (&fixes, stats), "{name} seed {seed}");
        }
        let got = (
            stats.hygiene.accepted,
            stats.epoch.epochs,
            stats.parse.parsed,
            stats.parse.bad_checksum,
            stats.parse.invalid,
            stats.framer.overlong + stats.framer.truncated,
        );
        let e = EXPECTED.iter().find(|e| e.0 == name).unwrap();
        assert_eq!(got, (e.1, e.2, e.3, e.4, e.5, e.6), "{name}: {stats:?}");
        for f in &fixes {
            let (lat, lon) = (f.lat.unwrap(), f.lon.unwrap());
            assert!(
                lat.abs() <= 90.0 && lon.abs() <= 180.0 && (lat, lon) != (0.0, 0.0),
                "{name}"
            );
        }
    }
    assert_eq!(EXPECTED.len(), names.len());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_core(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)
    ) {
        let mut core = GnssCore::new(GnssConfig::default());
        for c in &chunks {
            core.push(c, |_| {});
        }
        let _ = core.flush();
        let s = core.stats();
        let total: usize = chunks.iter().map(Vec::len).sum();
        prop_assert!(s.framer.garbage_bytes <= total as u64);
    }

    #[test]
    fn captures_mutated_never_panic(idx in 0usize..18, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..50)) {
        let dir = format!("{}/tests/data/nmea", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".log")).collect();
        names.sort();
        let mut bytes = capture(&names[idx]);
        for (at, b) in flips {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        let mut core = GnssCore::new(GnssConfig::default());
        core.push(&bytes, |f| assert!(f.lat.is_some() && f.lon.is_some()));
    }
}
