//! Parser unit and property tests.

use super::*;
use proptest::prelude::*;

const STRICT: ParseOptions = ParseOptions {
    allow_missing_checksum: false,
};

/// Appends `*hh` to a sentence written without a checksum.
fn with_checksum(s: &str) -> String {
    format!("{s}*{:02X}", checksum(&s.as_bytes()[1..]))
}

fn p(s: &str) -> Result<Parsed, NmeaError> {
    parse(s.as_bytes(), STRICT)
}

#[test]
fn rmc_from_a_real_receiver() {
    let r =
        p("$GPRMC,132820.60,A,4134.49821229,N,09345.03351845,W,3.252,92.308,180320,11.5985,E,D*1A")
            .unwrap();
    assert_eq!(r.talker, Talker::Gps);
    let Sentence::Rmc(r) = r.sentence else {
        panic!("{r:?}")
    };
    assert_eq!(
        r.time,
        Some(TimeOfDay(((13 * 60 + 28) * 60 + 20) * 1000 + 600))
    );
    assert_eq!(r.valid, Some(true));
    assert_eq!(
        r.lat,
        Some((41.0 * 60.0 * 1e8 + 3_449_821_229.0) / (60.0 * 1e8))
    );
    assert_eq!(
        r.lon,
        Some(-(93.0 * 60.0 * 1e8 + 4_503_351_845.0) / (60.0 * 1e8))
    );
    assert_eq!(r.speed_kmh, Some(3.252 * 1.852));
    assert_eq!(r.course_deg, Some(92.308));
    assert_eq!(
        r.date,
        Some(Date {
            year: 2020,
            month: 3,
            day: 18
        })
    );
    assert_eq!(r.mode, Some(Mode::Differential));
}

#[test]
fn status_v_with_empty_fields_is_not_null_island() {
    let s = with_checksum("$GNRMC,001031.00,V,,,,,,,060180,,,N");
    let Sentence::Rmc(r) = p(&s).unwrap().sentence else {
        panic!()
    };
    assert_eq!(
        (r.valid, r.lat, r.lon, r.speed_kmh),
        (Some(false), None, None, None)
    );
    assert_eq!(
        r.date,
        Some(Date {
            year: 1980,
            month: 1,
            day: 6
        })
    );
    assert_eq!(r.mode, Some(Mode::NotValid));
    let s = with_checksum("$GPGGA,,,,,,0,00,,,M,,M,,");
    let Sentence::Gga(g) = p(&s).unwrap().sentence else {
        panic!()
    };
    assert_eq!(
        (g.time, g.lat, g.quality, g.hdop),
        (None, None, Some(Quality::Invalid), None)
    );
}

#[test]
fn gga_gns_vtg_gsa_gll_zda_gsv() {
    let Sentence::Gga(g) =
        p("$GPGGA,000343.03,4808.9993,N,01135.0798,E,1,04,01.4,00460.0,M,0046.2,M,,*56")
            .unwrap()
            .sentence
    else {
        panic!()
    };
    assert_eq!(g.quality, Some(Quality::Gps));
    assert_eq!(
        (g.satellites, g.hdop, g.altitude_m),
        (Some(4), Some(1.4), Some(460.0))
    );
    assert_eq!(g.geoid_separation_m, Some(46.2));
    assert_eq!(g.lat, Some(48.0 + 8.9993 / 60.0));

    let s = with_checksum("$GNGNS,112257.00,3844.24011,N,00908.43828,W,AN,03,10.5,,,,");
    let Sentence::Gns(g) = p(&s).unwrap().sentence else {
        panic!()
    };
    assert_eq!(
        (g.mode, g.satellites, g.altitude_m),
        (Some(Mode::Autonomous), Some(3), None)
    );
    let s = with_checksum("$GNGNS,112257.00,,,,,NN,00,,,,,,V");
    let Sentence::Gns(g) = p(&s).unwrap().sentence else {
        panic!()
    };
    assert_eq!(g.mode, Some(Mode::NotValid));

    let Sentence::Vtg(v) = p("$GPVTG,000.0,T,357.0,M,000.1,N,0000.1,K,A*12")
        .unwrap()
        .sentence
    else {
        panic!()
    };
    assert_eq!(
        (v.course_deg, v.speed_kmh, v.mode),
        (Some(0.0), Some(0.1), Some(Mode::Autonomous))
    );

    let Sentence::Gsa(g) = p("$GPGSA,A,3,20,,,,13,31,,04,,,,,02.7,01.4,02.3*05")
        .unwrap()
        .sentence
    else {
        panic!()
    };
    assert_eq!(g.fix_type, Some(FixType::ThreeD));
    assert_eq!(
        (g.used, g.pdop, g.hdop, g.vdop),
        (4, Some(2.7), Some(1.4), Some(2.3))
    );

    let Sentence::Gll(g) = p("$GPGLL,4808.9993,N,01135.0798,E,000345.03,A,A*66")
        .unwrap()
        .sentence
    else {
        panic!()
    };
    assert_eq!((g.valid, g.mode), (Some(true), Some(Mode::Autonomous)));
    assert_eq!(g.time, Some(TimeOfDay(3 * 60_000 + 45_030)));

    let s = with_checksum("$GPZDA,201530.00,04,07,2002,00,00");
    let Sentence::Zda(z) = p(&s).unwrap().sentence else {
        panic!()
    };
    assert_eq!(
        z.date,
        Some(Date {
            year: 2002,
            month: 7,
            day: 4
        })
    );

    let Sentence::Gsv(g) = p("$GPGSV,3,2,12,13,29,210,40,31,27,059,40,07,26,306,,04,20,308,40*75")
        .unwrap()
        .sentence
    else {
        panic!()
    };
    assert_eq!((g.total, g.number, g.in_view, g.count), (3, 2, Some(12), 4));
    assert_eq!(
        g.sats[2],
        SatInView {
            id: 7,
            elevation_deg: Some(26),
            azimuth_deg: Some(306),
            snr_dbhz: None
        }
    );
    // NMEA 4.11 signal id after the groups; an empty GSV.
    let s = with_checksum("$GAGSV,1,1,02,02,10,100,30,11,20,200,,7");
    let Sentence::Gsv(g) = p(&s).unwrap().sentence else {
        panic!()
    };
    assert_eq!(g.count, 2);
    let Sentence::Gsv(g) = p(&with_checksum("$GPGSV,1,1,00")).unwrap().sentence else {
        panic!()
    };
    assert_eq!((g.count, g.in_view), (0, Some(0)));
}

#[test]
fn every_talker() {
    for (t, want) in [
        ("GP", Talker::Gps),
        ("GN", Talker::Gnss),
        ("GL", Talker::Glonass),
        ("GA", Talker::Galileo),
        ("GB", Talker::Beidou),
        ("BD", Talker::Beidou),
        ("QZ", Talker::Qzss),
        ("GQ", Talker::Qzss),
    ] {
        let s = with_checksum(&format!(
            "${t}GGA,120000,4808.9993,N,01135.0798,E,1,04,1.4,460,M,,M,,"
        ));
        assert_eq!(p(&s).unwrap().talker, want, "{t}");
    }
    let s = with_checksum("$PMTK001,604,3");
    assert_eq!(p(&s), Err(NmeaError::Unsupported { address: *b"PMTK0" }));
    let s = with_checksum("$PGRME,15.0,M,45.0,M,25.0,M");
    assert_eq!(p(&s), Err(NmeaError::Unsupported { address: *b"PGRME" }));
    let s = with_checksum("$GPGST,120000,1,2,3,4,5,6,7");
    assert_eq!(p(&s), Err(NmeaError::Unsupported { address: *b"GPGST" }));
}

#[test]
fn checksum_rules() {
    let good = "$GPGLL,4808.9993,N,01135.0798,E,000345.03,A,A*66";
    assert!(p(good).is_ok());
    assert!(p(&format!("{good}\r\n")).is_ok());
    assert!(p(&good.to_lowercase().replace("$gpgll", "$GPGLL")).is_err());
    assert_eq!(
        p("$GPGLL,4808.9993,N,01135.0798,E,000345.03,A,A*67"),
        Err(NmeaError::ChecksumMismatch {
            computed: 0x66,
            stated: 0x67
        })
    );
    assert_eq!(
        p("$GPGLL,4808.9993,N*6"),
        Err(NmeaError::MalformedChecksum { offset: 18 })
    );
    let bare = "$GPGLL,4808.9993,N,01135.0798,E,000345.03,A,A";
    assert_eq!(p(bare), Err(NmeaError::MissingChecksum));
    assert!(p(bare).unwrap_err().is_checksum());
    let lax = ParseOptions {
        allow_missing_checksum: true,
    };
    assert!(parse(bare.as_bytes(), lax).is_ok());
    let s = with_checksum("$GPVTG,1,T,,M,2,N,,K,A");
    assert!(p(&s.replace(&s[s.len() - 2..], &s[s.len() - 2..].to_lowercase())).is_ok());
}

#[test]
fn errors_name_field_index_and_offset() {
    // Field 4 (N/S) of RMC starts at byte 29.
    let s = with_checksum("$GPRMC,132820.60,A,4134.4982,X,09345.0335,W,3.2,92.3,180320,,,D");
    assert_eq!(
        p(&s),
        Err(NmeaError::Field {
            index: 4,
            offset: 29,
            error: FieldError::Invalid
        })
    );
    let msg = p(&s).unwrap_err().to_string();
    assert_eq!(msg, "field 4 at byte 29: invalid");
    // Truncated sentence: field 9 is missing.
    let s = with_checksum("$GPRMC,132820.60,A,4134.4982,N,09345.0335,W,3.2,92.3");
    assert!(matches!(
        p(&s),
        Err(NmeaError::Field {
            index: 9,
            error: FieldError::Missing,
            ..
        })
    ));
    // Out-of-range values.
    for bad in [
        "$GPRMC,246000,A,4134.4982,N,09345.0335,W,3.2,92.3,180320,,,D",
        "$GPRMC,120000,A,4160.0000,N,09345.0335,W,3.2,92.3,180320,,,D",
        "$GPRMC,120000,A,9100.0000,N,09345.0335,W,3.2,92.3,180320,,,D",
        "$GPRMC,120000,A,4134.4982,N,18000.0001,W,3.2,92.3,180320,,,D",
        "$GPRMC,120000,A,4134.4982,N,09345.0335,W,-3.2,92.3,180320,,,D",
        "$GPRMC,120000,A,4134.4982,N,09345.0335,W,1e3,92.3,180320,,,D",
        "$GPRMC,120000,A,4134.4982,N,09345.0335,W,inf,92.3,180320,,,D",
        "$GPRMC,120000,A,4134.4982,N,09345.0335,W,3.2,92.3,300220,,,D",
        "$GPRMC,120000,A,4134.4982,,09345.0335,W,3.2,92.3,180320,,,D",
        "$GPRMC,120000,Q,4134.4982,N,09345.0335,W,3.2,92.3,180320,,,D",
        "$GPGGA,120000,4808.9993,N,01135.0798,E,9,04,1.4,460,M,,M,,",
    ] {
        assert!(
            matches!(p(&with_checksum(bad)), Err(NmeaError::Field { .. })),
            "{bad}"
        );
    }
    assert_eq!(p("GPRMC*00"), Err(NmeaError::Framing));
    assert_eq!(p(&with_checksum("$GP")), Err(NmeaError::Framing));
    assert_eq!(p(&with_checksum("$GPRMCX,1")), Err(NmeaError::Framing));
}

#[test]
fn coordinates_are_exact_and_leap_seconds_clamp() {
    // 8 decimal minutes (RTK): one division of exact integers.
    let s =
        with_checksum("$GNGGA,235960.50,4134.50180323,S,17959.99999999,E,4,19,0.7,280.8,M,,M,,");
    let Sentence::Gga(g) = p(&s).unwrap().sentence else {
        panic!()
    };
    assert_eq!(g.lat, Some(-(249_450_180_323.0 / 60e8)));
    assert_eq!(g.lon, Some(1_079_999_999_999.0 / 60e8));
    assert_eq!(g.time, Some(TimeOfDay(TimeOfDay::DAY_MS - 1)));
    assert_eq!(
        Date {
            year: 1970,
            month: 1,
            day: 1
        }
        .days_since_epoch(),
        Some(0)
    );
    assert_eq!(
        Date {
            year: 2026,
            month: 11,
            day: 23
        }
        .utc_ms(TimeOfDay(7 * 3_600_000 + 52 * 60_000 + 50_123)),
        Some(1_795_420_370_123)
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        _ = parse(&bytes, STRICT).is_ok();
        _ = parse(&bytes, ParseOptions { allow_missing_checksum: true }).is_ok();
    }

    #[test]
    fn arbitrary_sentences_never_panic(body in "[A-Z]{2}(RMC|GGA|GNS|VTG|GSA|GLL|ZDA|GSV)(,[0-9.NSEWAVDM-]{0,12}){0,20}") {
        let s = with_checksum(&format!("${body}"));
        _ = p(&s).is_ok();
    }

    #[test]
    fn rmc_and_gga_round_trip(
        h in 0u32..24, m in 0u32..60, sec in 0u32..60, cs in 0u32..100,
        lat_d in 0u32..90, lat_m in 0u64..60, lat_f in 0u64..100_000_000, north: bool,
        lon_d in 0u32..180, lon_m in 0u64..60, lon_f in 0u64..100_000_000, east: bool,
        speed_c in 0u32..100_000, course_c in 0u32..36_000,
        day in 1u8..29, month in 1u8..13, yy in 0u16..80,
        quality in 0u32..9, sats in 0u8..40, hdop_c in 0u32..9_999, alt_c in -10_000i32..900_000,
    ) {
        let time = format!("{h:02}{m:02}{sec:02}.{cs:02}");
        let lat = format!("{lat_d:02}{lat_m:02}.{lat_f:08}");
        let lon = format!("{lon_d:03}{lon_m:02}.{lon_f:08}");
        let (ns, ew) = (if north { "N" } else { "S" }, if east { "E" } else { "W" });
        let want_lat = ((u64::from(lat_d) * 60 + lat_m) * 100_000_000 + lat_f) as f64 / 6e9
            * if north { 1.0 } else { -1.0 };
        let want_lon = ((u64::from(lon_d) * 60 + lon_m) * 100_000_000 + lon_f) as f64 / 6e9
            * if east { 1.0 } else { -1.0 };
        let want_time = TimeOfDay(((h * 60 + m) * 60 + sec) * 1000 + cs * 10);

        let rmc = with_checksum(&format!(
            "$GNRMC,{time},A,{lat},{ns},{lon},{ew},{}.{:02},{}.{:02},{day:02}{month:02}{yy:02},,,A",
            speed_c / 100, speed_c % 100, course_c / 100, course_c % 100
        ));
        let Sentence::Rmc(r) = p(&rmc).unwrap().sentence else { panic!() };
        prop_assert_eq!(r.time, Some(want_time));
        prop_assert_eq!(r.lat, Some(want_lat));
        prop_assert_eq!(r.lon, Some(want_lon));
        prop_assert_eq!(r.speed_kmh, Some(f64::from(speed_c) / 100.0 * KMH_PER_KNOT));
        prop_assert_eq!(r.course_deg, Some(f64::from(course_c) / 100.0));
        prop_assert_eq!(r.date, Some(Date { year: 2000 + yy, month, day }));

        let gga = with_checksum(&format!(
            "$GPGGA,{time},{lat},{ns},{lon},{ew},{quality},{sats:02},{}.{},{}{}.{},M,,M,,",
            hdop_c / 10, hdop_c % 10,
            if alt_c < 0 { "-" } else { "" }, alt_c.unsigned_abs() / 10, alt_c.unsigned_abs() % 10
        ));
        let Sentence::Gga(g) = p(&gga).unwrap().sentence else { panic!() };
        prop_assert_eq!(g.time, Some(want_time));
        prop_assert_eq!((g.lat, g.lon), (Some(want_lat), Some(want_lon)));
        prop_assert_eq!(g.quality, Quality::from_digit(quality));
        prop_assert_eq!(g.satellites, Some(sats));
        prop_assert_eq!(g.hdop, Some(f64::from(hdop_c) / 10.0));
        prop_assert_eq!(g.altitude_m, Some(f64::from(alt_c) / 10.0));
    }
}
