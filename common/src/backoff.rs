//! Reconnect backoff (sans-IO): exponential, with full jitter, between a floor and a ceiling.
//!
//! rumqttc reconnects as soon as `poll()` is called again after an error; this decides how
//! long to wait first. The n-th consecutive failure waits a uniformly random time in
//! `[min, min(max, min * 2^n)]` ("full jitter" above a floor, so a fleet that lost its broker
//! at the same moment does not come back in lockstep, and no attempt is closer than `min`).
//! A connection that stayed up for at least `stable_after` resets the sequence; one that
//! dropped right after its CONNACK (broker rejecting us, flapping link) does not.

use std::time::{Duration, Instant};

use rand::RngCore;

/// Longest exponent used: `min * 2^MAX_EXPONENT` is far beyond any sane `max` already.
const MAX_EXPONENT: u32 = 30;

/// Reconnect delay state.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    stable_after: Duration,
    failures: u32,
    connected_at: Option<Instant>,
}

impl Backoff {
    /// Delays between `min` and `max` (`max` below `min` is taken as `min`); a connection up
    /// for `stable_after` resets the sequence.
    pub fn new(min: Duration, max: Duration, stable_after: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            stable_after,
            failures: 0,
            connected_at: None,
        }
    }

    /// A connection was established (CONNACK) at `now`.
    pub fn connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// Consecutive failures counted so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Forgets past failures.
    pub fn reset(&mut self) {
        self.failures = 0;
        self.connected_at = None;
    }

    /// A connection attempt failed or a connection dropped at `now`: how long to wait before
    /// the next attempt.
    pub fn next_delay<R: RngCore + ?Sized>(&mut self, now: Instant, rng: &mut R) -> Duration {
        if let Some(up_since) = self.connected_at.take()
            && now.saturating_duration_since(up_since) >= self.stable_after
        {
            self.failures = 0;
        }
        let delay = delay_after(self.min, self.max, self.failures, rng);
        self.failures = self.failures.saturating_add(1);
        delay
    }
}

/// The delay after `failures` earlier consecutive failures (0 for the first retry), without
/// state: uniformly random in `[min, min(max, min * 2^failures)]` (`max` below `min` is taken
/// as `min`). For callers that persist the failure count themselves (the bridge's outboxes).
pub fn delay_after<R: RngCore + ?Sized>(
    min: Duration,
    max: Duration,
    failures: u32,
    rng: &mut R,
) -> Duration {
    let max = max.max(min);
    let ceiling = min
        .checked_mul(1u32 << failures.min(MAX_EXPONENT))
        .map_or(max, |d| d.min(max));
    let min_ms = duration_ms(min);
    let span = duration_ms(ceiling).saturating_sub(min_ms);
    let jitter = match span.checked_add(1) {
        Some(modulus) => rng.next_u64() % modulus,
        None => rng.next_u64(),
    };
    Duration::from_millis(min_ms.saturating_add(jitter))
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Always returns the same word: `u64::MAX` hits each ceiling, 0 the floor.
    struct Fixed(u64);
    impl RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            self.0 as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0
        }
        fn fill_bytes(&mut self, dst: &mut [u8]) {
            dst.fill(self.0 as u8);
        }
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn backoff() -> Backoff {
        Backoff::new(ms(500), ms(60_000), Duration::from_secs(60))
    }

    #[test]
    fn ceilings_double_up_to_max() {
        let now = Instant::now();
        let mut b = backoff();
        // An RNG word equal to the span lands exactly on the ceiling.
        let expected = [
            500, 1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000,
        ];
        for (n, want) in expected.iter().enumerate() {
            let span = want - 500;
            let got = b.next_delay(now, &mut Fixed(span));
            assert_eq!(got, ms(*want), "failure {n}");
        }
        assert_eq!(b.failures(), 10);
    }

    #[test]
    fn floor_is_min() {
        let now = Instant::now();
        let mut b = backoff();
        for _ in 0..50 {
            assert_eq!(b.next_delay(now, &mut Fixed(0)), ms(500));
        }
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = backoff();
        let mut seen_below_ceiling = false;
        for n in 0..40u32 {
            let ceiling = ms(500u64.saturating_mul(1 << n.min(20)).min(60_000));
            let d = b.next_delay(now, &mut rng);
            assert!(
                d >= ms(500) && d <= ceiling,
                "failure {n}: {d:?} not in [500ms, {ceiling:?}]"
            );
            seen_below_ceiling |= n > 3 && d < ceiling;
        }
        assert!(seen_below_ceiling, "delays are jittered");
    }

    #[test]
    fn deterministic_with_a_seeded_rng() {
        let now = Instant::now();
        let run = || {
            let mut rng = StdRng::seed_from_u64(42);
            let mut b = backoff();
            (0..8)
                .map(|_| b.next_delay(now, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn stable_connection_resets_short_one_does_not() {
        let t0 = Instant::now();
        let mut b = backoff();
        for _ in 0..5 {
            b.next_delay(t0, &mut Fixed(0));
        }
        assert_eq!(b.failures(), 5);
        // Up for 10 s only: the sequence continues.
        b.connected(t0);
        b.next_delay(t0 + Duration::from_secs(10), &mut Fixed(0));
        assert_eq!(b.failures(), 6);
        // Up for 60 s: the next failure starts from the floor again.
        b.connected(t0 + Duration::from_secs(20));
        let d = b.next_delay(t0 + Duration::from_secs(80), &mut Fixed(u64::MAX));
        assert_eq!(b.failures(), 1);
        assert_eq!(d, ms(500), "first ceiling is min");
        b.reset();
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn stateless_delay_matches_the_sequence() {
        let now = Instant::now();
        let mut b = backoff();
        for n in 0..12 {
            let stateful = b.next_delay(now, &mut Fixed(u64::MAX));
            let stateless = delay_after(ms(500), ms(60_000), n, &mut Fixed(u64::MAX));
            assert_eq!(stateful, stateless, "failure {n}");
        }
        assert_eq!(
            delay_after(ms(500), ms(10), 3, &mut Fixed(u64::MAX)),
            ms(500)
        );
    }

    #[test]
    fn degenerate_settings_do_not_panic() {
        let now = Instant::now();
        let mut b = Backoff::new(ms(1000), ms(10), Duration::ZERO);
        assert_eq!(b.next_delay(now, &mut Fixed(u64::MAX)), ms(1000));
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO, Duration::ZERO);
        assert_eq!(b.next_delay(now, &mut Fixed(u64::MAX)), Duration::ZERO);
        let mut b = Backoff::new(ms(u64::MAX / 2), Duration::MAX, Duration::ZERO);
        for _ in 0..64 {
            b.next_delay(now, &mut Fixed(u64::MAX));
        }
    }
}
