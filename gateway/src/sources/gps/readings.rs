//! Accepted fixes → [`Reading`]s with COVESA VSS signal names.
//!
//! | signal | unit | from |
//! |---|---|---|
//! | [`LATITUDE`] `Vehicle.CurrentLocation.Latitude` | `deg` | RMC/GGA/GNS/GLL |
//! | [`LONGITUDE`] `Vehicle.CurrentLocation.Longitude` | `deg` | RMC/GGA/GNS/GLL |
//! | [`ALTITUDE`] `Vehicle.CurrentLocation.Altitude` | `m` | GGA/GNS, above mean sea level |
//! | [`HEADING`] `Vehicle.CurrentLocation.Heading` | `deg` | course over ground (RMC, VTG) |
//! | [`SPEED`] `Vehicle.Speed` | `km/h` | speed over ground (RMC, VTG) |
//! | [`HORIZONTAL_ACCURACY`] `Vehicle.CurrentLocation.HorizontalAccuracy` | `m` | HDOP × UERE |
//! | [`FIX_TYPE`] `Vehicle.CurrentLocation.GNSSReceiver.FixType` | text `NONE`/`TWO_D`/`THREE_D` | GSA |
//! | [`SATELLITES`] `Vehicle.CurrentLocation.NumberOfSatellites` (Waymark, not VSS) | none | GGA/GNS/GSA |
//!
//! The first six and the fix type are VSS 4 signals. HorizontalAccuracy is an estimate:
//! NMEA gives no error in metres (only GST does, which few receivers send), so it is HDOP
//! times a user equivalent range error ([`DEFAULT_UERE_M`]). A signal is left out when the
//! epoch did not report it (and Heading when hygiene dropped the course at a stop).
//! `Vehicle.Speed` from GNSS is the speed over ground; a CAN source may report the
//! wheel-based one under the same name with its own source name.

use waymark_wire::{Reading, Timestamp, Value};

use super::epoch::Fix;
use super::nmea::FixType;

/// VSS latitude, degrees.
pub const LATITUDE: &str = "Vehicle.CurrentLocation.Latitude";
/// VSS longitude, degrees.
pub const LONGITUDE: &str = "Vehicle.CurrentLocation.Longitude";
/// VSS altitude, metres above mean sea level.
pub const ALTITUDE: &str = "Vehicle.CurrentLocation.Altitude";
/// VSS heading, degrees from true north.
pub const HEADING: &str = "Vehicle.CurrentLocation.Heading";
/// VSS vehicle speed, km/h.
pub const SPEED: &str = "Vehicle.Speed";
/// VSS horizontal accuracy, metres.
pub const HORIZONTAL_ACCURACY: &str = "Vehicle.CurrentLocation.HorizontalAccuracy";
/// VSS GNSS fix type (`NONE`, `TWO_D`, `THREE_D`).
pub const FIX_TYPE: &str = "Vehicle.CurrentLocation.GNSSReceiver.FixType";
/// Satellites used in the fix. Waymark's own name; VSS has none.
pub const SATELLITES: &str = "Vehicle.CurrentLocation.NumberOfSatellites";

/// User equivalent range error of a consumer single-frequency receiver, metres: the factor
/// that turns HDOP into [`HORIZONTAL_ACCURACY`].
pub const DEFAULT_UERE_M: f64 = 5.0;

/// The readings of one accepted fix, stamped `time` (the fix's UTC time once the clock is
/// known; the caller decides, DESIGN §4) and `source`.
pub fn fix_readings(fix: &Fix, time: Timestamp, source: &str, uere_m: f64) -> Vec<Reading> {
    let mut out = Vec::with_capacity(8);
    let mut num = |signal: &str, v: Option<f64>, unit: &str| {
        if let Some(v) = v {
            out.push(Reading {
                signal: signal.to_string(),
                value: Value::Num(v),
                unit: unit.to_string(),
                time,
                source: source.to_string(),
            });
        }
    };
    num(LATITUDE, fix.lat, "deg");
    num(LONGITUDE, fix.lon, "deg");
    num(ALTITUDE, fix.altitude_m, "m");
    num(HEADING, fix.course_deg, "deg");
    num(SPEED, fix.speed_kmh, "km/h");
    num(HORIZONTAL_ACCURACY, fix.hdop.map(|h| h * uere_m), "m");
    num(SATELLITES, fix.satellites.map(f64::from), "");
    if let Some(t) = fix.fix_type {
        let text = match t {
            FixType::None => "NONE",
            FixType::TwoD => "TWO_D",
            FixType::ThreeD => "THREE_D",
        };
        out.push(Reading {
            signal: FIX_TYPE.to_string(),
            value: Value::Text(text.to_string()),
            unit: String::new(),
            time,
            source: source.to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_units_and_accuracy() {
        let fix = Fix {
            lat: Some(48.1),
            lon: Some(11.5),
            altitude_m: Some(460.0),
            course_deg: Some(90.0),
            speed_kmh: Some(50.0),
            hdop: Some(1.4),
            satellites: Some(7),
            fix_type: Some(FixType::ThreeD),
            ..Fix::default()
        };
        let r = fix_readings(&fix, 1_795_420_370_000, "gps", DEFAULT_UERE_M);
        let got: Vec<(&str, Option<f64>, &str)> = r
            .iter()
            .map(|r| (r.signal.as_str(), r.value.as_f64(), r.unit.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (LATITUDE, Some(48.1), "deg"),
                (LONGITUDE, Some(11.5), "deg"),
                (ALTITUDE, Some(460.0), "m"),
                (HEADING, Some(90.0), "deg"),
                (SPEED, Some(50.0), "km/h"),
                (HORIZONTAL_ACCURACY, Some(1.4 * 5.0), "m"),
                (SATELLITES, Some(7.0), ""),
                (FIX_TYPE, None, ""),
            ]
        );
        assert_eq!(r[7].value, Value::Text("THREE_D".into()));
        assert!(
            r.iter()
                .all(|r| r.time == 1_795_420_370_000 && r.source == "gps")
        );
        // Unreported signals are left out, not zero.
        let bare = Fix {
            lat: Some(1.0),
            lon: Some(2.0),
            ..Fix::default()
        };
        assert_eq!(fix_readings(&bare, 0, "gps", DEFAULT_UERE_M).len(), 2);
    }
}
