//! The watchdog decision, sans-IO: ping systemd only while every watched stage makes progress.
//!
//! # Invariant
//! [`Watchdog::check`] answers `ping = true` only if every watched [`Heartbeat`] counter moved
//! within `stall_after` of `now` (the first `stall_after` after [`Watchdog::new`] counts as
//! progress). Checks run every `WATCHDOG_USEC / 2`; a change is noticed at the first check
//! after it, so after a stage stops, pings stop within `stall_after + WATCHDOG_USEC / 2`, and
//! systemd acts `WATCHDOG_USEC` after the last ping: within `2 × WatchdogSec` in all.
//!
//! [`Heartbeat`]: crate::health::Heartbeat

use std::time::{Duration, Instant};

use crate::health::HEARTBEAT_EVERY;

/// How long a heartbeat may stand still before the watchdog stops pinging, for a systemd
/// watchdog of `watchdog` (`WATCHDOG_USEC`): half of it, but at least three heartbeat periods
/// so that a short `WatchdogSec=` cannot mistake an idle stage for a stuck one.
pub fn stall_after(watchdog: Duration) -> Duration {
    (watchdog / 2).max(HEARTBEAT_EVERY * 3)
}

/// A watched stage that stopped making progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    /// The stage (`store`, `pipeline`).
    pub stage: &'static str,
    /// Time since its heartbeat was last seen moving.
    pub silent_for: Duration,
}

/// A change between pinging and withholding, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Pings stop from this check on.
    Stalled,
    /// Pings resume from this check on.
    Recovered,
}

/// The result of one [`Watchdog::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Send `WATCHDOG=1` now.
    pub ping: bool,
    /// The stages that hold the ping back (empty when `ping`).
    pub stalled: Vec<Stall>,
    /// Set on the first check of a stall and on the first check after it.
    pub transition: Option<Transition>,
}

#[derive(Debug, Clone)]
struct Stage {
    name: &'static str,
    last_count: u64,
    last_change: Instant,
}

/// Decides, at every check, whether the gateway has earned a watchdog ping.
#[derive(Debug, Clone)]
pub struct Watchdog {
    stall_after: Duration,
    stages: Vec<Stage>,
    stalled: bool,
}

impl Watchdog {
    /// Watches the stages `names` (their counters are passed to [`Watchdog::check`] in this
    /// order), starting at `now` with the counters at `counts`.
    pub fn new(
        now: Instant,
        stall_after: Duration,
        names: &[&'static str],
        counts: &[u64],
    ) -> Self {
        let stages = names
            .iter()
            .enumerate()
            .map(|(i, &name)| Stage {
                name,
                last_count: counts.get(i).copied().unwrap_or(0),
                last_change: now,
            })
            .collect();
        Watchdog {
            stall_after,
            stages,
            stalled: false,
        }
    }

    /// Takes the current heartbeat counters (same order as the names given to
    /// [`Watchdog::new`]; missing ones count as unchanged) and decides whether to ping.
    pub fn check(&mut self, now: Instant, counts: &[u64]) -> Check {
        let mut stalled = Vec::new();
        for (i, stage) in self.stages.iter_mut().enumerate() {
            let count = counts.get(i).copied().unwrap_or(stage.last_count);
            if count != stage.last_count {
                stage.last_count = count;
                stage.last_change = now;
            }
            let silent_for = now.saturating_duration_since(stage.last_change);
            if silent_for > self.stall_after {
                stalled.push(Stall {
                    stage: stage.name,
                    silent_for,
                });
            }
        }
        let ping = stalled.is_empty();
        let transition = match (self.stalled, ping) {
            (false, false) => Some(Transition::Stalled),
            (true, true) => Some(Transition::Recovered),
            _ => None,
        };
        self.stalled = !ping;
        Check {
            ping,
            stalled,
            transition,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 2] = ["store", "pipeline"];

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn stall_after_is_half_the_watchdog_but_at_least_three_beats() {
        assert_eq!(stall_after(s(30)), s(15));
        assert_eq!(stall_after(s(10)), s(5));
        assert_eq!(stall_after(s(4)), s(3));
        assert_eq!(stall_after(Duration::ZERO), s(3));
    }

    #[test]
    fn pings_while_every_stage_beats() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0, s(15), &NAMES, &[0, 0]);
        for k in 1..=20u64 {
            let c = w.check(t0 + s(15 * k), &[k, 3 * k]);
            assert!(c.ping, "check {k}");
            assert_eq!(c.stalled, []);
            assert_eq!(c.transition, None);
        }
    }

    #[test]
    fn start_counts_as_progress_for_stall_after() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0, s(15), &NAMES, &[5, 5]);
        assert!(w.check(t0, &[5, 5]).ping);
        assert!(
            w.check(t0 + s(15), &[5, 5]).ping,
            "exactly stall_after is still fine"
        );
        let c = w.check(t0 + s(16), &[5, 5]);
        assert!(!c.ping);
        assert_eq!(c.stalled.len(), 2);
    }

    #[test]
    fn a_stuck_store_stops_pings_and_names_itself() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0, s(15), &NAMES, &[0, 0]);
        assert!(w.check(t0 + s(15), &[10, 10]).ping);
        // The store stops at 10; the pipeline goes on.
        assert!(w.check(t0 + s(30), &[10, 20]).ping, "15 s silent: not yet");
        let c = w.check(t0 + s(45), &[10, 30]);
        assert!(!c.ping);
        assert_eq!(
            c.stalled,
            [Stall {
                stage: "store",
                silent_for: s(30)
            }]
        );
        assert_eq!(c.transition, Some(Transition::Stalled));
        // Still stuck: no ping, no new transition.
        let c = w.check(t0 + s(60), &[10, 40]);
        assert!(!c.ping);
        assert_eq!(c.transition, None);
        assert_eq!(c.stalled[0].silent_for, s(45));
        // It moves again: pings resume, once reported.
        let c = w.check(t0 + s(75), &[11, 50]);
        assert!(c.ping);
        assert_eq!(c.transition, Some(Transition::Recovered));
        assert_eq!(w.check(t0 + s(90), &[12, 60]).transition, None);
    }

    #[test]
    fn a_stuck_pipeline_stops_pings() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0, s(3), &NAMES, &[0, 0]);
        assert!(w.check(t0 + s(2), &[2, 7]).ping);
        assert!(w.check(t0 + s(4), &[4, 7]).ping);
        let c = w.check(t0 + s(6), &[6, 7]);
        assert!(!c.ping);
        assert_eq!(c.stalled[0].stage, "pipeline");
    }

    #[test]
    fn both_stuck_are_both_named() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0, s(1), &NAMES, &[1, 1]);
        let c = w.check(t0 + s(2), &[1, 1]);
        let names: Vec<_> = c.stalled.iter().map(|x| x.stage).collect();
        assert_eq!(names, NAMES);
    }

    #[test]
    fn a_counter_that_wraps_or_goes_back_still_counts_as_moving() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0, s(1), &NAMES, &[u64::MAX, 9]);
        assert!(w.check(t0 + s(1), &[0, 8]).ping);
        assert!(w.check(t0 + s(2), &[1, 7]).ping);
    }

    #[test]
    fn missing_counters_count_as_unchanged() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(t0, s(1), &NAMES, &[]);
        assert!(w.check(t0 + s(1), &[1]).ping);
        let c = w.check(t0 + s(3), &[2]);
        assert!(!c.ping);
        assert_eq!(c.stalled[0].stage, "pipeline");
    }

    #[test]
    fn a_clock_that_goes_back_does_not_panic_or_stall() {
        let t0 = Instant::now() + s(100);
        let mut w = Watchdog::new(t0, s(1), &NAMES, &[0, 0]);
        assert!(w.check(t0 - s(50), &[0, 0]).ping);
    }
}
