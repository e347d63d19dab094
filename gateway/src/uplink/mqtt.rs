//! The uplink task: a thin `select!` loop around rumqttc's `EventLoop` and the sans-IO parts.
//!
//! One task owns the `AsyncClient` and the `EventLoop`, so the order of `Outgoing::Publish`
//! events is the order of our submissions ([`super::inflight`]). The `EventLoop` lives inside
//! the poll future, which hands it back when it resolves; the future is only dropped at
//! shutdown or when the client is rebuilt, never cancelled mid-write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing,
    Packet, QoS, StateError, TlsConfiguration, Transport,
};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, error, info, warn};
use waymark_wire::Timestamp;
use waymark_wire::topics::Stream;

use super::backoff::Backoff;
use super::inflight::{Acked, Cursor, FetchedRow, InFlight, Publish, Stashed, Tag, Written};
use super::merge::{self, Plan};
use super::rate::RateLimit;
use super::status::{OfflineDoc, StatusDoc};
use super::{COMPONENT, Settings, Uplink, UplinkError};
use crate::health::{Health, HealthState};
use crate::shutdown::Shutdown;
use crate::store::{Fetch, Lane, LaneCursors, OutboxRow, RowKind, Store};

/// How long PUBACKs are collected before the store deletes their rows in one transaction.
const ACK_DELAY: Duration = Duration::from_millis(20);
/// Acknowledged rows that trigger a store ack at once.
const ACK_BATCH: usize = 64;
/// Wait before asking the store again after it failed.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// Payload bytes one fetch may return (at least one row is returned regardless).
const FETCH_MAX_BYTES: usize = 1 << 20;
/// Rows one fetch may return. More than the in-flight slots: many telemetry rows may go in
/// one publish. Bounds what a fetch decodes (to learn what the rows add to a merged batch).
const FETCH_MAX_ROWS: usize = 256;
/// Longest wait for a telemetry merge deadline (the largest allowed interval), so that a
/// deadline computed from a wall clock far off cannot overflow an `Instant`.
const MAX_MERGE_WAIT: Duration = Duration::from_secs(600);
/// Consecutive `CollisionTimeout`s after which the client is rebuilt (rumqttc #1056).
const COLLISION_REBUILD: u32 = 3;
/// On shutdown: how long to wait for outstanding PUBACKs.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// On shutdown: how long to wait for the offline status and DISCONNECT to be written.
const DISCONNECT_GRACE: Duration = Duration::from_secs(1);
/// While the outbox looks drained, look again this often even without a commit notification
/// (defence in depth: a notification can only be missed if the store notifies without
/// storing a permit).
const IDLE_RECHECK: Duration = Duration::from_secs(5);
/// Shortest PUBACK watchdog: a publish unacknowledged for longer rebuilds the client.
const MIN_PUBACK_TIMEOUT: Duration = Duration::from_secs(300);

type Polled = (EventLoop, Result<Event, ConnectionError>);
type PollFuture = Pin<Box<dyn Future<Output = Polled> + Send>>;

/// Polls the event loop once, after `delay` (the reconnect backoff).
fn poll_after(mut eventloop: EventLoop, delay: Duration) -> PollFuture {
    Box::pin(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let result = eventloop.poll().await;
        (eventloop, result)
    })
}

/// Wall-clock now in UTC ms, for health times (data times come from the gateway clock).
fn now_ms() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            Timestamp::try_from(d.as_millis()).unwrap_or(Timestamp::MAX)
        })
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn earliest(times: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    times.into_iter().flatten().min()
}

/// A fresh client and event loop (a new rumqttc session state).
fn build_client(s: &Settings) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(s.client_id.clone(), s.host.clone(), s.port);
    // All three are validated by `Uplink::new` (rumqttc asserts on them).
    options.set_keep_alive(s.keep_alive);
    options.set_clean_session(false);
    options.set_inflight(s.inflight);
    options.set_max_packet_size(s.max_packet, s.max_packet);
    options.set_last_will(LastWill::new(
        s.topic_status.clone(),
        OfflineDoc::will(&s.vehicle).to_json(),
        QoS::AtLeastOnce,
        true,
    ));
    if let Some((user, password)) = &s.credentials {
        options.set_credentials(user.clone(), password.0.clone());
    }
    if let Some(tls) = &s.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.0.clone(),
        )));
    }
    // Room for every in-flight publish plus the status, the offline status and DISCONNECT:
    // submissions never block, the in-flight bound keeps the channel from filling.
    let (client, mut eventloop) = AsyncClient::new(options, usize::from(s.inflight) + 4);
    eventloop
        .network_options
        .set_connection_timeout(s.connect_timeout_s);
    (client, eventloop)
}

/// A one-line description of a connection error for logs and health (never holds secrets).
/// TLS failures get a sentence saying which side rejected what, then rumqttc's words.
fn describe(e: &ConnectionError) -> String {
    let raw = match e {
        ConnectionError::ConnectionRefused(code) => {
            return format!("broker refused the connection: {code:?}");
        }
        ConnectionError::NetworkTimeout => {
            return "timed out connecting (TCP, TLS handshake or CONNACK)".to_string();
        }
        other => other.to_string(),
    };
    match tls_cause(e) {
        Some(hint) => format!("{hint} ({raw})"),
        None => raw,
    }
}

/// Finds a rustls error in the chain (rumqttc wraps it in `io::Error`s) and explains it.
fn tls_cause(e: &ConnectionError) -> Option<String> {
    use rustls::AlertDescription as Alert;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return Some(match tls {
                rustls::Error::AlertReceived(Alert::CertificateRequired) => {
                    "TLS: the broker requires a client certificate (set mqtt.client_cert_file and \
                     mqtt.client_key_file)"
                        .to_string()
                }
                rustls::Error::AlertReceived(
                    alert @ (Alert::UnknownCA
                    | Alert::BadCertificate
                    | Alert::CertificateUnknown
                    | Alert::CertificateRevoked
                    | Alert::CertificateExpired
                    | Alert::AccessDenied),
                ) => format!("TLS: the broker rejected our client certificate ({alert:?})"),
                rustls::Error::InvalidCertificate(why) => format!(
                    "TLS: the broker's certificate is not trusted with mqtt.ca_file ({why:?})"
                ),
                other => format!("TLS: {other}"),
            });
        }
        next = err.source();
    }
    None
}

struct Driver {
    s: Settings,
    store: Store,
    health: Arc<Health>,
    rng: rand::rngs::StdRng,
    client: AsyncClient,
    inflight: InFlight,
    backoff: Backoff,
    rate: RateLimit,
    puback_timeout: Duration,
    connected: bool,
    /// Rows may exist beyond the cursors (set on commit notifications and reconnects).
    fetch_more: bool,
    /// When the online status document is due (while connected).
    status_at: Option<Instant>,
    /// When collected PUBACKs are handed to the store.
    ack_at: Option<Instant>,
    /// The store failed; do not fetch before this.
    store_retry_at: Option<Instant>,
    /// The drain-rate cap holds the next publish until this.
    rate_at: Option<Instant>,
    /// The oldest waiting telemetry row becomes due at this time.
    merge_at: Option<Instant>,
    /// Shutting down: waiting telemetry goes out now, whatever its age.
    flushing: bool,
    /// The outbox looked drained; look again at this time.
    recheck_at: Option<Instant>,
    collision_timeouts: u32,
    disconnect_written: bool,
}

pub(super) async fn run(uplink: Uplink, shutdown: Shutdown) -> Result<(), UplinkError> {
    let Uplink {
        settings,
        store,
        health,
        rng,
    } = uplink;
    let (client, eventloop) = build_client(&settings);
    let now = Instant::now();
    let stable_after = (settings.keep_alive * 2).max(Duration::from_secs(10));
    let mut d = Driver {
        inflight: InFlight::new(usize::from(settings.inflight)),
        backoff: Backoff::new(settings.reconnect_min, settings.reconnect_max, stable_after),
        rate: RateLimit::new(
            settings.max_messages_per_s,
            settings.max_bytes_per_s,
            now.into_std(),
        ),
        puback_timeout: (settings.keep_alive * 10).max(MIN_PUBACK_TIMEOUT),
        s: settings,
        store,
        health,
        rng,
        client,
        connected: false,
        fetch_more: true,
        status_at: None,
        ack_at: None,
        store_retry_at: None,
        rate_at: None,
        merge_at: None,
        flushing: false,
        recheck_at: None,
        collision_timeouts: 0,
        disconnect_written: false,
    };
    d.set_health(
        HealthState::Down,
        Some(format!("connecting to {}:{}", d.s.host, d.s.port)),
    );
    let committed = d.store.committed();
    let mut poll = poll_after(eventloop, Duration::ZERO);
    loop {
        d.housekeeping(&mut poll).await;
        let wake = d.next_wake();
        tokio::select! {
            biased;
            () = shutdown.recv() => break,
            (eventloop, result) = &mut poll => poll = d.on_polled(eventloop, result),
            () = committed.notified(), if !d.fetch_more => d.fetch_more = true,
            () = sleep_until_opt(wake) => {}
        }
    }
    d.shutdown(poll).await;
    Ok(())
}

impl Driver {
    fn set_health(&self, state: HealthState, detail: Option<String>) {
        self.health.set(COMPONENT, state, detail, now_ms());
    }

    /// The next instant housekeeping has something to do. Each deadline counts only while it
    /// can be acted on, so a past deadline never spins the loop.
    fn next_wake(&self) -> Option<Instant> {
        let can_submit = self.connected && self.inflight.free_slots() > 0;
        let watchdog = self
            .inflight
            .oldest_unacked()
            .map(|t| Instant::from_std(t) + self.puback_timeout);
        earliest([
            self.status_at.filter(|_| can_submit),
            self.ack_at
                .filter(|_| !self.inflight.pending_acks().is_empty()),
            self.store_retry_at
                .filter(|_| can_submit && self.fetch_more),
            self.rate_at
                .filter(|_| can_submit && self.inflight.ready() > 0),
            self.merge_at
                .filter(|_| can_submit && self.inflight.ready() == 0),
            watchdog.filter(|_| self.connected),
        ])
    }

    /// Everything that is not a reaction to one event: store acks, the PUBACK watchdog, the
    /// status document, and filling free in-flight slots from the store.
    async fn housekeeping(&mut self, poll: &mut PollFuture) {
        let now = Instant::now();
        let pending = self.inflight.pending_acks().len();
        if pending > 0 && (pending >= ACK_BATCH || self.ack_at.is_none_or(|t| t <= now)) {
            self.flush_acks().await;
        }
        if !self.connected {
            return;
        }
        if let Some(oldest) = self.inflight.oldest_unacked()
            && now.into_std().saturating_duration_since(oldest) >= self.puback_timeout
        {
            warn!(
                timeout_s = self.puback_timeout.as_secs(),
                "A publish got no PUBACK in time; rebuilding the MQTT client."
            );
            Health::add(&self.health.counters.connection_errors, 1);
            *poll = poll_after(self.rebuild(), Duration::ZERO);
            return;
        }
        if !self.fetch_more && self.recheck_at.is_none_or(|t| t <= now) {
            self.fetch_more = true;
        }
        if self.status_at.is_some_and(|t| t <= now) && self.inflight.free_slots() > 0 {
            self.publish_status().await;
        }
        self.fill().await;
    }

    /// Submits ready publishes, prepares telemetry publishes when the merge plan says so, and
    /// fetches more, while there are free slots and the cap allows.
    async fn fill(&mut self) {
        loop {
            let now = Instant::now();
            if !self.connected || self.inflight.free_slots() == 0 {
                return;
            }
            if let Some(len) = self.inflight.peek_ready().map(|p| p.payload.len()) {
                if len > self.s.max_payload {
                    if let Some(p) = self.inflight.skip_ready() {
                        error!(
                            rows = ?p.row_ids,
                            bytes = len,
                            max_bytes = self.s.max_payload,
                            "Row is larger than the MQTT packet limit and cannot be published; it stays in the store."
                        );
                        self.set_health(
                            HealthState::Degraded,
                            Some(format!(
                                "row {:?} ({len} bytes) exceeds the packet limit",
                                p.row_ids
                            )),
                        );
                    }
                    continue;
                }
                if let Err(wait) = self.rate.try_acquire(now.into_std(), len) {
                    self.rate_at = Some(now + wait);
                    return;
                }
                self.rate_at = None;
                let Some(publish) = self.inflight.take_ready() else {
                    return;
                };
                if !self.submit(publish) {
                    return;
                }
                continue;
            }
            if self.prepare_telemetry() {
                continue;
            }
            if !self.fetch_more || self.store_retry_at.is_some_and(|t| t > now) {
                return;
            }
            let live_since_ms = self.s.clock.now().saturating_sub(self.s.live_window_ms);
            let c = self.inflight.cursors();
            let fetch = Fetch {
                after: LaneCursors {
                    alert: c.alert,
                    milestone: c.milestone,
                    live: c.live,
                    backlog: c.backlog,
                },
                live_since_ms,
                max_rows: FETCH_MAX_ROWS.max(self.inflight.free_slots()),
                max_bytes: FETCH_MAX_BYTES,
            };
            match self.store.fetch(fetch).await {
                Ok(rows) if rows.is_empty() => {
                    self.store_retry_at = None;
                    self.fetch_more = false;
                    self.recheck_at = Some(now + IDLE_RECHECK);
                    self.inflight.end_of_outbox();
                    return;
                }
                Ok(rows) => {
                    self.store_retry_at = None;
                    let rows: Vec<FetchedRow> = rows
                        .into_iter()
                        .map(|r| self.fetched(r, live_since_ms))
                        .collect();
                    self.inflight.accept_fetched(rows);
                }
                Err(e) => {
                    warn!(error = %e, "Store fetch failed; retrying.");
                    self.store_retry_at = Some(now + STORE_RETRY);
                    return;
                }
            }
        }
    }

    /// Hands one publish to the client; false if the client refused it (its rows are
    /// fetched again later).
    fn submit(&mut self, publish: Publish) -> bool {
        let topic = match publish.stream {
            Stream::Events => &self.s.topic_events,
            _ => &self.s.topic_telemetry,
        };
        let tag = publish.tag();
        match self
            .client
            .try_publish(topic.as_str(), QoS::AtLeastOnce, false, publish.payload)
        {
            Ok(()) => {
                self.inflight.submitted(tag);
                true
            }
            Err(e) => {
                error!(rows = ?tag.row_ids(), error = %e, "MQTT client refused a publish.");
                self.inflight.submit_failed(tag.row_ids());
                false
            }
        }
    }

    /// Asks the merge plan about the waiting telemetry rows. Returns true when it prepared a
    /// publish; otherwise notes when to ask again.
    fn prepare_telemetry(&mut self) -> bool {
        let now = self.s.clock.now();
        let plan = self
            .s
            .merge
            .plan(&self.inflight.candidates(), now, self.flushing);
        match plan {
            Plan::Idle => {
                self.merge_at = None;
                false
            }
            Plan::WaitUntil { at_ms } => {
                let wait = u64::try_from(at_ms.saturating_sub(now)).unwrap_or(0);
                self.merge_at =
                    Some(Instant::now() + Duration::from_millis(wait).min(MAX_MERGE_WAIT));
                false
            }
            Plan::Publish { rows, merge } => {
                self.merge_at = None;
                let rows = self.inflight.take_waiting(rows);
                if merge {
                    self.merge_rows(rows);
                } else {
                    for row in rows {
                        self.inflight.prepared(Publish::single(row));
                    }
                }
                true
            }
        }
    }

    /// Merges telemetry rows into one publish; if that fails (never expected: the plan keeps
    /// groups within the limits), each row goes alone as stored.
    fn merge_rows(&mut self, rows: Vec<FetchedRow>) {
        let merged = merge::merge(
            rows.iter().map(|r| r.payload.as_slice()),
            self.s.merge.budget(),
        );
        let row_ids: Vec<i64> = rows.iter().map(|r| r.row_id).collect();
        match merged {
            Ok(payload) => {
                debug!(
                    rows = row_ids.len(),
                    bytes = payload.len(),
                    stored_bytes = rows.iter().map(|r| r.payload.len()).sum::<usize>(),
                    "Merged telemetry rows into one publish."
                );
                self.inflight.prepared(Publish {
                    row_ids,
                    stream: Stream::Telemetry,
                    payload,
                });
            }
            Err(e) => {
                warn!(rows = ?row_ids, error = %e, "Telemetry rows could not be merged; publishing each as stored.");
                for row in rows {
                    self.inflight.prepared(Publish::single(row));
                }
            }
        }
    }

    /// A store row as the in-flight table holds it. A telemetry row that may be merged is
    /// decoded to learn its cost; one that does not decode is counted and published alone.
    fn fetched(&self, row: OutboxRow, live_since_ms: Timestamp) -> FetchedRow {
        let cursor = match row.lane {
            Lane::Alert => Cursor::Alert,
            Lane::Milestone => Cursor::Milestone,
            Lane::Telemetry if row.created_ms >= live_since_ms => Cursor::Live,
            Lane::Telemetry => Cursor::Backlog,
        };
        let stream = match row.kind {
            RowKind::Event => Stream::Events,
            RowKind::Telemetry => Stream::Telemetry,
        };
        let cost = if stream == Stream::Telemetry
            && self.s.merge.merging()
            && !self.inflight.is_tracked(row.row_id)
        {
            match merge::row_cost(&row.payload) {
                Ok(cost) => Some(cost),
                Err(e) => {
                    warn!(
                        row_id = row.row_id,
                        error = %e,
                        "Telemetry row does not decode; publishing it alone as stored."
                    );
                    Health::add(&self.health.counters.telemetry_rows_undecodable, 1);
                    None
                }
            }
        } else {
            None
        };
        FetchedRow {
            row_id: row.row_id,
            cursor,
            stream,
            payload: row.payload,
            created_ms: row.created_ms,
            cost,
        }
    }

    async fn publish_status(&mut self) {
        let stats = match self.store.stats().await {
            Ok(stats) => Some(stats),
            Err(e) => {
                warn!(error = %e, "Store stats failed; publishing the status without backlog.");
                None
            }
        };
        let doc = StatusDoc::online(
            &self.s.vehicle,
            self.s.clock.now(),
            stats.as_ref(),
            self.health.counters.snapshot(),
            self.health.components(),
            self.s.clock.source(),
        );
        self.status_at = Some(Instant::now() + self.s.status_interval);
        let payload = doc.to_json();
        if payload.len() > self.s.max_payload {
            warn!(
                bytes = payload.len(),
                "Status document exceeds the packet limit; not published."
            );
            return;
        }
        let topic = self.s.topic_status.as_str();
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, true, payload)
        {
            Ok(()) => self.inflight.submitted(Tag::Status),
            Err(e) => warn!(error = %e, "MQTT client refused the status publish."),
        }
    }

    /// Hands collected PUBACKs to the store, which deletes the rows.
    async fn flush_acks(&mut self) {
        let ids = self.inflight.pending_acks().to_vec();
        if ids.is_empty() {
            self.ack_at = None;
            return;
        }
        match self.store.ack(ids.clone(), self.s.clock.now()).await {
            Ok(()) => {
                self.inflight.acks_committed(&ids);
                self.ack_at = None;
            }
            Err(e) => {
                warn!(rows = ids.len(), error = %e, "Store ack failed; retrying.");
                self.ack_at = Some(Instant::now() + STORE_RETRY);
            }
        }
    }

    /// A new client and event loop; everything in flight is lost with the old session.
    fn rebuild(&mut self) -> EventLoop {
        let (client, eventloop) = build_client(&self.s);
        self.client = client;
        let lost = self.inflight.session_lost();
        self.connected = false;
        self.status_at = None;
        self.collision_timeouts = 0;
        debug!(lost, "MQTT client rebuilt.");
        eventloop
    }

    fn on_polled(
        &mut self,
        mut eventloop: EventLoop,
        result: Result<Event, ConnectionError>,
    ) -> PollFuture {
        match result {
            Ok(event) => {
                self.on_event(event, &mut eventloop);
                poll_after(eventloop, Duration::ZERO)
            }
            Err(e) => {
                // Events rumqttc buffered before the failure belong to that connection (a
                // PUBACK read in the same batch, a publish written just before): replay them
                // before the error, or the next CONNACK would be followed by stale events.
                while let Some(event) = eventloop.state.events.pop_front() {
                    self.on_event(event, &mut eventloop);
                }
                let delay = self.on_error(&e);
                if self.collision_timeouts >= COLLISION_REBUILD {
                    warn!(
                        timeouts = self.collision_timeouts,
                        "Repeated packet id collision timeouts; rebuilding the MQTT client."
                    );
                    drop(eventloop);
                    return poll_after(self.rebuild(), delay);
                }
                poll_after(eventloop, delay)
            }
        }
    }

    fn on_event(&mut self, event: Event, eventloop: &mut EventLoop) {
        let now = Instant::now();
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => self.on_connack(ack, eventloop, now),
            Event::Incoming(Packet::PubAck(ack)) => match self.inflight.on_puback(ack.pkid) {
                Acked::Rows(_) => {
                    Health::add(&self.health.counters.pubacks, 1);
                    self.collision_timeouts = 0;
                    self.ack_at.get_or_insert(now + ACK_DELAY);
                }
                Acked::Status => {}
                Acked::Unknown => debug!(pkid = ack.pkid, "PUBACK for an unknown packet id."),
            },
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                match self.inflight.on_publish(pkid, now.into_std()) {
                    Written::First {
                        tag: Tag::Rows { bytes, .. },
                        republish,
                    } => {
                        self.count_publish(bytes, republish);
                    }
                    Written::Retransmit {
                        tag: Tag::Rows { bytes, .. },
                    } => {
                        self.count_publish(bytes, true);
                    }
                    Written::First {
                        tag: Tag::Status, ..
                    }
                    | Written::Retransmit { .. } => {}
                    Written::Unknown => {
                        warn!(
                            pkid,
                            "Publish written for a packet id with nothing submitted."
                        );
                    }
                }
            }
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => match self.inflight.on_await_ack(pkid) {
                Stashed::Waiting => debug!(pkid, "Packet id collision; waiting for its PUBACK."),
                Stashed::Replaced { lost } => {
                    warn!(
                        pkid,
                        ?lost,
                        "rumqttc dropped a stashed publish; it will be republished."
                    );
                    self.fetch_more = true;
                }
                Stashed::Unknown => {
                    warn!(pkid, "Collision for a packet id with nothing submitted.")
                }
            },
            Event::Outgoing(Outgoing::Disconnect) => self.disconnect_written = true,
            _ => {}
        }
    }

    fn count_publish(&self, bytes: usize, republish: bool) {
        let c = &self.health.counters;
        Health::add(&c.publishes, 1);
        Health::add(&c.bytes_published, u64::try_from(bytes).unwrap_or(u64::MAX));
        if republish {
            Health::add(&c.republishes, 1);
        }
    }

    fn on_connack(&mut self, ack: ConnAck, eventloop: &mut EventLoop, now: Instant) {
        if !ack.session_present {
            // rumqttc cleared its pending list but keeps a stashed collision (#1056), which
            // would block every new publish until a CollisionTimeout; that request is gone
            // with the session.
            eventloop.state.collision = None;
        }
        let in_flight = self.inflight.in_flight();
        self.inflight.on_connected(ack.session_present);
        self.connected = true;
        self.backoff.connected(now.into_std());
        self.fetch_more = true;
        self.status_at = Some(now);
        self.rate_at = None;
        Health::add(&self.health.counters.connects, 1);
        self.set_health(HealthState::Ok, None);
        info!(
            host = %self.s.host,
            port = self.s.port,
            session_present = ack.session_present,
            in_flight,
            "Connected to the MQTT broker."
        );
    }

    /// Returns the delay before the next attempt.
    fn on_error(&mut self, e: &ConnectionError) -> Duration {
        let was_connected = std::mem::replace(&mut self.connected, false);
        self.status_at = None;
        self.rate_at = None;
        if matches!(e, ConnectionError::MqttState(StateError::CollisionTimeout)) {
            self.collision_timeouts += 1;
        }
        Health::add(&self.health.counters.connection_errors, 1);
        let delay = self
            .backoff
            .next_delay(Instant::now().into_std(), &mut self.rng);
        let detail = describe(e);
        let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        if was_connected {
            warn!(error = %detail, retry_in_ms, in_flight = self.inflight.in_flight(), "MQTT connection lost.");
        } else {
            warn!(host = %self.s.host, port = self.s.port, error = %detail, retry_in_ms, "MQTT connection failed.");
        }
        self.set_health(HealthState::Down, Some(detail));
        delay
    }

    /// Publishes the telemetry waiting for its merge interval, waits briefly for outstanding
    /// PUBACKs, publishes the offline status, disconnects.
    async fn shutdown(mut self, mut poll: PollFuture) {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        self.flushing = true;
        self.fetch_more = true;
        self.fill().await;
        while self.connected && self.inflight.in_flight() > 0 {
            tokio::select! {
                (eventloop, result) = &mut poll => {
                    poll = self.on_polled(eventloop, result);
                    self.fill().await;
                }
                () = sleep_until(deadline) => break,
            }
        }
        self.flush_acks().await;
        let unacked = self.inflight.in_flight();
        if self.connected {
            let doc = OfflineDoc::shutdown(&self.s.vehicle, self.s.clock.now()).to_json();
            let topic = self.s.topic_status.as_str();
            match self.client.try_publish(topic, QoS::AtLeastOnce, true, doc) {
                Ok(()) => self.inflight.submitted(Tag::Status),
                Err(e) => warn!(error = %e, "MQTT client refused the offline status."),
            }
            if let Err(e) = self.client.try_disconnect() {
                warn!(error = %e, "MQTT client refused the disconnect.");
            }
            let deadline = Instant::now() + DISCONNECT_GRACE;
            while self.connected && !self.disconnect_written {
                tokio::select! {
                    (eventloop, result) = &mut poll => {
                        poll = self.on_polled(eventloop, result);
                    }
                    () = sleep_until(deadline) => break,
                }
            }
            self.flush_acks().await;
        }
        info!(
            in_flight = unacked,
            clean = self.disconnect_written,
            "Uplink stopped; unacknowledged rows stay in the store."
        );
        self.set_health(HealthState::Down, Some("stopped".to_string()));
    }
}
