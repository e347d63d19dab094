//! Sources: producers of readings and events.
//!
//! Each configured `[[sources]]` entry becomes one [`Source`] value, built (sockets bound,
//! devices opened) by [`spawn_all`] before any of them runs, so a bad path or a busy port stops
//! the start-up before systemd is told the gateway is ready. Each source then runs as one task
//! until the [`Shutdown`] fires.
//!
//! Invariants every source keeps:
//! - Readings go to the pipeline over the bounded [`SourceContext::readings`] channel. When it
//!   is full, a source waits (and so stops reading its device or socket); it never drops an
//!   accepted reading to make room.
//! - Events go straight to [`Store::append_event`]; a producer is told an event was accepted
//!   only after that call resolved `Ok`, i.e. after the commit.
//! - A source reports itself in [`Health`] as `<kind>:<name>` (e.g. `jsonl:apps`).
//!
//! Dispatch is a plain enum over the configured kinds ([`SourceConfig`] → `Built`), in the
//! manner of mini-redis's `Command`: adding a kind (gps, can, device) means one module, one
//! `SourceConfig` variant, one `Built` variant and one match arm in each of `Built::build` and
//! `spawn_all`.

pub mod can;
pub mod cargo;
pub mod device;
pub mod gps;
pub mod jsonl;
pub mod obd;
pub mod onewire;

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use waymark_wire::Reading;

use crate::clock::Clock;
use crate::config::SourceConfig;
use crate::health::Health;
use crate::shutdown::Shutdown;
use crate::store::{Accepted, NewEvent, Store, StoreError};

/// What every source gets to do its work.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The pipeline's input. Bounded: a full channel is backpressure, not a reason to drop.
    pub readings: mpsc::Sender<Reading>,
    /// The durable store, for sources that accept events (commit first, then acknowledge).
    pub store: Store,
    /// Counters and per-component health.
    pub health: Arc<Health>,
    /// The gateway's clock: stamp readings and events with [`Clock::now`]; a GNSS source
    /// feeds it fix times with [`Clock::observe_gnss`].
    pub clock: Clock,
}

/// A producer of readings (and, for some kinds, events); one impl per source kind.
pub trait Source: Sized + Send + 'static {
    /// Kind name used in config (`type = "..."`), logs and health (`jsonl`, `gps`, ...).
    const NAME: &'static str;

    /// The health component and log name of this instance: `<kind>:<name>`.
    fn component(&self) -> String;

    /// Reads until `shutdown` fires, then finishes what was accepted (answers in-flight
    /// events) and returns.
    ///
    /// # Errors
    /// Only for failures a restart of this source will not fix (e.g. the pipeline is gone).
    fn run(
        self,
        ctx: SourceContext,
        shutdown: Shutdown,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
}

/// Why a source could not start, or stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A `jsonl` source could not set up its listeners (bad path, busy port, permissions).
    #[error(transparent)]
    Jsonl(#[from] jsonl::JsonlError),
    /// A `can` or `candump` source's DBC files are unusable.
    #[error(transparent)]
    Can(#[from] can::CanError),
    /// The pipeline's channel closed while the gateway was not shutting down: the pipeline
    /// task ended, so nothing a source reads can go anywhere.
    #[error("the pipeline stopped taking readings")]
    PipelineClosed,
}

/// How one source task ended; the item type of the [`JoinSet`] from [`spawn_all`].
#[derive(Debug)]
pub struct SourceExit {
    /// The source's health component (`<kind>:<name>`).
    pub component: String,
    /// What its `run` returned.
    pub result: Result<(), SourceError>,
}

/// Where a source sends events: [`Store`] in the gateway. The seam exists so that the
/// acknowledgement contract (answer only after the commit resolved, in line order, errors
/// answered) can be tested with a sink whose commits are held or failed on purpose.
pub(crate) trait EventSink: Clone + Send + Sync + 'static {
    /// Why an append failed; shown to the producer as `store unavailable: <error>`.
    type Error: Display + Send + 'static;

    /// Commits `ev` and resolves only after the commit (see [`Store::append_event`]).
    fn append_event(
        &self,
        ev: NewEvent,
    ) -> impl Future<Output = Result<Accepted, Self::Error>> + Send;
}

impl EventSink for Store {
    type Error = StoreError;

    fn append_event(
        &self,
        ev: NewEvent,
    ) -> impl Future<Output = Result<Accepted, StoreError>> + Send {
        Store::append_event(self, ev)
    }
}

/// A configured source, built and ready to run.
enum Built {
    Jsonl(jsonl::Jsonl),
    Device(device::Device),
    Onewire(onewire::Onewire),
    Obd(obd::Obd),
    Can(can::Can),
    Candump(can::replay::Candump),
    Gps(gps::Gps),
}

impl Built {
    /// Binds / opens what the config names. Needs a tokio runtime (sockets register with it).
    fn build(cfg: &SourceConfig) -> Result<Self, SourceError> {
        match cfg {
            SourceConfig::Jsonl(c) => Ok(Built::Jsonl(jsonl::Jsonl::bind(c)?)),
            SourceConfig::Device(c) => Ok(Built::Device(device::Device::new(c))),
            SourceConfig::Onewire(c) => Ok(Built::Onewire(onewire::Onewire::new(c))),
            SourceConfig::Obd(c) => Ok(Built::Obd(obd::Obd::new(c))),
            SourceConfig::Can(c) => Ok(Built::Can(can::Can::new(c)?)),
            SourceConfig::Candump(c) => Ok(Built::Candump(can::replay::Candump::new(c)?)),
            SourceConfig::Gps(c) => Ok(Built::Gps(gps::Gps::new(c))),
        }
    }
}

/// Builds every configured source (binding sockets, opening devices), then spawns one task per
/// source. Each task ends when `shutdown` fires and the source has finished what it accepted.
///
/// Nothing is spawned unless every source could be built; sources built before a failing one
/// are dropped (a `jsonl` source then removes its socket file again).
///
/// Must be called from within a tokio runtime.
///
/// # Errors
/// The first source that could not be built.
pub fn spawn_all(
    sources: &[SourceConfig],
    ctx: &SourceContext,
    shutdown: &Shutdown,
) -> Result<JoinSet<SourceExit>, SourceError> {
    let built = sources
        .iter()
        .map(Built::build)
        .collect::<Result<Vec<_>, _>>()?;
    let mut set = JoinSet::new();
    for source in built {
        match source {
            Built::Jsonl(s) => spawn_one(&mut set, s, ctx, shutdown),
            Built::Device(s) => spawn_one(&mut set, s, ctx, shutdown),
            Built::Onewire(s) => spawn_one(&mut set, s, ctx, shutdown),
            Built::Obd(s) => spawn_one(&mut set, s, ctx, shutdown),
            Built::Can(s) => spawn_one(&mut set, s, ctx, shutdown),
            Built::Candump(s) => spawn_one(&mut set, s, ctx, shutdown),
            Built::Gps(s) => spawn_one(&mut set, s, ctx, shutdown),
        }
    }
    Ok(set)
}

fn spawn_one<S: Source>(
    set: &mut JoinSet<SourceExit>,
    source: S,
    ctx: &SourceContext,
    shutdown: &Shutdown,
) {
    let component = source.component();
    let (ctx, shutdown) = (ctx.clone(), shutdown.clone());
    set.spawn(async move {
        let result = source.run(ctx, shutdown).await;
        SourceExit { component, result }
    });
}
