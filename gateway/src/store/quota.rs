//! Sans-IO quota and free-disk watermark decisions.
//!
//! Two limits bound the store: `max_bytes` over the payload bytes of unsent rows, and
//! `min_free_disk_bytes` of free space on the filesystem. Before a row is inserted, [`plan`]
//! says how many bytes of the **oldest telemetry** must go and whether the new row is admitted:
//!
//! - An **event** is always admitted (events are never dropped for space; the disk is the
//!   only limit for them). Telemetry makes room for it as far as there is telemetry.
//! - A **telemetry** batch is admitted if deleting older telemetry makes it fit. If even
//!   deleting all older telemetry would not, the batch itself is the excess: it is refused
//!   (and counted as dropped), and older telemetry is deleted only as far as the limits are
//!   already exceeded without it.
//!
//! Invariant kept by every insert: afterwards the limits hold, or no telemetry row is left
//! (events alone exceed them). [`Cover`] then picks the oldest rows, whole rows only, until
//! the bytes to free are covered.
//!
//! Free disk is counted as the filesystem's available bytes plus the database's free pages
//! (deleted rows leave pages that new rows reuse without growing the file); both limits
//! count payload bytes, so the file is somewhat larger than the quota (page overhead).

/// The two configured limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Quota on the payload bytes of unsent rows.
    pub max_bytes: u64,
    /// Free space to keep on the filesystem.
    pub min_free_disk_bytes: u64,
}

/// What the store holds and how much room the disk has, before the insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Payload bytes of every unsent row (events and telemetry).
    pub unsent_bytes: u64,
    /// Payload bytes of the unsent telemetry rows (the only ones that may be deleted).
    pub telemetry_bytes: u64,
    /// Free bytes for the store's file; `None` when unknown (the watermark is not applied).
    pub free_disk_bytes: Option<u64>,
}

/// The row about to be inserted and its payload size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// An event of that many bytes.
    Event(u64),
    /// A telemetry batch of that many bytes.
    Telemetry(u64),
}

/// The decision for one insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Delete the oldest telemetry rows until at least this many payload bytes are freed
    /// (never more than the telemetry there is).
    pub drop_at_least: u64,
    /// Insert the incoming row. False only for a telemetry batch that cannot fit.
    pub admit: bool,
}

/// Decides what an insert needs. See the module docs.
pub(crate) fn plan(limits: Limits, usage: Usage, incoming: Incoming) -> Plan {
    match incoming {
        Incoming::Event(bytes) => Plan {
            drop_at_least: shortfall(limits, usage, bytes).min(usage.telemetry_bytes),
            admit: true,
        },
        Incoming::Telemetry(bytes) => {
            let need = shortfall(limits, usage, bytes);
            if need <= usage.telemetry_bytes {
                Plan {
                    drop_at_least: need,
                    admit: true,
                }
            } else {
                Plan {
                    drop_at_least: shortfall(limits, usage, 0).min(usage.telemetry_bytes),
                    admit: false,
                }
            }
        }
    }
}

/// Bytes that must be freed so that `incoming` more bytes respect both limits.
fn shortfall(limits: Limits, usage: Usage, incoming: u64) -> u64 {
    let quota = usage
        .unsent_bytes
        .saturating_add(incoming)
        .saturating_sub(limits.max_bytes);
    let disk = usage.free_disk_bytes.map_or(0, |free| {
        limits
            .min_free_disk_bytes
            .saturating_add(incoming)
            .saturating_sub(free)
    });
    quota.max(disk)
}

/// Whether the limits hold for `usage` (for health reporting after a commit).
pub(crate) fn within_limits(limits: Limits, usage: Usage) -> bool {
    shortfall(limits, usage, 0) == 0
}

/// Accumulates the oldest rows, whole rows only, until `target` bytes are covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cover {
    target: u64,
    covered: u64,
}

impl Cover {
    /// Starts covering `target` bytes.
    pub fn new(target: u64) -> Self {
        Cover { target, covered: 0 }
    }

    /// True once enough rows were taken.
    pub fn done(&self) -> bool {
        self.covered >= self.target
    }

    /// Takes the next oldest row.
    pub fn take(&mut self, bytes: u64) {
        self.covered = self.covered.saturating_add(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const L: Limits = Limits {
        max_bytes: 1000,
        min_free_disk_bytes: 100,
    };

    fn usage(unsent: u64, telemetry: u64, free: Option<u64>) -> Usage {
        Usage {
            unsent_bytes: unsent,
            telemetry_bytes: telemetry,
            free_disk_bytes: free,
        }
    }

    #[test]
    fn within_limits_needs_nothing() {
        let p = plan(L, usage(500, 400, Some(10_000)), Incoming::Telemetry(100));
        assert_eq!(
            p,
            Plan {
                drop_at_least: 0,
                admit: true
            }
        );
        let p = plan(L, usage(500, 400, None), Incoming::Event(500));
        assert_eq!(
            p,
            Plan {
                drop_at_least: 0,
                admit: true
            }
        );
    }

    #[test]
    fn quota_drops_the_overflow_of_telemetry() {
        let p = plan(L, usage(950, 900, None), Incoming::Telemetry(100));
        assert_eq!(
            p,
            Plan {
                drop_at_least: 50,
                admit: true
            }
        );
    }

    #[test]
    fn watermark_drops_like_the_quota() {
        // 150 free, keep 100, insert 80 -> 30 short.
        let p = plan(L, usage(10, 10, Some(150)), Incoming::Telemetry(80));
        assert_eq!(
            p,
            Plan {
                drop_at_least: 0,
                admit: false
            }
        );
        let p = plan(L, usage(100, 100, Some(150)), Incoming::Telemetry(80));
        assert_eq!(
            p,
            Plan {
                drop_at_least: 30,
                admit: true
            }
        );
    }

    #[test]
    fn events_are_admitted_beyond_the_quota() {
        // Events alone exceed the quota and no telemetry is left.
        let p = plan(L, usage(5000, 0, Some(1 << 30)), Incoming::Event(300));
        assert_eq!(
            p,
            Plan {
                drop_at_least: 0,
                admit: true
            }
        );
        // Some telemetry left: all of it makes room, and the event still goes in.
        let p = plan(L, usage(1000, 200, None), Incoming::Event(300));
        assert_eq!(
            p,
            Plan {
                drop_at_least: 200,
                admit: true
            }
        );
    }

    #[test]
    fn telemetry_that_cannot_fit_is_refused() {
        // Events fill the quota: the batch cannot fit whatever is deleted.
        let p = plan(L, usage(1000, 0, None), Incoming::Telemetry(10));
        assert_eq!(
            p,
            Plan {
                drop_at_least: 0,
                admit: false
            }
        );
        // Already over without the batch (e.g. the quota was lowered): restore the limit.
        let p = plan(L, usage(1200, 300, None), Incoming::Telemetry(1500));
        assert_eq!(
            p,
            Plan {
                drop_at_least: 200,
                admit: false
            }
        );
        // Larger than the whole quota.
        let p = plan(L, usage(0, 0, None), Incoming::Telemetry(1001));
        assert_eq!(
            p,
            Plan {
                drop_at_least: 0,
                admit: false
            }
        );
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let p = plan(
            Limits {
                max_bytes: 0,
                min_free_disk_bytes: u64::MAX,
            },
            usage(u64::MAX, u64::MAX, Some(0)),
            Incoming::Telemetry(u64::MAX),
        );
        assert_eq!(
            p,
            Plan {
                drop_at_least: u64::MAX,
                admit: true
            }
        );
    }

    #[derive(Debug, Clone)]
    struct Model {
        /// Oldest first: (is_event, bytes).
        rows: Vec<(bool, u64)>,
        free_disk: Option<u64>,
    }

    impl Model {
        fn usage(&self) -> Usage {
            Usage {
                unsent_bytes: self.rows.iter().map(|r| r.1).sum(),
                telemetry_bytes: self.rows.iter().filter(|r| !r.0).map(|r| r.1).sum(),
                free_disk_bytes: self.free_disk,
            }
        }

        /// Applies the plan the way the store does: oldest telemetry first, whole rows.
        /// Returns the bytes of the telemetry rows deleted, in order.
        fn apply(&mut self, p: Plan, incoming: Incoming) -> Vec<u64> {
            let mut cover = Cover::new(p.drop_at_least);
            let mut dropped = Vec::new();
            let mut kept = Vec::new();
            for row in self.rows.drain(..) {
                if !row.0 && !cover.done() {
                    cover.take(row.1);
                    dropped.push(row.1);
                } else {
                    kept.push(row);
                }
            }
            self.rows = kept;
            let freed: u64 = dropped.iter().sum();
            let (is_event, bytes) = match incoming {
                Incoming::Event(b) => (true, b),
                Incoming::Telemetry(b) => (false, b),
            };
            let added = if p.admit {
                self.rows.push((is_event, bytes));
                bytes
            } else {
                0
            };
            self.free_disk = self.free_disk.map(|f| f + freed - added.min(f + freed));
            dropped
        }
    }

    fn arb_model() -> impl Strategy<Value = Model> {
        (
            prop::collection::vec((any::<bool>(), 1u64..400), 0..30),
            prop::option::of(0u64..5000),
        )
            .prop_map(|(rows, free_disk)| Model { rows, free_disk })
    }

    fn arb_incoming() -> impl Strategy<Value = Incoming> {
        prop_oneof![
            (0u64..1500).prop_map(Incoming::Event),
            (0u64..1500).prop_map(Incoming::Telemetry)
        ]
    }

    proptest! {
        #[test]
        fn plan_keeps_the_invariants(
            model in arb_model(),
            incoming in arb_incoming(),
            max_bytes in 0u64..4000,
            min_free in 0u64..2000,
        ) {
            let limits = Limits { max_bytes, min_free_disk_bytes: min_free };
            let before = model.clone();
            let u = before.usage();
            let p = plan(limits, u, incoming);
            let mut after = model;
            let dropped = after.apply(p, incoming);
            let events_before = before.rows.iter().filter(|r| r.0).count();
            let events_after = after.rows.iter().filter(|r| r.0).count();

            // Events are never deleted; an incoming event is always admitted.
            prop_assert_eq!(
                events_after,
                events_before + usize::from(matches!(incoming, Incoming::Event(_)))
            );
            prop_assert!(p.drop_at_least <= u.telemetry_bytes);

            // Afterwards the limits hold, or no telemetry is left.
            let ua = after.usage();
            let telemetry_left = after.rows.iter().any(|r| !r.0);
            prop_assert!(within_limits(limits, ua) || !telemetry_left,
                "limits broken with telemetry left: {:?} -> {:?}", u, ua);

            // A telemetry batch is refused only when it cannot fit even without any older
            // telemetry.
            if let Incoming::Telemetry(b) = incoming {
                let alone = Usage {
                    unsent_bytes: u.unsent_bytes - u.telemetry_bytes,
                    telemetry_bytes: 0,
                    free_disk_bytes: u.free_disk_bytes.map(|f| f + u.telemetry_bytes),
                };
                prop_assert_eq!(p.admit, shortfall(limits, alone, b) == 0);
            }

            // Minimal: keeping the last deleted row would have broken a limit (or the row
            // was needed for the incoming one to fit).
            if let Some(&last) = dropped.last() {
                let freed: u64 = dropped.iter().sum();
                prop_assert!(freed - last < p.drop_at_least);
            }
        }
    }
}
