//! `jsonl`: on-vehicle apps push readings and events as newline-delimited JSON over a Unix
//! socket and/or a loopback TCP port. `docs/jsonl.md` is the protocol's user documentation.
//!
//! ```text
//! accept ─► connection task ─┬─ reader: frame → rate limit → parse ─┬─ reading ─► pipeline (mpsc, waits when full)
//!                            │                                       ├─ event ───► spawned Store::append_event
//!                            │                                       └─ reject    │
//!                            │            answers in line order (≤ 64 queued) ◄──┘
//!                            └─ writer: awaits each answer in turn, writes it
//! ```
//!
//! Invariants:
//! - **Commit before ack.** An event is answered `ok:true` only after `Store::append_event`
//!   resolved `Ok` (after COMMIT). A failed append is answered `ok:false` with the event's id,
//!   so the producer can retry with it and the store's dedup makes the retry exactly-once.
//! - **Line order.** Answers leave each connection in the order of the lines they answer; up
//!   to [`MAX_IN_FLIGHT`] of them may be pending, so several events commit concurrently (one
//!   producer is not held to one fsync per event) while readings between them keep flowing.
//! - **No loss of what was accepted.** The readings parsed from one chunk of input are handed
//!   to the pipeline channel together (one wake-up of the pipeline per chunk, not per
//!   reading); when the channel is full the connection waits, which stops reading the socket
//!   (backpressure to the producer). Rejections never affect other lines of the connection.
//! - **Bounded.** Per connection: one line buffer of at most `max_line_bytes + 2` bytes
//!   (longer lines are skipped as they arrive), the readings of one buffer's worth of input,
//!   at most `MAX_IN_FLIGHT` pending answers, at most `max_lines_per_s` lines per second
//!   (excess waits). Per source: `max_connections`.
//! - **Shutdown.** New connections are refused; each connection stops reading, its in-flight
//!   events finish committing and are answered (a producer that does not read its answers is
//!   given [`SHUTDOWN_WRITE_GRACE`]); the source returns when every connection has ended.
//!   Readings still unread, or parsed but waiting for a full pipeline, are not taken.

mod framer;
mod line;
mod rate;
#[cfg(test)]
mod tests;

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tracing::{debug, info, warn};
use uuid::Uuid;
use waymark_wire::Reading;

use self::framer::{Frame, LineFramer};
use self::line::{Parsed, parse_line};
use self::rate::RateLimiter;
use super::{EventSink, Source, SourceContext, SourceError};
use crate::clock::{Clock, system_ms};
use crate::config::JsonlConfig;
use crate::health::{Health, HealthState};
use crate::shutdown::Shutdown;
use crate::store::Accepted;

pub use self::line::{
    MAX_DATA_BYTES, MAX_SIGNAL_BYTES, MAX_SUBJECT_BYTES, MAX_TEXT_BYTES, MAX_TYPE_BYTES,
    MAX_UNIT_BYTES,
};

/// Answers (events in flight, rejections) that may be pending per connection before the
/// connection stops reading until the oldest is written.
pub const MAX_IN_FLIGHT: usize = 64;
/// Mode of the Unix socket file: owner and group may connect.
pub const SOCKET_MODE: u32 = 0o660;
/// After shutdown began, how long a connection may still wait for its producer to take the
/// remaining answers before it is closed without them.
pub const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. out of file descriptors) before the next attempt.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Answers are collected and written together up to this many bytes.
const WRITE_BATCH_BYTES: usize = 16 * 1024;

/// Why a `jsonl` source could not start.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    /// Neither `unix_socket` nor `tcp_listen` is set (the config validator normally says so
    /// first).
    #[error("jsonl source `{name}`: neither `unix_socket` nor `tcp_listen` is set")]
    NoListener {
        /// The source's name.
        name: String,
    },
    /// `tcp_listen` is not a loopback address: the protocol has no authentication, so it is
    /// only offered to processes on the vehicle unit itself.
    #[error("jsonl `tcp_listen` {addr} is not a loopback address")]
    NotLoopback {
        /// The configured address.
        addr: SocketAddr,
    },
    /// The TCP address could not be bound (in use, not local).
    #[error("cannot listen on {addr}")]
    BindTcp {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The Unix socket could not be created (missing directory, permissions).
    #[error("cannot listen on {}", path.display())]
    BindUnix {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Something other than a socket exists at the socket path; it is left alone.
    #[error("{} exists and is not a socket; not removing it", path.display())]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// Another process accepts connections on the socket path (a second gateway?).
    #[error("{} is in use by another process", path.display())]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// A stale socket file could not be inspected or removed.
    #[error("cannot remove stale socket {}", path.display())]
    StaleSocket {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The socket file's mode could not be set to [`SOCKET_MODE`].
    #[error("cannot set mode 0660 on {}", path.display())]
    Permissions {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A bound `jsonl` source, ready to [`run`](Source::run).
#[derive(Debug)]
pub struct Jsonl {
    settings: Settings,
    unix: Option<(UnixListener, SocketFile)>,
    tcp: Option<TcpListener>,
}

/// The per-source settings every connection needs.
#[derive(Debug, Clone)]
struct Settings {
    /// `source` of every reading.
    name: String,
    /// Health component and log name, `jsonl:<name>`.
    component: String,
    max_line_bytes: usize,
    max_lines_per_s: u32,
    max_connections: usize,
}

impl Jsonl {
    /// Binds the configured listeners: removes a stale socket file (only if it is a socket and
    /// nobody accepts on it), creates the socket with mode 0660, binds the loopback TCP port.
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    /// [`JsonlError`] saying which listener failed and why.
    pub fn bind(cfg: &JsonlConfig) -> Result<Self, JsonlError> {
        if cfg.unix_socket.is_none() && cfg.tcp_listen.is_none() {
            return Err(JsonlError::NoListener {
                name: cfg.name.clone(),
            });
        }
        let tcp = cfg.tcp_listen.map(bind_tcp).transpose()?;
        let unix = cfg.unix_socket.as_deref().map(bind_unix).transpose()?;
        Ok(Self {
            settings: Settings {
                name: cfg.name.clone(),
                component: format!("{}:{}", Self::NAME, cfg.name),
                max_line_bytes: cfg.max_line_bytes,
                max_lines_per_s: cfg.max_lines_per_s,
                max_connections: cfg.max_connections,
            },
            unix,
            tcp,
        })
    }

    /// The bound TCP address (the actual port when the config said port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The Unix socket path, if one is configured.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix.as_ref().map(|(_, f)| f.path.as_path())
    }

    /// Accepts connections until `shutdown`, then waits for every connection to finish.
    pub(crate) async fn serve<E: EventSink>(
        self,
        readings: mpsc::Sender<Reading>,
        events: E,
        health: Arc<Health>,
        clock: Clock,
        shutdown: Shutdown,
    ) -> Result<(), SourceError> {
        let Jsonl {
            settings,
            unix,
            tcp,
        } = self;
        let (unix, socket_file) = unix.map_or((None, None), |(l, f)| (Some(l), Some(f)));
        let listening = describe(socket_file.as_ref(), tcp.as_ref());
        info!(component = %settings.component, %listening, "Accepting JSON lines.");
        health.set(&settings.component, HealthState::Ok, None, system_ms());
        let shared = Arc::new(Shared {
            settings,
            readings,
            events,
            health,
            clock,
            store_degraded: AtomicBool::new(false),
        });

        let mut conns: JoinSet<Result<(), PipelineClosed>> = JoinSet::new();
        let mut stop = pin!(shutdown.recv());
        let result = loop {
            tokio::select! {
                biased;
                () = &mut stop => break Ok(()),
                Some(joined) = conns.join_next(), if !conns.is_empty() => {
                    if let Err(e) = connection_ended(joined, &shutdown) {
                        break Err(e);
                    }
                }
                accepted = accept_unix(unix.as_ref()), if unix.is_some() => match accepted {
                    Ok((stream, _)) => {
                        if let Err(e) = reap(&mut conns, &shutdown) {
                            break Err(e);
                        }
                        if conns.len() >= shared.settings.max_connections {
                            refuse(&shared, |m| stream.try_write(m), "unix");
                        } else {
                            let (r, w) = stream.into_split();
                            conns.spawn(connection(r, w, shared.clone(), shutdown.clone(), "unix".into()));
                        }
                    }
                    Err(e) => accept_failed(&shared, &e, &shutdown).await,
                },
                accepted = accept_tcp(tcp.as_ref()), if tcp.is_some() => match accepted {
                    Ok((stream, peer)) => {
                        if let Err(e) = reap(&mut conns, &shutdown) {
                            break Err(e);
                        }
                        if conns.len() >= shared.settings.max_connections {
                            refuse(&shared, |m| stream.try_write(m), &peer.to_string());
                        } else {
                            let (r, w) = stream.into_split();
                            conns.spawn(connection(r, w, shared.clone(), shutdown.clone(), peer.to_string()));
                        }
                    }
                    Err(e) => accept_failed(&shared, &e, &shutdown).await,
                },
            }
        };
        // Refuse new connections (and remove the socket file) before waiting for the others.
        drop(unix);
        drop(socket_file);
        drop(tcp);
        if result.is_err() {
            // The pipeline is gone without a shutdown: nothing the connections read can go
            // anywhere. Events already committing finish in their own tasks; their producers
            // get no answer and retry with the same id.
            conns.abort_all();
        }
        while let Some(joined) = conns.join_next().await {
            if let Err(e) = connection_ended(joined, &shutdown) {
                debug!(component = %shared.settings.component, error = %e, "Connection ended while stopping.");
            }
        }
        let detail = match &result {
            Ok(()) => "stopped".to_string(),
            Err(e) => e.to_string(),
        };
        shared.health.set(
            &shared.settings.component,
            HealthState::Down,
            Some(detail),
            system_ms(),
        );
        info!(component = %shared.settings.component, "Stopped accepting JSON lines.");
        result
    }
}

impl Source for Jsonl {
    const NAME: &'static str = "jsonl";

    fn component(&self) -> String {
        self.settings.component.clone()
    }

    async fn run(self, ctx: SourceContext, shutdown: Shutdown) -> Result<(), SourceError> {
        self.serve(ctx.readings, ctx.store, ctx.health, ctx.clock, shutdown)
            .await
    }
}

/// State shared by a source's connections.
struct Shared<E> {
    settings: Settings,
    readings: mpsc::Sender<Reading>,
    events: E,
    health: Arc<Health>,
    /// Stamps lines that carry no `time` (their receive time; monotonic until the time is
    /// known, see [`crate::clock`]).
    clock: Clock,
    /// Whether health currently says the store refused an event (so the next success can
    /// clear it without taking the health lock on every event).
    store_degraded: AtomicBool,
}

/// The pipeline channel closed under a connection.
#[derive(Debug)]
struct PipelineClosed;

/// Removes the socket file when the source stops, if it is still the one we created.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev_ino: Option<(u64, u64)>,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && Some((m.dev(), m.ino())) == self.dev_ino);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            debug!(path = %self.path.display(), error = %e, "Could not remove the socket file.");
        }
    }
}

fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, JsonlError> {
    if !addr.ip().is_loopback() {
        return Err(JsonlError::NotLoopback { addr });
    }
    let bind_err = |source| JsonlError::BindTcp { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    TcpListener::from_std(std_listener).map_err(bind_err)
}

fn bind_unix(path: &Path) -> Result<(UnixListener, SocketFile), JsonlError> {
    let path = path.to_path_buf();
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(JsonlError::SocketInUse { path });
            }
            std::fs::remove_file(&path).map_err(|source| JsonlError::StaleSocket {
                path: path.clone(),
                source,
            })?;
            info!(path = %path.display(), "Removed a stale socket file.");
        }
        Ok(_) => return Err(JsonlError::NotASocket { path }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(JsonlError::StaleSocket { path, source }),
    }
    let bind_err = |source| JsonlError::BindUnix {
        path: path.clone(),
        source,
    };
    let std_listener = std::os::unix::net::UnixListener::bind(&path).map_err(bind_err)?;
    // From here on the guard removes the file if anything below fails.
    let mut file = SocketFile {
        path: path.clone(),
        dev_ino: None,
    };
    let meta = std::fs::symlink_metadata(&path).map_err(bind_err)?;
    file.dev_ino = Some((meta.dev(), meta.ino()));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(
        |source| JsonlError::Permissions {
            path: path.clone(),
            source,
        },
    )?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let listener = UnixListener::from_std(std_listener).map_err(bind_err)?;
    Ok((listener, file))
}

fn describe(unix: Option<&SocketFile>, tcp: Option<&TcpListener>) -> String {
    let mut parts = Vec::new();
    if let Some(f) = unix {
        parts.push(f.path.display().to_string());
    }
    if let Some(addr) = tcp.and_then(|l| l.local_addr().ok()) {
        parts.push(addr.to_string());
    }
    parts.join(" and ")
}

async fn accept_unix(
    l: Option<&UnixListener>,
) -> io::Result<(tokio::net::UnixStream, tokio::net::unix::SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn accept_tcp(l: Option<&TcpListener>) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// `accept` failed (descriptor limit, aborted handshake): log and pause briefly.
async fn accept_failed<E>(shared: &Shared<E>, e: &io::Error, shutdown: &Shutdown) {
    warn!(component = %shared.settings.component, error = %e, "Accepting a connection failed.");
    tokio::select! {
        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
        () = shutdown.recv() => {}
    }
}

/// Over the connection limit: one answer line, written without waiting (a fresh socket's send
/// buffer is empty), then the connection is closed.
fn refuse<E>(shared: &Shared<E>, try_write: impl FnOnce(&[u8]) -> io::Result<usize>, peer: &str) {
    let limit = shared.settings.max_connections;
    warn!(component = %shared.settings.component, peer, limit, "Connection refused: too many connections.");
    let mut msg = answer_json(&Answer::rejected(
        0,
        &format!("too many connections (limit {limit})"),
    ));
    msg.push(b'\n');
    if let Err(e) = try_write(&msg) {
        debug!(error = %e, "Could not tell the refused connection why.");
    }
}

/// Collects finished connections without waiting.
fn reap(
    conns: &mut JoinSet<Result<(), PipelineClosed>>,
    shutdown: &Shutdown,
) -> Result<(), SourceError> {
    while let Some(joined) = conns.try_join_next() {
        connection_ended(joined, shutdown)?;
    }
    Ok(())
}

fn connection_ended(
    joined: Result<Result<(), PipelineClosed>, JoinError>,
    shutdown: &Shutdown,
) -> Result<(), SourceError> {
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(PipelineClosed)) if shutdown.is_shutdown() => Ok(()),
        Ok(Err(PipelineClosed)) => Err(SourceError::PipelineClosed),
        Err(e) => {
            warn!(error = %e, "A connection task failed.");
            Ok(())
        }
    }
}

/// What the writer must answer, in line order.
enum Pending<Err> {
    /// A rejected line.
    Rejected { line: u64, error: String },
    /// An event being committed.
    Event {
        line: u64,
        id: Uuid,
        commit: JoinHandle<Result<Accepted, Err>>,
    },
}

/// One connection: a reader and a writer, joined in one task.
async fn connection<R, W, E>(
    reader: R,
    writer: W,
    shared: Arc<Shared<E>>,
    shutdown: Shutdown,
    peer: String,
) -> Result<(), PipelineClosed>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    E: EventSink,
{
    debug!(component = %shared.settings.component, %peer, "Connection opened.");
    let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
    let (read, ()) = tokio::join!(
        read_lines(reader, tx, &shared, &shutdown),
        write_answers(writer, rx, &shared, &shutdown)
    );
    debug!(component = %shared.settings.component, %peer, "Connection closed.");
    read
}

/// Reads, frames, rate-limits and parses lines; hands readings to the pipeline, events to the
/// store and answers to the writer.
///
/// Readings parsed from one chunk of input are handed over together (before the next read,
/// and before anything that may wait), so the pipeline task wakes once per chunk rather than
/// once per reading.
async fn read_lines<R, E>(
    mut reader: R,
    answers: mpsc::Sender<Pending<E::Error>>,
    shared: &Shared<E>,
    shutdown: &Shutdown,
) -> Result<(), PipelineClosed>
where
    R: AsyncRead + Unpin,
    E: EventSink,
{
    let s = &shared.settings;
    let mut framer = LineFramer::new(s.max_line_bytes);
    let mut limiter = RateLimiter::new(s.max_lines_per_s);
    let mut batch: Vec<Reading> = Vec::new();
    let mut stop = pin!(shutdown.recv());
    loop {
        if !deliver(&mut batch, shared, stop.as_mut()).await? {
            return Ok(());
        }
        let read = tokio::select! {
            biased;
            () = &mut stop => return Ok(()),
            read = reader.read(framer.space()) => read,
        };
        let eof = match read {
            Ok(0) => true,
            Ok(n) => {
                framer.filled(n);
                false
            }
            Err(e) => {
                debug!(component = %s.component, error = %e, "Connection read failed.");
                true
            }
        };
        // One clock reading per chunk: the receive time of lines without `time`, and the
        // rate limiter's `now` (a stale `now` only errs towards waiting).
        let mut now = tokio::time::Instant::now().into_std();
        let received_ms = shared.clock.now();
        while let Some(frame) = framer.next_or_last(eof) {
            if let Err(at) = limiter.check(now) {
                if !deliver(&mut batch, shared, stop.as_mut()).await? {
                    return Ok(());
                }
                let mut wait_until = at;
                loop {
                    tokio::select! {
                        biased;
                        () = &mut stop => return Ok(()),
                        () = tokio::time::sleep_until(tokio::time::Instant::from_std(wait_until)) => {}
                    }
                    now = tokio::time::Instant::now().into_std();
                    match limiter.check(now) {
                        Ok(()) => break,
                        Err(at) => wait_until = at,
                    }
                }
            }
            let (number, parsed) = match frame {
                Frame::Line { number, bytes } => (number, parse_line(bytes, &s.name, received_ms)),
                Frame::TooLong { number, len } => (
                    number,
                    Err(line::LineError(format!(
                        "line too long: {len} bytes, the limit is {} (skipped)",
                        s.max_line_bytes
                    ))),
                ),
            };
            let pending = match parsed {
                Ok(Parsed::Blank) => continue,
                Ok(Parsed::Reading(r)) => {
                    batch.push(r);
                    continue;
                }
                Ok(Parsed::Event(ev)) => {
                    let id = ev.id;
                    let sink = shared.events.clone();
                    let commit = tokio::spawn(async move { sink.append_event(ev).await });
                    Pending::Event {
                        line: number,
                        id,
                        commit,
                    }
                }
                Err(e) => {
                    Health::add(&shared.health.counters.lines_rejected, 1);
                    debug!(component = %s.component, line = number, error = %e, "Line rejected.");
                    Pending::Rejected {
                        line: number,
                        error: e.0,
                    }
                }
            };
            // Queue the answer; with MAX_IN_FLIGHT answers pending this waits, so hand over
            // the readings first.
            let pending = match answers.try_send(pending) {
                Ok(()) => continue,
                Err(TrySendError::Full(p) | TrySendError::Closed(p)) => p,
            };
            if !deliver(&mut batch, shared, stop.as_mut()).await? {
                return Ok(());
            }
            if answers.send(pending).await.is_err() {
                // The writer only stops after this sender is dropped.
                debug!(component = %s.component, "Answer writer gone.");
            }
        }
        if eof {
            deliver(&mut batch, shared, stop.as_mut()).await?;
            return Ok(());
        }
    }
}

/// Hands `batch` to the pipeline in order, waiting for room while the channel is full (so
/// the connection reads nothing meanwhile). `Ok(false)`: shutdown began while waiting, and
/// the readings not yet handed over are not taken.
async fn deliver<E>(
    batch: &mut Vec<Reading>,
    shared: &Shared<E>,
    mut stop: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<bool, PipelineClosed> {
    let readings = &shared.readings;
    let mut pending = batch.drain(..);
    while let Some(r) = pending.next() {
        match readings.try_send(r) {
            Ok(()) => {}
            Err(TrySendError::Full(r)) => {
                tokio::select! {
                    biased;
                    permit = readings.reserve() => match permit {
                        Ok(p) => p.send(r),
                        Err(_) => return Err(PipelineClosed),
                    },
                    () = stop.as_mut() => {
                        let lost = 1 + pending.len();
                        debug!(component = %shared.settings.component, lost, "Shutdown while the pipeline was full; readings not taken.");
                        return Ok(false);
                    }
                }
            }
            Err(TrySendError::Closed(_)) => return Err(PipelineClosed),
        }
    }
    Ok(true)
}

/// Writes answers in line order, each as soon as it (and everything before it) is known.
/// Answers that are ready together go out in one write; whatever is collected is written
/// before waiting for anything (the next line, an uncommitted event).
async fn write_answers<W, E>(
    writer: W,
    mut pending: mpsc::Receiver<Pending<E::Error>>,
    shared: &Shared<E>,
    shutdown: &Shutdown,
) where
    W: AsyncWrite + Unpin,
    E: EventSink,
{
    let mut out = Output {
        writer,
        buf: Vec::with_capacity(4096),
        broken: false,
    };
    loop {
        let next = match pending.try_recv() {
            Ok(p) => p,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                out.flush(shared, shutdown).await;
                match pending.recv().await {
                    Some(p) => p,
                    None => break,
                }
            }
        };
        let answer = match next {
            Pending::Rejected { line, error } => answer_json(&Answer::rejected(line, &error)),
            Pending::Event { line, id, commit } => {
                if !commit.is_finished() {
                    out.flush(shared, shutdown).await;
                }
                match commit.await {
                    Ok(Ok(acc)) => {
                        store_ok(shared);
                        answer_json(&Answer::accepted(line, &acc))
                    }
                    Ok(Err(e)) => {
                        store_failed(shared, &e);
                        answer_json(&Answer::failed(line, id, &e.to_string()))
                    }
                    Err(e) => {
                        answer_json(&Answer::failed(line, id, &format!("internal error: {e}")))
                    }
                }
            }
        };
        out.push(&answer);
        if out.buf.len() >= WRITE_BATCH_BYTES {
            out.flush(shared, shutdown).await;
        }
    }
    out.flush(shared, shutdown).await;
    if !out.broken
        && let Err(e) = out.writer.shutdown().await
    {
        debug!(component = %shared.settings.component, error = %e, "Closing the connection failed.");
    }
}

/// The answer side of a connection.
struct Output<W> {
    writer: W,
    /// Answers collected but not yet written.
    buf: Vec<u8>,
    /// A write failed: the producer is gone. Answers are still produced (so every commit is
    /// awaited) but dropped.
    broken: bool,
}

impl<W: AsyncWrite + Unpin> Output<W> {
    fn push(&mut self, answer: &[u8]) {
        if !self.broken {
            self.buf.extend_from_slice(answer);
            self.buf.push(b'\n');
        }
    }

    async fn flush<E>(&mut self, shared: &Shared<E>, shutdown: &Shutdown) {
        if self.broken || self.buf.is_empty() {
            return;
        }
        if let Err(e) = write_bounded(&mut self.writer, &self.buf, shutdown).await {
            debug!(component = %shared.settings.component, error = %e, "Writing answers failed.");
            self.broken = true;
        }
        self.buf.clear();
    }
}

/// `write_all`, abandoned [`SHUTDOWN_WRITE_GRACE`] after shutdown began.
async fn write_bounded<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &[u8],
    shutdown: &Shutdown,
) -> io::Result<()> {
    let write = w.write_all(buf);
    let give_up = async {
        shutdown.recv().await;
        tokio::time::sleep(SHUTDOWN_WRITE_GRACE).await;
    };
    tokio::select! {
        r = write => r,
        () = give_up => Err(io::Error::new(io::ErrorKind::TimedOut, "producer did not read its answers")),
    }
}

fn store_ok<E>(shared: &Shared<E>) {
    if shared.store_degraded.swap(false, Ordering::Relaxed) {
        shared.health.set(
            &shared.settings.component,
            HealthState::Ok,
            None,
            system_ms(),
        );
    }
}

fn store_failed<E>(shared: &Shared<E>, e: &dyn Display) {
    shared.store_degraded.store(true, Ordering::Relaxed);
    warn!(component = %shared.settings.component, error = %e, "Store refused an event; the producer was told to retry.");
    shared.health.set(
        &shared.settings.component,
        HealthState::Degraded,
        Some(format!("store refuses events: {e}")),
        system_ms(),
    );
}

/// One answer line (see `docs/jsonl.md` § Answers).
#[derive(Debug, Serialize)]
struct Answer<'a> {
    ok: bool,
    line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl<'a> Answer<'a> {
    fn accepted(line: u64, acc: &Accepted) -> Self {
        Answer {
            ok: true,
            line,
            id: Some(acc.id),
            sequence: Some(acc.sequence),
            duplicate: Some(acc.duplicate),
            error: None,
        }
    }
    fn failed(line: u64, id: Uuid, error: &'a str) -> Self {
        Answer {
            ok: false,
            line,
            id: Some(id),
            sequence: None,
            duplicate: None,
            error: Some(error),
        }
    }
    fn rejected(line: u64, error: &'a str) -> Self {
        Answer {
            ok: false,
            line,
            id: None,
            sequence: None,
            duplicate: None,
            error: Some(error),
        }
    }
}

fn answer_json(a: &Answer<'_>) -> Vec<u8> {
    // Serializing this struct of plain fields into a Vec cannot fail; the fallback keeps the
    // one-answer-per-line contract anyway.
    serde_json::to_vec(a)
        .unwrap_or_else(|_| format!(r#"{{"ok":false,"line":{}}}"#, a.line).into_bytes())
}
