//! GNSS-distance fallback for the odometer: a sans-IO accumulator of travelled distance from
//! position fixes, for vehicles whose ECUs do not serve PID 0xA6 (most vans before 2019).
//! `docs/obd.md` ("Odometer fallback") describes how it is wired.
//!
//! Invariants:
//! - Stationary jitter does not add up: distance is counted from an anchor fix, and only once
//!   a fix is at least `min_step_m` from it (then it becomes the new anchor).
//! - A jump faster than `max_speed_mps` from the anchor (a multipath outlier, a fix after a
//!   long tunnel) is not distance: the anchor moves there and nothing is added.
//! - Fixes must come in time order; an older or equal time is ignored.
//! - The total never decreases.

/// Mean Earth radius (IUGG), metres.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Accumulates the distance between position fixes.
#[derive(Debug, Clone)]
pub struct DistanceAccumulator {
    min_step_m: f64,
    max_speed_mps: f64,
    total_m: f64,
    anchor: Option<(i64, f64, f64)>,
}

impl DistanceAccumulator {
    /// Starts at `start_km` (the last odometer known, or 0), counting steps of at least
    /// `min_step_m` metres and rejecting movement faster than `max_speed_mps`.
    pub fn new(start_km: f64, min_step_m: f64, max_speed_mps: f64) -> Self {
        Self {
            min_step_m,
            max_speed_mps,
            total_m: start_km.max(0.0) * 1000.0,
            anchor: None,
        }
    }

    /// The distance so far, km.
    pub fn total_km(&self) -> f64 {
        self.total_m / 1000.0
    }

    /// Feeds a fix at `time_ms` (UTC ms); returns the new total in km when it grew.
    pub fn push(&mut self, time_ms: i64, lat: f64, lon: f64) -> Option<f64> {
        let valid = lat.is_finite()
            && lon.is_finite()
            && (-90.0..=90.0).contains(&lat)
            && (-180.0..=180.0).contains(&lon);
        if !valid {
            return None;
        }
        let Some((t0, lat0, lon0)) = self.anchor else {
            self.anchor = Some((time_ms, lat, lon));
            return None;
        };
        if time_ms <= t0 {
            return None;
        }
        let d = haversine_m(lat0, lon0, lat, lon);
        if d < self.min_step_m {
            return None;
        }
        self.anchor = Some((time_ms, lat, lon));
        let secs = (time_ms - t0) as f64 / 1000.0;
        if d / secs > self.max_speed_mps {
            return None;
        }
        self.total_m += d;
        Some(self.total_km())
    }
}

/// Great-circle distance in metres.
pub fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_degree_of_latitude() {
        let d = haversine_m(52.0, 13.0, 53.0, 13.0);
        assert!((d - 111_195.0).abs() < 10.0, "{d}");
        assert_eq!(haversine_m(52.0, 13.0, 52.0, 13.0), 0.0);
    }

    #[test]
    fn drive_accumulates_jitter_does_not() {
        let mut acc = DistanceAccumulator::new(100.0, 10.0, 70.0);
        assert_eq!(acc.push(0, 52.0, 13.0), None, "first fix is the anchor");
        // Parked: 2 m of jitter for a minute adds nothing.
        for s in 1..60 {
            let jitter = if s % 2 == 0 { 0.000_018 } else { 0.0 };
            assert_eq!(acc.push(s * 1000, 52.0 + jitter, 13.0), None);
        }
        // Drive north at ~20 m/s for 100 s: 0.00018 deg of latitude ~ 20 m per second.
        let mut last = None;
        for s in 0..100 {
            let lat = 52.0 + 0.000_18 * f64::from(s + 1);
            last = acc.push(60_000 + i64::from(s) * 1000, lat, 13.0).or(last);
        }
        let km = last.expect("distance grew");
        assert!((km - 102.0016).abs() < 0.01, "{km}");
        assert_eq!(acc.total_km(), km);
    }

    #[test]
    fn outliers_old_fixes_and_bad_values_are_not_distance() {
        let mut acc = DistanceAccumulator::new(0.0, 5.0, 70.0);
        acc.push(0, 52.0, 13.0);
        // 11 km in one second: an outlier. The anchor moves, nothing is added.
        assert_eq!(acc.push(1000, 52.1, 13.0), None);
        assert_eq!(acc.total_km(), 0.0);
        // From there, 100 m in 10 s counts.
        let km = acc.push(11_000, 52.1 + 0.0009, 13.0).expect("counted");
        assert!((km - 0.1).abs() < 0.001, "{km}");
        assert_eq!(acc.push(11_000, 53.0, 13.0), None, "same time");
        assert_eq!(acc.push(5_000, 53.0, 13.0), None, "older");
        assert_eq!(acc.push(20_000, f64::NAN, 13.0), None);
        assert_eq!(acc.push(20_000, 91.0, 13.0), None);
        assert_eq!(acc.push(20_000, 52.0, 181.0), None);
        assert_eq!(acc.total_km(), km);
        assert_eq!(DistanceAccumulator::new(-5.0, 5.0, 70.0).total_km(), 0.0);
    }
}
