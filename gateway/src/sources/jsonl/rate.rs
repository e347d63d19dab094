//! Per-connection line rate limit (sans-IO): one [`TokenBucket`] per connection, a line
//! costs one token, the burst is one second's worth of lines.
//!
//! Instead of refusing a line the limiter says *when* it may go. The connection then pauses
//! reading until that instant, so a fast producer is slowed down by TCP/Unix-socket flow
//! control and nothing it sent is dropped.
//!
//! Invariant: over any window of length `w`, at most `rate * w + rate` lines are admitted.

use std::time::Instant;

use crate::rate::TokenBucket;

/// The line limit of one connection.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// Lines per second; 0 = no limit.
    lines_per_s: u32,
    /// Created at the first line, full.
    bucket: Option<TokenBucket>,
}

impl RateLimiter {
    /// A limiter admitting `lines_per_s` lines per second with a burst of as many.
    /// `0` means no limit.
    pub fn new(lines_per_s: u32) -> Self {
        Self {
            lines_per_s,
            bucket: None,
        }
    }

    /// Takes one line at `now`: `Ok(())` if it may be processed now, `Err(at)` if not before
    /// `at` (nothing is taken then; ask again at or after `at`).
    pub fn check(&mut self, now: Instant) -> Result<(), Instant> {
        if self.lines_per_s == 0 {
            return Ok(());
        }
        let rate = f64::from(self.lines_per_s);
        self.bucket
            .get_or_insert_with(|| TokenBucket::new(rate, now))
            .try_take(now, 1.0)
            .map_err(|wait| now + wait)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        let ten_ms = Duration::from_millis(10);
        assert!(
            at.duration_since(t0).abs_diff(ten_ms) < Duration::from_micros(1),
            "{at:?}"
        );
        // Refusal takes nothing: asking again at the same instant gives the same answer, and
        // just before `at` is still too early.
        assert_eq!(l.check(t0), Err(at));
        assert!(l.check(at - Duration::from_micros(100)).is_err());
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
