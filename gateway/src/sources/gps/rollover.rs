//! GPS week rollover. Sans-IO.
//!
//! GPS broadcasts the week number in 10 bits, so it wraps every 1024 weeks (19.6 years: 1999-08-22,
//! 2019-04-07, 2038-11-21). A receiver resolves the ambiguity with a pivot date built into its
//! firmware; once the real date passes pivot + 1024 weeks, it reports dates exactly 1024
//! weeks in the past (the `gp-320fw` capture says 1999-08-22 on 2019-04-07).
//!
//! Invariant: [`correct`] moves a time forward by whole multiples of [`ROLLOVER_MS`] until it
//! is at or after the configured floor (the earliest date the unit can really see, e.g. its
//! install date), and never moves a time at or after the floor. The time of day and day of
//! week are unchanged, as they are by the rollover itself.

use waymark_wire::Timestamp;

/// 1024 weeks, ms.
pub const ROLLOVER_MS: i64 = 1024 * 7 * 86_400_000;

/// `utc_ms` moved forward by whole rollover periods until it is at or after `floor_ms`.
/// Times before 1980-01-06 (the GPS epoch) are not GPS dates at all and are left alone, as
/// are times already at or after the floor.
pub fn correct(utc_ms: Timestamp, floor_ms: Timestamp) -> Timestamp {
    /// 1980-01-06T00:00:00Z.
    const GPS_EPOCH_MS: i64 = 315_964_800_000;
    if utc_ms >= floor_ms || utc_ms < GPS_EPOCH_MS {
        return utc_ms;
    }
    let periods = (floor_ms - utc_ms + ROLLOVER_MS - 1) / ROLLOVER_MS;
    utc_ms.saturating_add(periods.saturating_mul(ROLLOVER_MS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::gps::nmea::{Date, TimeOfDay};

    fn ms(y: u16, m: u8, d: u8) -> i64 {
        Date {
            year: y,
            month: m,
            day: d,
        }
        .utc_ms(TimeOfDay(4_027_000))
        .unwrap()
    }

    #[test]
    fn the_2019_rollover_of_the_gp320fw_capture_is_undone() {
        // The capture's receiver says 1999-08-22 00:04:27 on 2019-04-07.
        assert_eq!(correct(ms(1999, 8, 22), ms(2019, 1, 1)), ms(2019, 4, 7));
    }

    #[test]
    fn two_periods_back_and_the_floor_itself() {
        let floor = ms(2025, 1, 1);
        assert_eq!(correct(ms(1999, 8, 22), floor), ms(2038, 11, 21));
        assert_eq!(correct(floor, floor), floor);
        assert_eq!(correct(floor - 1, floor), floor - 1 + ROLLOVER_MS);
        assert_eq!(correct(ms(2026, 11, 23), floor), ms(2026, 11, 23));
        // Not a GPS date (a 1970 cold-start default): left for the clock to ignore.
        assert_eq!(correct(1_000, floor), 1_000);
    }

    proptest::proptest! {
        #[test]
        fn result_is_at_or_after_the_floor_and_within_one_period(
            t in 315_964_800_000i64..4_000_000_000_000, floor in 315_964_800_000i64..4_000_000_000_000
        ) {
            let c = correct(t, floor);
            proptest::prop_assert_eq!((c - t) % ROLLOVER_MS, 0);
            if t >= floor {
                proptest::prop_assert_eq!(c, t);
            } else {
                proptest::prop_assert!(c >= floor && c - floor < ROLLOVER_MS);
            }
        }
    }
}
