//! Token bucket (sans-IO), the one rate limiter of the gateway: the uplink's drain-rate cap
//! (messages and bytes per second) and the `jsonl` source's per-connection line rate.
//!
//! The bucket holds at most one second's worth of tokens (the burst) and refills
//! continuously. A cost may be taken when the bucket holds it, or, for a cost larger than the
//! whole bucket, when the bucket is full; the cost is then taken even if that leaves the
//! bucket negative, so the long-run rate is exact and an oversized item is never stuck.
//! Callers are told how long to wait instead of being refused outright, so they pause their
//! input (flow control) rather than drop anything.

use std::time::{Duration, Instant};

/// Shortest wait ever returned, so a caller that sleeps and retries always makes progress.
pub const MIN_WAIT: Duration = Duration::from_millis(1);

/// A token bucket: `rate` tokens per second, capacity one second's worth, starts full.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens per second, also the capacity.
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` tokens per second (`rate` > 0).
    pub fn new(rate: f64, now: Instant) -> Self {
        Self {
            rate,
            tokens: rate,
            last: now,
        }
    }

    /// Adds the tokens earned since the last call (up to the capacity).
    pub fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = self.last.max(now);
    }

    /// How long until `cost` may be taken (zero when it may be taken now). A cost above the
    /// capacity only needs a full bucket.
    pub fn wait_for(&self, cost: f64) -> Duration {
        let needed = cost.min(self.rate);
        if self.tokens >= needed {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((needed - self.tokens) / self.rate).max(MIN_WAIT)
    }

    /// Takes `cost` tokens, possibly going into debt (see the module docs).
    pub fn take(&mut self, cost: f64) {
        self.tokens -= cost;
    }

    /// Refills, then takes `cost` if it may be taken now (`Ok`), otherwise takes nothing and
    /// says how long to wait before asking again.
    ///
    /// # Errors
    /// `Err(wait)` when the bucket does not hold `cost` yet.
    pub fn try_take(&mut self, now: Instant, cost: f64) -> Result<(), Duration> {
        self.refill(now);
        let wait = self.wait_for(cost);
        if wait.is_zero() {
            self.take(cost);
            Ok(())
        } else {
            Err(wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_and_refusal_takes_nothing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, t0);
        for _ in 0..100 {
            assert_eq!(b.try_take(t0, 1.0), Ok(()));
        }
        let wait = b.try_take(t0, 1.0).unwrap_err();
        assert!((Duration::from_micros(9_900)..=Duration::from_micros(10_100)).contains(&wait));
        assert!(b.try_take(t0, 1.0).is_err(), "a refusal took nothing");
        assert_eq!(b.try_take(t0 + wait, 1.0), Ok(()));
    }

    #[test]
    fn idle_time_refills_only_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, t0);
        let later = t0 + Duration::from_secs(3600);
        let n = (0..100)
            .take_while(|_| b.try_take(later, 1.0).is_ok())
            .count();
        assert_eq!(n, 10);
    }
}
