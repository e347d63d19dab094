//! Drain-rate cap (sans-IO): token buckets for messages and payload bytes per second.
//!
//! A cellular contract may be metered; after a long outage the backlog must not saturate
//! the link. Each bucket holds at most one second's worth of tokens (the burst) and refills
//! continuously. A message may go when every bucket holds its cost, or, for a message larger
//! than the whole bucket, when the bucket is full; its cost is then taken even if that leaves
//! the bucket negative, so the long-run rate is exact and an oversized message is never
//! stuck. A limit of 0 means unlimited.

use std::time::{Duration, Instant};

/// Shortest wait ever returned, so a caller that sleeps and retries always makes progress.
const MIN_WAIT: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
struct Bucket {
    /// Tokens per second, also the capacity.
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        Self {
            rate,
            tokens: rate,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = self.last.max(now);
    }

    /// How long until `cost` may be taken (zero when it may be taken now).
    fn wait_for(&self, cost: f64) -> Duration {
        let needed = cost.min(self.rate);
        if self.tokens >= needed {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((needed - self.tokens) / self.rate).max(MIN_WAIT)
    }
}

/// The drain-rate limiter of one uplink.
#[derive(Debug, Clone)]
pub struct RateLimit {
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
}

impl RateLimit {
    /// Caps of `max_messages_per_s` messages and `max_bytes_per_s` payload bytes per second;
    /// 0 disables a cap. Buckets start full.
    pub fn new(max_messages_per_s: u32, max_bytes_per_s: u64, now: Instant) -> Self {
        let bucket = |rate: f64| (rate > 0.0).then(|| Bucket::new(rate, now));
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
            b.tokens -= 1.0;
        }
        if let Some(b) = &mut self.bytes {
            b.tokens -= cost_bytes;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
