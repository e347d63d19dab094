//! Hygiene rules, one test per rule and its edge cases.

use super::*;
use crate::sources::gps::nmea::{Mode, TimeOfDay};

const T0: i64 = 1_795_420_370_000;

/// A good moving fix at `t_s` seconds after T0.
fn fix(t_s: i64, lat: f64, lon: f64, kmh: f64) -> Fix {
    Fix {
        time: TimeOfDay(u32::try_from((T0 + t_s * 1000) % 86_400_000).unwrap()),
        utc_ms: Some(T0 + t_s * 1000),
        lat: Some(lat),
        lon: Some(lon),
        speed_kmh: Some(kmh),
        course_deg: Some(90.0),
        valid: Some(true),
        quality: Some(Quality::Gps),
        mode: Some(Mode::Autonomous),
        fix_type: Some(FixType::ThreeD),
        satellites: Some(8),
        hdop: Some(1.0),
        ..Fix::default()
    }
}

/// Metres north → degrees of latitude.
fn north(m: f64) -> f64 {
    m / 111_195.0
}

#[test]
fn no_fix_in_all_its_forms() {
    let mut h = Hygiene::new(HygieneConfig::default());
    let base = fix(0, 48.1, 11.5, 50.0);
    let cases = [
        Fix {
            valid: Some(false),
            ..base
        },
        Fix { lat: None, ..base },
        Fix { lon: None, ..base },
        Fix {
            quality: Some(Quality::Invalid),
            ..base
        },
        Fix {
            quality: Some(Quality::Estimated),
            ..base
        },
        Fix {
            mode: Some(Mode::NotValid),
            ..base
        },
        Fix {
            mode: Some(Mode::Estimated),
            ..base
        },
        Fix {
            fix_type: Some(FixType::None),
            ..base
        },
    ];
    for f in cases {
        assert_eq!(h.check(f), Err(Rejection::NoFix), "{f:?}");
    }
    assert_eq!(h.stats().no_fix, 8);
    // Fields nobody reported do not reject: an RMC-only receiver is fine.
    let minimal = Fix {
        quality: None,
        mode: None,
        fix_type: None,
        hdop: None,
        satellites: None,
        ..base
    };
    assert!(h.check(minimal).is_ok());
}

#[test]
fn null_island() {
    let mut h = Hygiene::new(HygieneConfig::default());
    assert_eq!(h.check(fix(0, 0.0, 0.0, 0.0)), Err(Rejection::NullIsland));
    assert_eq!(
        h.check(fix(1, 0.00005, -0.00005, 0.0)),
        Err(Rejection::NullIsland)
    );
    // On the equator or the prime meridian is fine.
    assert!(h.check(fix(2, 0.0, 11.5, 0.0)).is_ok());
    assert_eq!(h.stats().null_island, 2);
    let mut off = Hygiene::new(HygieneConfig {
        null_island_deg: None,
        ..HygieneConfig::default()
    });
    assert!(off.check(fix(0, 0.0, 0.0, 0.0)).is_ok());
}

#[test]
fn hdop_and_satellites_thresholds() {
    let mut h = Hygiene::new(HygieneConfig::default());
    let f = fix(0, 48.1, 11.5, 50.0);
    assert_eq!(
        h.check(Fix {
            hdop: Some(10.1),
            ..f
        }),
        Err(Rejection::Hdop)
    );
    assert_eq!(
        h.check(Fix {
            satellites: Some(3),
            ..f
        }),
        Err(Rejection::Satellites)
    );
    assert!(
        h.check(Fix {
            hdop: Some(10.0),
            satellites: Some(4),
            ..f
        })
        .is_ok()
    );
    let s = h.stats();
    assert_eq!((s.hdop, s.satellites, s.accepted), (1, 1, 1));
    let mut off = Hygiene::new(HygieneConfig {
        max_hdop: None,
        min_satellites: None,
        ..HygieneConfig::default()
    });
    assert!(
        off.check(Fix {
            hdop: Some(50.0),
            satellites: Some(0),
            ..f
        })
        .is_ok()
    );
}

#[test]
fn duplicates_and_out_of_order() {
    let mut h = Hygiene::new(HygieneConfig::default());
    assert!(h.check(fix(10, 48.1, 11.5, 50.0)).is_ok());
    assert_eq!(
        h.check(fix(10, 48.1, 11.5, 50.0)),
        Err(Rejection::Duplicate)
    );
    assert_eq!(
        h.check(fix(9, 48.1, 11.5, 50.0)),
        Err(Rejection::OutOfOrder)
    );
    assert!(h.check(fix(11, 48.1001, 11.5, 50.0)).is_ok());
    let s = h.stats();
    assert_eq!((s.duplicate, s.out_of_order, s.accepted), (1, 1, 2));
}

#[test]
fn time_of_day_only_wraps_at_midnight() {
    let mut h = Hygiene::new(HygieneConfig::default());
    let late = Fix {
        utc_ms: None,
        time: TimeOfDay(86_399_000),
        ..fix(0, 48.1, 11.5, 50.0)
    };
    let early = Fix {
        utc_ms: None,
        time: TimeOfDay(0),
        lat: Some(48.1001),
        ..late
    };
    assert!(h.check(late).is_ok());
    assert!(h.check(early).is_ok(), "one second later, across midnight");
    assert_eq!(h.check(late), Err(Rejection::OutOfOrder));
}

#[test]
fn impossible_jump_is_rejected_then_reset() {
    let mut h = Hygiene::new(HygieneConfig::default());
    assert!(h.check(fix(0, 48.1, 11.5, 100.0)).is_ok());
    // 100 m in 1 s = 360 km/h > 300.
    assert_eq!(
        h.check(fix(1, 48.1 + north(100.0), 11.5, 100.0)),
        Err(Rejection::Jump)
    );
    // 80 m in 1 s = 288 km/h: fine.
    assert!(h.check(fix(1, 48.1 + north(80.0), 11.5, 100.0)).is_ok());
    // The same 100 m over 2 s from the new reference is fine too.
    assert!(h.check(fix(3, 48.1 + north(180.0), 11.5, 100.0)).is_ok());
    assert_eq!(h.stats().jump, 1);

    // A far-away position held for long enough becomes the reference after 5 rejections.
    let far = 49.0;
    for t in 4..9 {
        assert_eq!(
            h.check(fix(t, far, 11.5, 0.0)),
            Err(Rejection::Jump),
            "t={t}"
        );
    }
    assert!(h.check(fix(9, far, 11.5, 0.0)).is_ok());
    assert!(h.check(fix(10, far, 11.5, 0.0)).is_ok());
    let s = h.stats();
    assert_eq!((s.jump, s.resets), (6, 1));
    // Rule off.
    let mut off = Hygiene::new(HygieneConfig {
        max_speed_kmh: None,
        ..HygieneConfig::default()
    });
    assert!(off.check(fix(0, 48.1, 11.5, 0.0)).is_ok());
    assert!(off.check(fix(1, 10.0, 11.5, 0.0)).is_ok());
}

#[test]
fn drift_while_stopped_collapses_to_the_stop_point() {
    let mut h = Hygiene::new(HygieneConfig::default());
    let stop = (48.1, 11.5);
    assert!(h.check(fix(0, 48.1 - north(50.0), 11.5, 30.0)).is_ok());
    let first = h.check(fix(1, stop.0, stop.1, 0.5)).unwrap();
    assert_eq!((first.lat, first.lon), (Some(stop.0), Some(stop.1)));
    for (t, m) in [(2, 3.0), (3, -7.0), (4, 20.0)] {
        let f = h.check(fix(t, stop.0 + north(m), stop.1, 0.8)).unwrap();
        assert_eq!(
            (f.lat, f.lon, f.course_deg),
            (Some(stop.0), Some(stop.1), None),
            "t={t}"
        );
    }
    // Beyond the radius while "stopped": a new stop point, not collapsed.
    let moved = h.check(fix(5, stop.0 + north(40.0), stop.1, 1.0)).unwrap();
    assert_eq!(moved.lat, Some(stop.0 + north(40.0)));
    // Moving again: positions pass through untouched.
    let f = h.check(fix(6, stop.0 + north(45.0), stop.1, 15.0)).unwrap();
    assert_eq!(
        (f.lat, f.course_deg),
        (Some(stop.0 + north(45.0)), Some(90.0))
    );
    assert_eq!(h.stats().collapsed, 3);
    // Unknown speed is not "stopped".
    let f = h
        .check(Fix {
            speed_kmh: None,
            ..fix(7, stop.0 + north(46.0), stop.1, 0.0)
        })
        .unwrap();
    assert_eq!(f.lat, Some(stop.0 + north(46.0)));
    // Rule off.
    let mut off = Hygiene::new(HygieneConfig {
        stop_speed_kmh: None,
        ..HygieneConfig::default()
    });
    assert!(off.check(fix(0, stop.0, stop.1, 0.0)).is_ok());
    assert_eq!(
        off.check(fix(1, stop.0 + north(3.0), stop.1, 0.0))
            .unwrap()
            .lat,
        Some(stop.0 + north(3.0))
    );
}

#[test]
fn distance_is_haversine() {
    let d = distance_m(48.1, 11.5, 48.1 + north(1000.0), 11.5);
    assert!((d - 1000.0).abs() < 0.1, "{d}");
    assert_eq!(distance_m(10.0, 20.0, 10.0, 20.0), 0.0);
    let half = distance_m(0.0, 0.0, 0.0, 180.0);
    assert!((half - std::f64::consts::PI * EARTH_RADIUS_M).abs() < 1e-6);
}
