//! In-flight bookkeeping: which outbox row each MQTT packet id carries (sans-IO).
//!
//! rumqttc gives no per-publish PUBACK handle. What it does give, for the single task that
//! submits every publish, is an ordered event stream (`rumqttc/src/state.rs`):
//! - `Outgoing::Publish(pkid)` when a request taken from the request channel (or from the
//!   pending list of a resumed session) is written, in submission order;
//! - `Outgoing::AwaitAck(pkid)` instead, when the next packet id is still taken by an
//!   unacknowledged publish (a *collision*): the request is stashed and is written, with an
//!   `Outgoing::Publish(pkid)`, right after the `Incoming::PubAck(pkid)` of the old holder;
//!   rumqttc holds at most one stashed request (a second collision overwrites the first);
//! - `Outgoing::Publish(pkid)` again for a pkid already in flight when a resumed session
//!   retransmits its unacknowledged publishes with their original ids;
//! - `Incoming::PubAck(pkid)` when the broker took responsibility for a publish.
//!
//! [`InFlight`] replays that stream against the tags it was given at submission and answers
//! which row a PUBACK acknowledges.
//!
//! # Invariants
//! - A row id is *tracked* from the moment a fetch hands it out until the store confirmed
//!   its deletion ([`InFlight::acks_committed`]) or its publish was lost with a session. A
//!   tracked row is never handed out twice, so a row is never in flight twice.
//! - Every submitted tag is in exactly one of: `queued` (in the client, no pkid yet), the
//!   stash (collision), `by_pkid` (written, awaiting PUBACK). Their total never exceeds
//!   `capacity`, which equals rumqttc's `inflight`, so rumqttc never stashes two requests
//!   when the broker acknowledges in order.
//! - A row reaches the ack list only through the PUBACK of the pkid it was written with.
//! - When a session is lost (CONNACK with `session_present = 0`, or a client rebuilt), every
//!   tag in flight is forgotten (rumqttc dropped those requests), its row becomes untracked
//!   and all cursors go back to 0, so the next fetches return every unacknowledged row again.
//!   After *every* CONNACK the cursors go back to 0 as well; rows still in flight in a resumed
//!   session are then skipped (rumqttc retransmits them itself).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use waymark_wire::topics::Stream;

/// The fetch cursor a row advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// Alert lane.
    Alert,
    /// Milestone lane.
    Milestone,
    /// Live telemetry (created within the live window).
    Live,
    /// Backlog telemetry (older).
    Backlog,
}

/// Per-lane fetch cursors: the highest row id handed out from each lane (0 = from the start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursors {
    /// Alert lane.
    pub alert: i64,
    /// Milestone lane.
    pub milestone: i64,
    /// Live telemetry.
    pub live: i64,
    /// Backlog telemetry.
    pub backlog: i64,
}

impl Cursors {
    fn advance(&mut self, cursor: Cursor, row_id: i64) {
        let slot = match cursor {
            Cursor::Alert => &mut self.alert,
            Cursor::Milestone => &mut self.milestone,
            Cursor::Live => &mut self.live,
            Cursor::Backlog => &mut self.backlog,
        };
        *slot = (*slot).max(row_id);
    }
}

/// A row fetched from the store, waiting for a slot and the rate limiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRow {
    /// Store row id.
    pub row_id: i64,
    /// The cursor it advances.
    pub cursor: Cursor,
    /// Topic stream: [`Stream::Events`] or [`Stream::Telemetry`].
    pub stream: Stream,
    /// Message payload.
    pub payload: Vec<u8>,
}

/// What one submitted publish carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// An outbox row.
    Row {
        /// Store row id.
        row_id: i64,
        /// Payload bytes (for the counters).
        bytes: usize,
    },
    /// The retained status document (online or offline).
    Status,
}

/// What an `Outgoing::Publish(pkid)` meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The first write of a submitted tag. `republish` is true when the row was in flight in
    /// a session that was lost, so this write repeats an earlier one.
    First {
        /// What was written.
        tag: Tag,
        /// Whether this repeats a publish lost with a session.
        republish: bool,
    },
    /// A resumed session retransmitted a publish with its original pkid.
    Retransmit {
        /// What was written.
        tag: Tag,
    },
    /// A pkid nothing was submitted for (a bookkeeping mismatch; logged, then ignored).
    Unknown,
}

/// What an `Outgoing::AwaitAck(pkid)` meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stashed {
    /// The next submitted tag waits for `pkid` to be acknowledged.
    Waiting,
    /// As `Waiting`, and rumqttc overwrote an earlier stashed request, which is lost: its row
    /// became untracked and the cursors were reset so it is fetched and published again.
    Replaced {
        /// The tag rumqttc dropped.
        lost: Tag,
    },
    /// Nothing was submitted (a bookkeeping mismatch).
    Unknown,
}

/// What an `Incoming::PubAck(pkid)` acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acked {
    /// This row; it is now on the ack list.
    Row(i64),
    /// A status document.
    Status,
    /// Nothing we know of (stale or unsolicited).
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    tag: Tag,
    since: Instant,
}

/// The in-flight table and fetch cursors of one uplink (see the module docs).
#[derive(Debug)]
pub struct InFlight {
    capacity: usize,
    queued: VecDeque<Tag>,
    stash: Option<(u16, Tag)>,
    by_pkid: BTreeMap<u16, Sent>,
    held: VecDeque<FetchedRow>,
    acked: Vec<i64>,
    tracked: BTreeSet<i64>,
    lost: BTreeSet<i64>,
    cursors: Cursors,
}

impl InFlight {
    /// An empty table for at most `capacity` publishes awaiting PUBACK (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            queued: VecDeque::new(),
            stash: None,
            by_pkid: BTreeMap::new(),
            held: VecDeque::new(),
            acked: Vec::new(),
            tracked: BTreeSet::new(),
            lost: BTreeSet::new(),
            cursors: Cursors::default(),
        }
    }

    /// Publishes submitted and not yet acknowledged (queued, stashed or written).
    pub fn in_flight(&self) -> usize {
        self.queued.len() + usize::from(self.stash.is_some()) + self.by_pkid.len()
    }

    /// How many more publishes may be submitted now.
    pub fn free_slots(&self) -> usize {
        self.capacity.saturating_sub(self.in_flight())
    }

    /// The cursors for the next fetch.
    pub fn cursors(&self) -> Cursors {
        self.cursors
    }

    /// Whether the row is handed out, in flight or acknowledged but not yet deleted.
    pub fn is_tracked(&self, row_id: i64) -> bool {
        self.tracked.contains(&row_id)
    }

    /// Takes a fetch result: every row advances its cursor; rows already tracked are skipped,
    /// the others are held for submission. Returns how many were held.
    pub fn accept_fetched(&mut self, rows: impl IntoIterator<Item = FetchedRow>) -> usize {
        let mut held = 0;
        for row in rows {
            self.cursors.advance(row.cursor, row.row_id);
            if self.tracked.insert(row.row_id) {
                self.held.push_back(row);
                held += 1;
            }
        }
        held
    }

    /// The next held row, if any.
    pub fn peek_held(&self) -> Option<&FetchedRow> {
        self.held.front()
    }

    /// Takes the next held row to submit it. Follow with [`InFlight::submitted`] or
    /// [`InFlight::submit_failed`].
    pub fn take_held(&mut self) -> Option<FetchedRow> {
        self.held.pop_front()
    }

    /// Held rows.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Drops the next held row without publishing it (it cannot be published); it stays in
    /// the store and comes back after the next cursor reset.
    pub fn skip_held(&mut self) -> Option<FetchedRow> {
        let row = self.held.pop_front()?;
        self.tracked.remove(&row.row_id);
        Some(row)
    }

    /// A publish was handed to the client.
    pub fn submitted(&mut self, tag: Tag) {
        if let Tag::Row { row_id, .. } = tag {
            self.tracked.insert(row_id);
        }
        self.queued.push_back(tag);
    }

    /// The client refused a row taken with [`InFlight::take_held`]: untrack it and rescan.
    pub fn submit_failed(&mut self, row_id: i64) {
        self.tracked.remove(&row_id);
        self.reset_cursors();
    }

    /// Handles `Outgoing::Publish(pkid)`.
    pub fn on_publish(&mut self, pkid: u16, now: Instant) -> Written {
        if let Some((stashed_pkid, tag)) = self.stash
            && stashed_pkid == pkid
            && !self.by_pkid.contains_key(&pkid)
        {
            self.stash = None;
            return self.write_first(pkid, tag, now);
        }
        if let Some(sent) = self.by_pkid.get(&pkid) {
            return Written::Retransmit { tag: sent.tag };
        }
        match self.queued.pop_front() {
            Some(tag) => self.write_first(pkid, tag, now),
            None => Written::Unknown,
        }
    }

    fn write_first(&mut self, pkid: u16, tag: Tag, now: Instant) -> Written {
        self.by_pkid.insert(pkid, Sent { tag, since: now });
        let republish = match tag {
            Tag::Row { row_id, .. } => self.lost.remove(&row_id),
            Tag::Status => false,
        };
        Written::First { tag, republish }
    }

    /// Handles `Outgoing::AwaitAck(pkid)`.
    pub fn on_await_ack(&mut self, pkid: u16) -> Stashed {
        let Some(tag) = self.queued.pop_front() else {
            return Stashed::Unknown;
        };
        match self.stash.replace((pkid, tag)) {
            None => Stashed::Waiting,
            Some((_, lost)) => {
                self.forget(lost);
                self.reset_cursors();
                Stashed::Replaced { lost }
            }
        }
    }

    /// Handles `Incoming::PubAck(pkid)`.
    pub fn on_puback(&mut self, pkid: u16) -> Acked {
        match self.by_pkid.remove(&pkid) {
            Some(Sent {
                tag: Tag::Row { row_id, .. },
                ..
            }) => {
                self.acked.push(row_id);
                Acked::Row(row_id)
            }
            Some(Sent {
                tag: Tag::Status, ..
            }) => Acked::Status,
            None => Acked::Unknown,
        }
    }

    /// Rows acknowledged by the broker whose deletion the store has not confirmed yet.
    pub fn pending_acks(&self) -> &[i64] {
        &self.acked
    }

    /// The store deleted these acknowledged rows: stop tracking them.
    pub fn acks_committed(&mut self, row_ids: &[i64]) {
        let done: BTreeSet<i64> = row_ids.iter().copied().collect();
        self.acked.retain(|id| !done.contains(id));
        for id in &done {
            self.tracked.remove(id);
        }
    }

    /// A CONNACK arrived. Without a resumed session everything in flight is lost (see
    /// [`InFlight::session_lost`]); in every case the cursors go back to 0 and held rows are
    /// released, so the next fetches walk every unacknowledged row again.
    pub fn on_connected(&mut self, session_present: bool) {
        if !session_present {
            self.session_lost();
        }
        self.release_held();
        self.reset_cursors();
    }

    /// The client's session is gone (CONNACK with `session_present = 0`, or the client was
    /// rebuilt): rumqttc dropped every request it held. Rows in flight become untracked and
    /// are counted as republished when they are written again. Acknowledged rows stay tracked
    /// until the store confirms their deletion. Returns how many rows were in flight.
    pub fn session_lost(&mut self) -> usize {
        let mut tags: Vec<Tag> = self.queued.drain(..).collect();
        tags.extend(self.stash.take().map(|(_, tag)| tag));
        tags.extend(
            std::mem::take(&mut self.by_pkid)
                .into_values()
                .map(|s| s.tag),
        );
        let mut rows = 0;
        for tag in tags {
            if matches!(tag, Tag::Row { .. }) {
                rows += 1;
            }
            self.forget(tag);
        }
        self.release_held();
        self.reset_cursors();
        rows
    }

    fn forget(&mut self, tag: Tag) {
        if let Tag::Row { row_id, .. } = tag {
            self.tracked.remove(&row_id);
            self.lost.insert(row_id);
        }
    }

    fn release_held(&mut self) {
        for row in self.held.drain(..) {
            self.tracked.remove(&row.row_id);
        }
    }

    /// Sets every cursor back to 0.
    pub fn reset_cursors(&mut self) {
        self.cursors = Cursors::default();
    }

    /// A fetch returned nothing: every row after the cursors is handed out. Every loss reset
    /// the cursors, so a lost row that is not handed out again by now is no longer in the
    /// store (expired or dropped): forget it. Lost rows handed out again stay marked until
    /// they are written.
    pub fn end_of_outbox(&mut self) {
        let tracked = &self.tracked;
        self.lost.retain(|id| tracked.contains(id));
    }

    /// When the oldest written publish still awaiting its PUBACK was written.
    pub fn oldest_unacked(&self) -> Option<Instant> {
        self.by_pkid.values().map(|s| s.since).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(row_id: i64, cursor: Cursor) -> FetchedRow {
        FetchedRow {
            row_id,
            cursor,
            stream: Stream::Telemetry,
            payload: vec![0; 10],
        }
    }

    fn tag(row_id: i64) -> Tag {
        Tag::Row { row_id, bytes: 10 }
    }

    /// Fetches `ids` (alert lane) and submits them all.
    fn submit(f: &mut InFlight, ids: &[i64]) {
        f.accept_fetched(ids.iter().map(|&id| row(id, Cursor::Alert)));
        while let Some(r) = f.take_held() {
            f.submitted(tag(r.row_id));
        }
    }

    fn first(row_id: i64) -> Written {
        Written::First {
            tag: tag(row_id),
            republish: false,
        }
    }

    #[test]
    fn in_order_publish_and_ack() {
        let now = Instant::now();
        let mut f = InFlight::new(4);
        submit(&mut f, &[10, 11, 12]);
        assert_eq!(f.in_flight(), 3);
        assert_eq!(f.free_slots(), 1);
        assert_eq!(f.on_publish(1, now), first(10));
        assert_eq!(f.on_publish(2, now), first(11));
        assert_eq!(f.on_publish(3, now), first(12));
        assert_eq!(f.on_puback(1), Acked::Row(10));
        assert_eq!(f.on_puback(2), Acked::Row(11));
        assert_eq!(f.pending_acks(), &[10, 11]);
        assert_eq!(f.in_flight(), 1);
        assert_eq!(f.free_slots(), 3);
        // Acknowledged but not yet deleted rows stay tracked: a fetch cannot hand them out.
        assert!(f.is_tracked(10));
        f.acks_committed(&[10, 11]);
        assert!(f.pending_acks().is_empty());
        assert!(!f.is_tracked(10));
        assert!(f.is_tracked(12));
    }

    #[test]
    fn capacity_is_at_least_one_and_counts_status() {
        let mut f = InFlight::new(0);
        assert_eq!(f.free_slots(), 1);
        f.submitted(Tag::Status);
        assert_eq!(f.free_slots(), 0);
        assert_eq!(
            f.on_publish(1, Instant::now()),
            Written::First {
                tag: Tag::Status,
                republish: false
            }
        );
        assert_eq!(f.on_puback(1), Acked::Status);
        assert_eq!(f.free_slots(), 1);
        assert!(f.pending_acks().is_empty());
    }

    #[test]
    fn unknown_pkids_are_reported_not_guessed() {
        let mut f = InFlight::new(2);
        assert_eq!(f.on_publish(1, Instant::now()), Written::Unknown);
        assert_eq!(f.on_puback(1), Acked::Unknown);
        assert_eq!(f.on_await_ack(1), Stashed::Unknown);
        submit(&mut f, &[1]);
        f.on_publish(1, Instant::now());
        assert_eq!(f.on_puback(1), Acked::Row(1));
        // A duplicate PUBACK for the same pkid acknowledges nothing more.
        assert_eq!(f.on_puback(1), Acked::Unknown);
        assert_eq!(f.pending_acks(), &[1]);
    }

    #[test]
    fn resumed_session_retransmits_keep_the_mapping() {
        let now = Instant::now();
        let mut f = InFlight::new(4);
        submit(&mut f, &[1, 2, 3]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        // Connection drops with 1 and 2 written, 3 still in the channel; session resumed.
        f.on_connected(true);
        assert_eq!(f.cursors(), Cursors::default());
        assert_eq!(f.in_flight(), 3);
        // rumqttc retransmits 1 and 2 with their pkids, then writes 3 with a fresh pkid.
        assert_eq!(f.on_publish(1, now), Written::Retransmit { tag: tag(1) });
        assert_eq!(f.on_publish(2, now), Written::Retransmit { tag: tag(2) });
        assert_eq!(f.on_publish(3, now), first(3));
        // The refetch after the cursor reset skips every tracked row.
        assert_eq!(
            f.accept_fetched([1, 2, 3, 4].map(|id| row(id, Cursor::Alert))),
            1
        );
        assert_eq!(f.peek_held().map(|r| r.row_id), Some(4));
        assert_eq!(f.cursors().alert, 4);
        assert_eq!(f.on_puback(2), Acked::Row(2));
        assert_eq!(f.on_puback(1), Acked::Row(1));
        assert_eq!(f.on_puback(3), Acked::Row(3));
        assert_eq!(f.pending_acks(), &[2, 1, 3]);
    }

    #[test]
    fn collision_stash_is_written_after_the_holder_is_acked() {
        let now = Instant::now();
        let mut f = InFlight::new(3);
        submit(&mut f, &[1, 2, 3]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        f.on_publish(3, now);
        // Broker acks 2 out of order; the next request gets pkid 1 again (still taken).
        assert_eq!(f.on_puback(2), Acked::Row(2));
        submit(&mut f, &[4]);
        assert_eq!(f.on_await_ack(1), Stashed::Waiting);
        assert_eq!(f.in_flight(), 3);
        assert_eq!(f.free_slots(), 0);
        // The holder of pkid 1 is acked, then the stashed request is written with pkid 1.
        assert_eq!(f.on_puback(1), Acked::Row(1));
        assert_eq!(f.on_publish(1, now), first(4));
        assert_eq!(f.on_puback(1), Acked::Row(4));
        assert_eq!(f.on_puback(3), Acked::Row(3));
        assert_eq!(f.pending_acks(), &[2, 1, 4, 3]);
        assert_eq!(f.in_flight(), 0);
    }

    #[test]
    fn retransmit_of_the_holder_is_not_the_stash() {
        let now = Instant::now();
        let mut f = InFlight::new(2);
        submit(&mut f, &[1, 2]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        f.on_puback(2);
        submit(&mut f, &[3]);
        assert_eq!(f.on_await_ack(1), Stashed::Waiting);
        // Session resumed: pkid 1 is retransmitted before its PUBACK arrives.
        f.on_connected(true);
        assert_eq!(f.on_publish(1, now), Written::Retransmit { tag: tag(1) });
        assert_eq!(f.on_puback(1), Acked::Row(1));
        assert_eq!(f.on_publish(1, now), first(3));
    }

    #[test]
    fn a_second_collision_loses_the_first_stash() {
        let now = Instant::now();
        let mut f = InFlight::new(4);
        submit(&mut f, &[1, 2]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        f.accept_fetched([row(3, Cursor::Alert), row(4, Cursor::Alert)]);
        f.take_held();
        f.submitted(tag(3));
        f.take_held();
        f.submitted(tag(4));
        assert_eq!(f.cursors().alert, 4);
        assert_eq!(f.on_await_ack(1), Stashed::Waiting);
        assert_eq!(f.on_await_ack(2), Stashed::Replaced { lost: tag(3) });
        assert!(!f.is_tracked(3));
        assert_eq!(f.cursors(), Cursors::default());
        // The rescan hands row 3 out again (and nothing still in flight).
        assert_eq!(
            f.accept_fetched([1, 2, 3, 4].map(|id| row(id, Cursor::Alert))),
            1
        );
        let again = f.take_held().unwrap();
        assert_eq!(again.row_id, 3);
        f.submitted(tag(3));
        f.on_puback(2);
        assert_eq!(f.on_publish(2, now), first(4));
        assert_eq!(
            f.on_publish(3, now),
            Written::First {
                tag: tag(3),
                republish: true
            }
        );
    }

    #[test]
    fn session_lost_republishes_everything_in_flight() {
        let now = Instant::now();
        let mut f = InFlight::new(8);
        f.accept_fetched([
            row(1, Cursor::Alert),
            row(5, Cursor::Milestone),
            row(7, Cursor::Live),
            row(3, Cursor::Backlog),
            row(9, Cursor::Live),
        ]);
        assert_eq!(
            f.cursors(),
            Cursors {
                alert: 1,
                milestone: 5,
                live: 9,
                backlog: 3
            }
        );
        for _ in 0..4 {
            let r = f.take_held().unwrap();
            f.submitted(tag(r.row_id));
        }
        f.submitted(Tag::Status);
        assert_eq!(f.held(), 1);
        f.on_publish(1, now); // row 1
        f.on_publish(2, now); // row 5
        f.on_publish(3, now); // row 7
        assert_eq!(f.on_puback(1), Acked::Row(1));
        // Queued: row 3 and the status; written: 5 and 7; acked: 1; held: 9.
        f.on_connected(false);
        assert_eq!(f.in_flight(), 0);
        assert_eq!(f.held(), 0);
        assert_eq!(f.cursors(), Cursors::default());
        assert!(
            f.is_tracked(1),
            "acknowledged rows stay tracked until deleted"
        );
        for id in [3, 5, 7, 9] {
            assert!(!f.is_tracked(id));
        }
        // A late PUBACK of the dead session acknowledges nothing.
        assert_eq!(f.on_puback(2), Acked::Unknown);
        assert_eq!(
            f.accept_fetched([1, 5, 7, 9, 3].map(|id| row(id, Cursor::Alert))),
            4,
            "every unacknowledged row is handed out again"
        );
        let mut written = Vec::new();
        let mut pkid = 1;
        while let Some(r) = f.take_held() {
            f.submitted(tag(r.row_id));
            written.push(f.on_publish(pkid, now));
            pkid += 1;
        }
        assert_eq!(
            written,
            vec![
                Written::First {
                    tag: tag(5),
                    republish: true
                },
                Written::First {
                    tag: tag(7),
                    republish: true
                },
                Written::First {
                    tag: tag(9),
                    republish: false
                },
                Written::First {
                    tag: tag(3),
                    republish: true
                },
            ]
        );
    }

    #[test]
    fn session_lost_counts_rows_and_drops_the_stash() {
        let now = Instant::now();
        let mut f = InFlight::new(2);
        submit(&mut f, &[1, 2]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        f.on_puback(2);
        submit(&mut f, &[3]);
        f.on_await_ack(1);
        f.submitted(Tag::Status);
        assert_eq!(f.session_lost(), 2);
        assert_eq!(f.in_flight(), 0);
        assert_eq!(f.free_slots(), 2);
        // After a lost session rumqttc starts from a clean state: a fresh pkid 1 is a first write.
        submit(&mut f, &[3]);
        assert_eq!(
            f.on_publish(1, now),
            Written::First {
                tag: tag(3),
                republish: true
            }
        );
        assert_eq!(f.pending_acks(), &[2]);
    }

    #[test]
    fn skipped_and_failed_rows_are_untracked() {
        let mut f = InFlight::new(4);
        f.accept_fetched([row(1, Cursor::Live), row(2, Cursor::Live)]);
        assert_eq!(f.skip_held().map(|r| r.row_id), Some(1));
        assert!(!f.is_tracked(1));
        assert_eq!(f.cursors().live, 2);
        let r = f.take_held().unwrap();
        f.submit_failed(r.row_id);
        assert!(!f.is_tracked(2));
        assert_eq!(f.cursors(), Cursors::default());
        assert_eq!(f.in_flight(), 0);
        assert!(f.skip_held().is_none());
    }

    #[test]
    fn failed_store_ack_keeps_rows_pending() {
        let now = Instant::now();
        let mut f = InFlight::new(4);
        submit(&mut f, &[1, 2]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        f.on_puback(1);
        f.on_puback(2);
        // The store failed: nothing committed; the next attempt sends the same ids.
        assert_eq!(f.pending_acks(), &[1, 2]);
        f.acks_committed(&[1]);
        assert_eq!(f.pending_acks(), &[2]);
        assert!(f.is_tracked(2));
        // Even a lost session keeps acknowledged rows out of the refetch.
        f.on_connected(false);
        assert_eq!(f.accept_fetched([row(2, Cursor::Alert)]), 0);
    }

    #[test]
    fn end_of_outbox_keeps_lost_rows_awaiting_their_write() {
        let now = Instant::now();
        let mut f = InFlight::new(4);
        submit(&mut f, &[1, 2]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        f.on_connected(false);
        // The walk after the reconnect hands both out again, then finds nothing more before
        // rumqttc reports the writes.
        submit(&mut f, &[1, 2]);
        f.end_of_outbox();
        assert_eq!(
            f.on_publish(1, now),
            Written::First {
                tag: tag(1),
                republish: true
            }
        );
        assert_eq!(
            f.on_publish(2, now),
            Written::First {
                tag: tag(2),
                republish: true
            }
        );
    }

    #[test]
    fn end_of_outbox_forgets_lost_rows() {
        let now = Instant::now();
        let mut f = InFlight::new(2);
        submit(&mut f, &[1]);
        f.on_publish(1, now);
        f.on_connected(false);
        // Row 1 vanished from the store meanwhile (expired); the walk ends without it.
        f.end_of_outbox();
        submit(&mut f, &[1]);
        assert_eq!(f.on_publish(1, now), first(1));
    }

    #[test]
    fn oldest_unacked_tracks_written_publishes() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(5);
        let mut f = InFlight::new(4);
        assert_eq!(f.oldest_unacked(), None);
        submit(&mut f, &[1, 2]);
        assert_eq!(
            f.oldest_unacked(),
            None,
            "queued publishes are not written yet"
        );
        f.on_publish(1, t0);
        f.on_publish(2, t1);
        assert_eq!(f.oldest_unacked(), Some(t0));
        f.on_puback(1);
        assert_eq!(f.oldest_unacked(), Some(t1));
        f.on_puback(2);
        assert_eq!(f.oldest_unacked(), None);
    }

    #[test]
    fn connected_releases_held_rows() {
        let mut f = InFlight::new(4);
        f.accept_fetched([row(4, Cursor::Milestone)]);
        assert_eq!(f.held(), 1);
        f.on_connected(true);
        assert_eq!(f.held(), 0);
        assert!(!f.is_tracked(4));
        assert_eq!(f.accept_fetched([row(4, Cursor::Milestone)]), 1);
    }
}
