//! Per-connection line rate limit: a token bucket (sans-IO).
//!
//! Implemented as GCRA, the virtual-scheduling form of a token bucket: a line costs
//! `1 s / rate`, the bucket holds one second's worth of lines (`burst = rate`), and instead of
//! refusing a line the limiter says *when* it may go. The connection then pauses reading until
//! that instant, so a fast producer is slowed down by TCP/Unix-socket flow control and nothing
//! it sent is dropped.
//!
//! Invariant: over any window of length `w`, at most `rate * w + rate` lines are admitted.

use std::time::{Duration, Instant};

/// Token bucket with `burst = rate` (one second's worth of lines).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// Cost of one line (`1 s / rate`); `None` = no limit.
    interval: Option<Duration>,
    /// How far ahead of `now` the virtual schedule may run: `(burst - 1) * interval`.
    tolerance: Duration,
    /// Theoretical arrival time of the next line (GCRA's TAT); `None` before the first line.
    tat: Option<Instant>,
}

impl RateLimiter {
    /// A limiter admitting `lines_per_s` lines per second with a burst of as many.
    /// `0` means no limit.
    pub fn new(lines_per_s: u32) -> Self {
        if lines_per_s == 0 {
            return Self {
                interval: None,
                tolerance: Duration::ZERO,
                tat: None,
            };
        }
        let interval = Duration::from_secs(1) / lines_per_s;
        Self {
            interval: Some(interval),
            tolerance: interval * (lines_per_s - 1),
            tat: None,
        }
    }

    /// Takes one line at `now`: `Ok(())` if it may be processed now, `Err(at)` if not before
    /// `at` (nothing is taken then; ask again at or after `at`).
    pub fn check(&mut self, now: Instant) -> Result<(), Instant> {
        let Some(interval) = self.interval else {
            return Ok(());
        };
        let tat = self.tat.map_or(now, |t| t.max(now));
        let earliest = tat.checked_sub(self.tolerance).unwrap_or(now);
        if earliest > now {
            return Err(earliest);
        }
        self.tat = Some(tat + interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted_until_refused(l: &mut RateLimiter, now: Instant) -> (u32, Instant) {
        let mut n = 0;
        loop {
            match l.check(now) {
                Ok(()) => n += 1,
                Err(at) => return (n, at),
            }
        }
    }

    #[test]
    fn burst_of_one_second_then_steady_rate() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(100);
        let (n, at) = admitted_until_refused(&mut l, t0);
        assert_eq!(n, 100);
        assert_eq!(at, t0 + Duration::from_millis(10));
        // Refusal takes nothing: asking again at the same instant gives the same answer.
        assert_eq!(l.check(t0), Err(at));
        assert_eq!(l.check(at - Duration::from_nanos(1)), Err(at));
        assert_eq!(l.check(at), Ok(()));
        assert!(l.check(at).is_err());
        // After 50 ms, 5 more lines.
        let (n, _) = admitted_until_refused(&mut l, at + Duration::from_millis(50));
        assert_eq!(n, 5);
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(10);
        assert_eq!(admitted_until_refused(&mut l, t0).0, 10);
        let (n, _) = admitted_until_refused(&mut l, t0 + Duration::from_secs(3600));
        assert_eq!(n, 10);
    }

    #[test]
    fn never_more_than_rate_per_window_plus_burst() {
        // Drive the limiter as the connection does: when refused, wait until the given instant.
        let t0 = Instant::now();
        let rate = 1000;
        let mut l = RateLimiter::new(rate);
        let mut now = t0;
        let mut admitted = 0u64;
        while now < t0 + Duration::from_secs(10) {
            match l.check(now) {
                Ok(()) => admitted += 1,
                Err(at) => {
                    assert!(at > now);
                    now = at;
                }
            }
        }
        let elapsed_s = (now - t0).as_secs_f64();
        assert!(
            admitted as f64 <= f64::from(rate) * elapsed_s + f64::from(rate) + 1.0,
            "{admitted}"
        );
        assert!(admitted as f64 >= f64::from(rate) * elapsed_s, "{admitted}");
    }

    #[test]
    fn rate_of_one_and_zero() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(1);
        assert_eq!(l.check(t0), Ok(()));
        assert_eq!(l.check(t0), Err(t0 + Duration::from_secs(1)));
        let mut unlimited = RateLimiter::new(0);
        for _ in 0..10_000 {
            assert_eq!(unlimited.check(t0), Ok(()));
        }
    }

    #[test]
    fn odd_rates_do_not_exceed_the_limit() {
        // 3 lines/s: interval rounds down to 333_333_333 ns; burst 3.
        let t0 = Instant::now();
        let mut l = RateLimiter::new(3);
        assert_eq!(admitted_until_refused(&mut l, t0).0, 3);
        let (n, _) = admitted_until_refused(&mut l, t0 + Duration::from_secs(1));
        assert_eq!(n, 3);
    }
}
