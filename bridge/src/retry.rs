//! Delivery outcome → what happens to the outbox row (sans-IO; time is an argument).
//!
//! # Invariants
//! - Only a 2xx answer deletes a row as delivered.
//! - A row is retried only for failures a later attempt can fix: 5xx, 408, 429, a timeout, a
//!   connection or other transport error. Every other answer (3xx, since redirects are not
//!   followed; 4xx other than 408 and 429; 1xx) is permanent and dead-letters the row at once.
//! - A retryable failure on the `max_attempts`-th attempt dead-letters the row: a row is
//!   never attempted more than `max_attempts` times before it is in the DLQ.
//! - The next attempt is at `now + delay`, where delay is `Retry-After` when the target sent
//!   one (clamped to `[0, retry_max]`), otherwise exponential backoff with full jitter
//!   between `retry_min` and `retry_max` (`waymark_common::backoff::delay_after`).

use std::time::Duration;

use rand::RngCore;
use time::OffsetDateTime;
use time::macros::format_description;
use waymark_wire::Timestamp;

/// What one delivery attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target answered with this status; `retry_after` is the raw `Retry-After` header.
    Status {
        /// HTTP status code.
        code: u16,
        /// `Retry-After` header value, if any.
        retry_after: Option<String>,
    },
    /// No complete answer within the target's `timeout_ms`.
    Timeout,
    /// The connection could not be made (refused, DNS, TLS handshake).
    Connect(String),
    /// Any other transport failure (connection reset mid-request, protocol error).
    Transport(String),
}

/// Retry policy of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Attempts before a retryable failure dead-letters the row (≥ 1).
    pub max_attempts: u32,
    /// Backoff floor.
    pub retry_min: Duration,
    /// Backoff ceiling, also the longest `Retry-After` honoured.
    pub retry_max: Duration,
}

/// What to do with the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delivered: delete the row.
    Delivered,
    /// Try again at `at` (UTC ms); `reason` is recorded as the row's last error.
    Retry {
        /// When.
        at: Timestamp,
        /// Why the attempt failed.
        reason: String,
    },
    /// Move the row to the dead-letter table with `reason`.
    DeadLetter {
        /// Why.
        reason: String,
    },
}

/// Decides after attempt number `attempt` (1 for the first) failed or succeeded at `now`.
pub fn decide<R: RngCore + ?Sized>(
    policy: &Policy,
    outcome: &Outcome,
    attempt: u32,
    now: Timestamp,
    rng: &mut R,
) -> Decision {
    let (reason, retry_after) = match outcome {
        Outcome::Status { code, .. } if (200..300).contains(code) => return Decision::Delivered,
        Outcome::Status { code, retry_after } => {
            let retryable = *code >= 500 || *code == 408 || *code == 429;
            if !retryable {
                return Decision::DeadLetter {
                    reason: format!("HTTP {code} (permanent)"),
                };
            }
            let after = retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now));
            (format!("HTTP {code}"), after)
        }
        Outcome::Timeout => ("timeout".to_string(), None),
        Outcome::Connect(e) => (format!("connection failed: {e}"), None),
        Outcome::Transport(e) => (format!("transport error: {e}"), None),
    };
    if attempt >= policy.max_attempts {
        return Decision::DeadLetter {
            reason: format!("{reason} after {attempt} attempts"),
        };
    }
    let delay = match retry_after {
        Some(d) => d.min(policy.retry_max),
        None => waymark_common::backoff::delay_after(
            policy.retry_min,
            policy.retry_max,
            attempt.saturating_sub(1),
            rng,
        ),
    };
    let delay_ms = Timestamp::try_from(delay.as_millis()).unwrap_or(Timestamp::MAX);
    Decision::Retry {
        at: now.saturating_add(delay_ms),
        reason,
    }
}

/// Parses `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), as a delay from `now`. A date in the past is zero; a
/// value that is neither is ignored (`None`).
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let fmt = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, fmt)
        .ok()?
        .assume_utc();
    let at_ms = i64::try_from((at - OffsetDateTime::UNIX_EPOCH).whole_milliseconds()).ok()?;
    Some(Duration::from_millis(
        u64::try_from(at_ms.saturating_sub(now)).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RNG that always returns the same word.
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

    const NOW: Timestamp = 1_795_420_370_000;

    fn policy() -> Policy {
        Policy {
            max_attempts: 5,
            retry_min: Duration::from_millis(1000),
            retry_max: Duration::from_millis(60_000),
        }
    }

    fn status(code: u16) -> Outcome {
        Outcome::Status {
            code,
            retry_after: None,
        }
    }

    fn kind(d: &Decision) -> &'static str {
        match d {
            Decision::Delivered => "delivered",
            Decision::Retry { .. } => "retry",
            Decision::DeadLetter { .. } => "dlq",
        }
    }

    /// Every status code 100..=599 on a first attempt, against the table in the module docs.
    #[test]
    fn every_status_code() {
        for code in 100..=599u16 {
            let d = decide(&policy(), &status(code), 1, NOW, &mut Fixed(0));
            let want = match code {
                200..=299 => "delivered",
                408 | 429 | 500..=599 => "retry",
                _ => "dlq",
            };
            assert_eq!(kind(&d), want, "HTTP {code}: {d:?}");
        }
    }

    #[test]
    fn transport_failures_retry() {
        for o in [
            Outcome::Timeout,
            Outcome::Connect("refused".into()),
            Outcome::Transport("reset".into()),
        ] {
            let d = decide(&policy(), &o, 1, NOW, &mut Fixed(0));
            assert_eq!(
                d,
                Decision::Retry {
                    at: NOW + 1000,
                    reason: match &o {
                        Outcome::Timeout => "timeout".into(),
                        Outcome::Connect(_) => "connection failed: refused".into(),
                        _ => "transport error: reset".into(),
                    }
                }
            );
        }
    }

    /// Attempts 1..max-1 retry, attempt max dead-letters, for every retryable outcome.
    #[test]
    fn gives_up_after_max_attempts() {
        for o in [
            status(500),
            status(503),
            status(408),
            status(429),
            Outcome::Timeout,
        ] {
            for attempt in 1..=7 {
                let d = decide(&policy(), &o, attempt, NOW, &mut Fixed(0));
                let want = if attempt < 5 { "retry" } else { "dlq" };
                assert_eq!(kind(&d), want, "{o:?} attempt {attempt}");
            }
        }
        let one = Policy {
            max_attempts: 1,
            ..policy()
        };
        assert_eq!(
            kind(&decide(&one, &status(503), 1, NOW, &mut Fixed(0))),
            "dlq"
        );
    }

    /// The delay doubles per attempt within [min, min*2^(n-1)] and stops at max.
    #[test]
    fn backoff_bounds_per_attempt() {
        for attempt in 1..5u32 {
            for word in [0, 1, 12_345, u64::MAX / 3, u64::MAX] {
                let Decision::Retry { at, .. } =
                    decide(&policy(), &status(502), attempt, NOW, &mut Fixed(word))
                else {
                    panic!("retry expected");
                };
                let ceiling = (1000i64 << (attempt - 1)).min(60_000);
                assert!(
                    (NOW + 1000..=NOW + ceiling).contains(&at),
                    "attempt {attempt}: {} ms",
                    at - NOW
                );
            }
        }
        let p = Policy {
            max_attempts: 100,
            ..policy()
        };
        let Decision::Retry { at, .. } = decide(&p, &status(500), 60, NOW, &mut Fixed(u64::MAX))
        else {
            panic!("retry expected");
        };
        assert!(at - NOW <= 60_000);
    }

    #[test]
    fn honours_retry_after() {
        let o = |v: &str| Outcome::Status {
            code: 429,
            retry_after: Some(v.into()),
        };
        let at = |o: &Outcome| match decide(&policy(), o, 1, NOW, &mut Fixed(u64::MAX)) {
            Decision::Retry { at, .. } => at - NOW,
            d => panic!("{d:?}"),
        };
        assert_eq!(at(&o("7")), 7000);
        assert_eq!(at(&o("0")), 0);
        // Clamped to retry_max.
        assert_eq!(at(&o("86400")), 60_000);
        // A date 30 s after NOW (NOW = 2026-11-23T07:52:50Z).
        assert_eq!(at(&o("Mon, 23 Nov 2026 07:53:20 GMT")), 30_000);
        // A date in the past: now.
        assert_eq!(at(&o("Sun, 06 Nov 1994 08:49:37 GMT")), 0);
        // Garbage: ignored, backoff applies (first attempt: [1000, 1000]).
        assert_eq!(at(&o("soon")), 1000);
        // 503 with Retry-After is honoured too.
        let o503 = Outcome::Status {
            code: 503,
            retry_after: Some("3".into()),
        };
        assert_eq!(at(&o503), 3000);
        // A 4xx with Retry-After is still permanent.
        let o400 = Outcome::Status {
            code: 400,
            retry_after: Some("3".into()),
        };
        assert_eq!(
            kind(&decide(&policy(), &o400, 1, NOW, &mut Fixed(0))),
            "dlq"
        );
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(
            parse_retry_after(" 12 ", NOW),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", NOW),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse_retry_after("-1", NOW), None);
        assert_eq!(parse_retry_after("", NOW), None);
        assert_eq!(parse_retry_after("1.5", NOW), None);
        assert_eq!(
            parse_retry_after("Mon, 23 Nov 2026 07:53:20 UTC", NOW),
            None
        );
    }

    #[test]
    fn reasons_are_recorded() {
        match decide(&policy(), &status(404), 1, NOW, &mut Fixed(0)) {
            Decision::DeadLetter { reason } => assert_eq!(reason, "HTTP 404 (permanent)"),
            d => panic!("{d:?}"),
        }
        match decide(&policy(), &status(503), 5, NOW, &mut Fixed(0)) {
            Decision::DeadLetter { reason } => assert_eq!(reason, "HTTP 503 after 5 attempts"),
            d => panic!("{d:?}"),
        }
    }
}
