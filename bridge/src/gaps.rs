//! Per-vehicle `sequence` gap detection (sans-IO; time is an argument).
//!
//! # Invariants
//! - A vehicle's state is the highest sequence seen and the open gaps: disjoint, sorted
//!   ranges of sequences below it that were never seen. The first event seen from a vehicle
//!   sets the baseline; nothing below it is a gap (the bridge cannot know what came before).
//! - A sequence above `highest + 1` opens a gap `highest+1 ..= seq-1` at `now`. A sequence
//!   inside a gap closes it (the range shrinks or splits; the pieces keep their opening
//!   time and alert state). A sequence at or below `highest` that is in no gap is a
//!   re-used sequence: reported, nothing changes.
//! - A gap is due for an alert once it has been open for `alert_after`; it is alerted once
//!   (`alerted` is persisted with the state).
//! - At most [`MAX_GAPS`] ranges are kept per vehicle; beyond that the oldest range is
//!   forgotten and reported (a hostile or broken unit cannot grow the state without bound).

use serde::{Deserialize, Serialize};
use waymark_wire::Timestamp;

/// Most open gap ranges kept per vehicle.
pub const MAX_GAPS: usize = 1024;

/// One range of missing sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// First missing sequence.
    pub first: u64,
    /// Last missing sequence.
    pub last: u64,
    /// When the gap was noticed (UTC ms).
    pub opened_ms: Timestamp,
    /// Whether an alert was raised for it.
    pub alerted: bool,
}

/// The sequence state of one vehicle, as persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VehicleSeq {
    /// Highest sequence seen; `None` before the first event.
    pub highest: Option<u64>,
    /// Open gaps, sorted, disjoint.
    pub gaps: Vec<Gap>,
}

/// What one observed sequence did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The first event of the vehicle, or the next one in order.
    InOrder,
    /// A gap opened (`first ..= last` missing); `forgotten` is a range dropped for
    /// [`MAX_GAPS`].
    Opened {
        /// The new gap.
        gap: Gap,
        /// An old range dropped to keep the bound.
        forgotten: Option<Gap>,
    },
    /// A late arrival filled a gap; `gap` is the range it was in (before the fill).
    Filled {
        /// The range the sequence was in.
        gap: Gap,
        /// Whether the range was exactly this one sequence, so it is now closed.
        closed: bool,
    },
    /// At or below the highest and in no gap: a sequence used twice by different events.
    Reused,
}

impl VehicleSeq {
    /// Records `seq` seen at `now`.
    pub fn observe(&mut self, seq: u64, now: Timestamp) -> Observed {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return Observed::InOrder;
        };
        if seq > highest {
            self.highest = Some(seq);
            if seq == highest + 1 {
                return Observed::InOrder;
            }
            let gap = Gap {
                first: highest + 1,
                last: seq - 1,
                opened_ms: now,
                alerted: false,
            };
            self.gaps.push(gap);
            let forgotten = (self.gaps.len() > MAX_GAPS).then(|| self.gaps.remove(0));
            return Observed::Opened { gap, forgotten };
        }
        let Some(i) = self
            .gaps
            .iter()
            .position(|g| g.first <= seq && seq <= g.last)
        else {
            return Observed::Reused;
        };
        let gap = self.gaps[i];
        let closed = gap.first == gap.last;
        match (seq == gap.first, seq == gap.last) {
            (true, true) => {
                self.gaps.remove(i);
            }
            (true, false) => self.gaps[i].first = seq + 1,
            (false, true) => self.gaps[i].last = seq - 1,
            (false, false) => {
                self.gaps[i].last = seq - 1;
                let right = Gap {
                    first: seq + 1,
                    ..gap
                };
                self.gaps.insert(i + 1, right);
                if self.gaps.len() > MAX_GAPS {
                    self.gaps.remove(0);
                }
            }
        }
        Observed::Filled { gap, closed }
    }

    /// Gaps open for at least `alert_after_ms` at `now` and not alerted yet; marks them
    /// alerted and returns them.
    pub fn due_alerts(&mut self, now: Timestamp, alert_after_ms: i64) -> Vec<Gap> {
        let mut due = Vec::new();
        for g in &mut self.gaps {
            if !g.alerted && now.saturating_sub(g.opened_ms) >= alert_after_ms {
                g.alerted = true;
                due.push(*g);
            }
        }
        due
    }

    /// Number of missing sequences in open gaps.
    pub fn missing(&self) -> u64 {
        self.gaps.iter().map(|g| g.last - g.first + 1).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gap(first: u64, last: u64, opened_ms: Timestamp) -> Gap {
        Gap {
            first,
            last,
            opened_ms,
            alerted: false,
        }
    }

    #[test]
    fn baseline_then_in_order() {
        let mut v = VehicleSeq::default();
        assert_eq!(v.observe(41, 0), Observed::InOrder);
        assert_eq!(v.observe(42, 1), Observed::InOrder);
        assert_eq!(v.highest, Some(42));
        assert!(v.gaps.is_empty());
        assert_eq!(v.observe(42, 2), Observed::Reused);
        assert_eq!(v.observe(3, 2), Observed::Reused);
    }

    #[test]
    fn gap_opens_splits_and_closes() {
        let mut v = VehicleSeq::default();
        v.observe(1, 0);
        match v.observe(6, 100) {
            Observed::Opened { gap: g, forgotten } => {
                assert_eq!(g, gap(2, 5, 100));
                assert_eq!(forgotten, None);
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(v.missing(), 4);
        // Middle: split.
        assert!(matches!(
            v.observe(4, 200),
            Observed::Filled { closed: false, .. }
        ));
        assert_eq!(v.gaps, vec![gap(2, 3, 100), gap(5, 5, 100)]);
        // Edges.
        v.observe(2, 300);
        assert_eq!(v.gaps, vec![gap(3, 3, 100), gap(5, 5, 100)]);
        assert!(matches!(
            v.observe(5, 300),
            Observed::Filled { closed: true, .. }
        ));
        assert!(matches!(
            v.observe(3, 300),
            Observed::Filled { closed: true, .. }
        ));
        assert!(v.gaps.is_empty());
        assert_eq!(v.observe(7, 400), Observed::InOrder);
    }

    #[test]
    fn alerts_once_after_the_delay() {
        let mut v = VehicleSeq::default();
        v.observe(1, 0);
        v.observe(3, 1000);
        assert!(v.due_alerts(60_999, 60_000).is_empty());
        let due = v.due_alerts(61_000, 60_000);
        assert_eq!(due.len(), 1);
        assert!(due[0].alerted);
        assert!(v.due_alerts(1_000_000, 60_000).is_empty(), "alerted once");
        // A late arrival still closes an alerted gap.
        match v.observe(2, 2_000_000) {
            Observed::Filled { gap, closed } => {
                assert!(gap.alerted);
                assert!(closed);
            }
            o => panic!("{o:?}"),
        }
        assert!(v.gaps.is_empty());
    }

    #[test]
    fn bounded() {
        let mut v = VehicleSeq::default();
        v.observe(0, 0);
        let mut forgotten = 0;
        for i in 1..=(MAX_GAPS as u64 + 10) {
            if let Observed::Opened {
                forgotten: Some(_), ..
            } = v.observe(i * 2, 0)
            {
                forgotten += 1;
            }
        }
        assert_eq!(v.gaps.len(), MAX_GAPS);
        assert_eq!(forgotten, 10);
        // Splitting at the bound keeps the bound.
        let g = v.gaps[MAX_GAPS - 1];
        assert_eq!(g.first, g.last);
        let mut w = VehicleSeq::default();
        w.observe(0, 0);
        for i in 1..=MAX_GAPS as u64 {
            w.observe(i * 10, 0);
        }
        w.observe(5, 0);
        assert_eq!(w.gaps.len(), MAX_GAPS);
        // The largest sequence does not overflow.
        v.observe(u64::MAX, 0);
        assert_eq!(v.observe(u64::MAX, 0), Observed::Reused);
    }

    proptest! {
        /// Whatever order a set of sequences arrives in, the open gaps are exactly the
        /// sequences between the first one seen and the highest that never arrived.
        #[test]
        fn gaps_are_exactly_the_missing(mut seqs in proptest::collection::vec(0u64..200, 1..120)) {
            let mut v = VehicleSeq::default();
            let first = seqs[0];
            for (t, s) in seqs.iter().enumerate() {
                v.observe(*s, t as i64);
            }
            let highest = *seqs.iter().max().unwrap();
            prop_assert_eq!(v.highest, Some(highest));
            seqs.sort_unstable();
            let mut missing = Vec::new();
            for s in first..=highest {
                if seqs.binary_search(&s).is_err() {
                    missing.push(s);
                }
            }
            let mut in_gaps = Vec::new();
            for g in &v.gaps {
                prop_assert!(g.first <= g.last);
                in_gaps.extend(g.first..=g.last);
            }
            prop_assert!(in_gaps.windows(2).all(|w| w[0] < w[1]), "sorted, disjoint");
            prop_assert_eq!(in_gaps, missing);
        }
    }
}
