//! Drain-rate cap (sans-IO): [`TokenBucket`]s for messages and payload bytes per second.
//!
//! A cellular contract may be metered; after a long outage the backlog must not saturate
//! the link. A message goes when every bucket allows its cost (see [`crate::rate`] for the
//! burst and the debt of oversized messages). A limit of 0 means unlimited.

use std::time::{Duration, Instant};

use crate::rate::TokenBucket;

/// The drain-rate limiter of one uplink.
#[derive(Debug, Clone)]
pub struct RateLimit {
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

impl RateLimit {
    /// Caps of `max_messages_per_s` messages and `max_bytes_per_s` payload bytes per second;
    /// 0 disables a cap. Buckets start full.
    pub fn new(max_messages_per_s: u32, max_bytes_per_s: u64, now: Instant) -> Self {
        let bucket = |rate: f64| (rate > 0.0).then(|| TokenBucket::new(rate, now));
        Self {
            messages: bucket(f64::from(max_messages_per_s)),
            bytes: bucket(max_bytes_per_s as f64),
        }
    }

    /// Whether no cap is set.
    pub fn is_unlimited(&self) -> bool {
        self.messages.is_none() && self.bytes.is_none()
    }

    /// Takes one message of `bytes` payload bytes if the caps allow it now (`Ok`), otherwise
    /// takes nothing and says how long to wait before asking again (`Err`).
    ///
    /// # Errors
    /// `Err(wait)` when a cap is exhausted.
    pub fn try_acquire(&mut self, now: Instant, bytes: usize) -> Result<(), Duration> {
        let cost_bytes = bytes as f64;
        let mut wait = Duration::ZERO;
        if let Some(b) = &mut self.messages {
            b.refill(now);
            wait = wait.max(b.wait_for(1.0));
        }
        if let Some(b) = &mut self.bytes {
            b.refill(now);
            wait = wait.max(b.wait_for(cost_bytes));
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(b) = &mut self.messages {
            b.take(1.0);
        }
        if let Some(b) = &mut self.bytes {
            b.take(cost_bytes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::MIN_WAIT;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Sends `n` messages of `bytes` as fast as the limiter allows, sleeping exactly the
    /// returned waits; returns the virtual time the last one went.
    fn drain(rate: &mut RateLimit, t0: Instant, n: usize, bytes: usize) -> Duration {
        let mut now = t0;
        for _ in 0..n {
            loop {
                match rate.try_acquire(now, bytes) {
                    Ok(()) => break,
                    Err(wait) => {
                        assert!(wait >= MIN_WAIT);
                        now += wait;
                    }
                }
            }
        }
        now - t0
    }

    #[test]
    fn unlimited_never_waits() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(0, 0, t0);
        assert!(r.is_unlimited());
        assert_eq!(drain(&mut r, t0, 100_000, 1 << 20), Duration::ZERO);
    }

    #[test]
    fn message_cap_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(5, 0, t0);
        assert!(!r.is_unlimited());
        for _ in 0..5 {
            assert_eq!(r.try_acquire(t0, 100), Ok(()));
        }
        let wait = r.try_acquire(t0, 100).unwrap_err();
        assert!((ms(199)..=ms(201)).contains(&wait), "{wait:?}");
        // A refused attempt takes nothing.
        assert_eq!(r.try_acquire(t0 + ms(200), 100), Ok(()));
        assert!(r.try_acquire(t0 + ms(200), 100).is_err());
    }

    #[test]
    fn message_cap_long_run_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(5, 0, t0);
        // 5 in the burst, then one every 200 ms: the 25th goes at 4 s.
        let last = drain(&mut r, t0, 25, 10);
        assert!((ms(3990)..=ms(4010)).contains(&last), "{last:?}");
    }

    #[test]
    fn byte_cap_limits_bytes() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(0, 1000, t0);
        // 1000 B burst, then 1000 B/s: 10 messages of 500 B take 4 s.
        let last = drain(&mut r, t0, 10, 500);
        assert!((ms(3990)..=ms(4010)).contains(&last), "{last:?}");
    }

    #[test]
    fn oversized_message_waits_for_a_full_bucket_and_goes_into_debt() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(0, 1000, t0);
        assert_eq!(
            r.try_acquire(t0, 3000),
            Ok(()),
            "full bucket lets one oversized message go"
        );
        // Now 2000 B in debt: the next 1000 B message needs 3 s.
        let wait = r.try_acquire(t0, 1000).unwrap_err();
        assert!((ms(2990)..=ms(3010)).contains(&wait), "{wait:?}");
        assert_eq!(r.try_acquire(t0 + wait, 1000), Ok(()));
    }

    #[test]
    fn both_caps_wait_for_the_slower() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(100, 1000, t0);
        assert_eq!(r.try_acquire(t0, 1000), Ok(()));
        let wait = r.try_acquire(t0, 500).unwrap_err();
        assert!(
            (ms(499)..=ms(501)).contains(&wait),
            "bytes are the binding cap: {wait:?}"
        );
    }

    #[test]
    fn idle_time_does_not_bank_beyond_one_second() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(2, 0, t0);
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(r.try_acquire(later, 0), Ok(()));
        assert_eq!(r.try_acquire(later, 0), Ok(()));
        assert!(r.try_acquire(later, 0).is_err());
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut r = RateLimit::new(1, 0, t0);
        assert_eq!(r.try_acquire(t0, 0), Ok(()));
        let earlier = t0 - Duration::from_secs(5);
        assert!(r.try_acquire(earlier, 0).is_err());
        assert_eq!(r.try_acquire(t0 + Duration::from_secs(1), 0), Ok(()));
    }
}
