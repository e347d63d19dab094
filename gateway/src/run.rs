//! Wires the stages together and runs them until shutdown.
//!
//! Start-up order: store (recovery happens here), pipeline, uplink, then sources, so nothing is
//! accepted before it can be made durable. Shutdown runs the other way round and loses nothing
//! that was accepted: sources stop accepting; the pipeline drains its channel and commits the
//! open batch; the uplink gets a short grace to publish and collect PUBACKs; the store's writer
//! thread commits and closes. Whatever was not acknowledged by the broker stays in the store
//! and is published after the next start.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{error, info};

use crate::clock::Clock;
use crate::config::Config;
use crate::health::Health;
use crate::pipeline;
use crate::shutdown::{Shutdown, Trigger};
use crate::sources::{self, SourceContext};
use crate::store::Store;
use crate::uplink::Uplink;

/// Capacity of the readings channel from the sources to the pipeline. When it is full the
/// sources stop reading their inputs (backpressure); nothing is dropped.
pub const READINGS_CHANNEL: usize = 8192;

/// Why the gateway stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store could not be opened even after recovery.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The uplink could not be set up (bad TLS material, bad options).
    #[error(transparent)]
    Uplink(#[from] crate::uplink::UplinkError),
    /// A source could not be set up (socket in use, bad path).
    #[error(transparent)]
    Source(#[from] crate::sources::SourceError),
}

/// The running gateway's handles, for embedding (the demo, tests).
#[derive(Debug, Clone)]
pub struct Running {
    /// The store.
    pub store: Store,
    /// Counters and health.
    pub health: Arc<Health>,
    /// The gateway clock (a GNSS source feeds it; tests read it).
    pub clock: Clock,
}

/// Runs the gateway until `shutdown` fires, then stops every stage in order.
///
/// # Errors
/// Set-up failures (see [`RunError`]); once running, problems are reported through health and
/// retried, not returned.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), RunError> {
    run_with(config, shutdown, |_| {}).await
}

/// Like [`run`], and calls `started` once every stage is set up (the demo and tests use it to
/// get the store and counters).
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    config: Config,
    shutdown: Shutdown,
    started: impl FnOnce(Running),
) -> Result<(), RunError> {
    let health = Arc::new(Health::default());
    let clock = Clock::new();
    let store = Store::open_with_clock(
        &config.store,
        &config.vehicle_id,
        health.clone(),
        clock.clone(),
    )?;

    let pipeline_stop = Trigger::new();
    let (readings_tx, readings_rx) = mpsc::channel(READINGS_CHANNEL);
    let pipeline_task = tokio::spawn(pipeline::run(
        config.pipeline.clone(),
        readings_rx,
        store.clone(),
        health.clone(),
        clock.clone(),
        pipeline_stop.subscribe(),
    ));

    let uplink_stop = Trigger::new();
    let uplink = Uplink::new(
        &config.mqtt,
        config.pipeline.batch_max_bytes,
        &config.vehicle_id,
        store.clone(),
        health.clone(),
    )?
    .with_clock(clock.clone());
    let uplink_task = tokio::spawn(uplink.run(uplink_stop.subscribe()));

    let ctx = SourceContext {
        readings: readings_tx,
        store: store.clone(),
        health: health.clone(),
        clock: clock.clone(),
    };
    let mut sources = sources::spawn_all(&config.sources, &ctx, &shutdown)?;
    // Only the sources hold the pipeline's sender from here on.
    drop(ctx);

    info!(vehicle = %config.vehicle_id, sources = config.sources.len(), "Waymark gateway started.");
    started(Running {
        store: store.clone(),
        health: health.clone(),
        clock: clock.clone(),
    });

    shutdown.recv().await;
    info!("Shutting down: stopping sources.");
    while let Some(res) = sources.join_next().await {
        match res {
            Ok(exit) => {
                if let Err(e) = exit.result {
                    error!(source = %exit.component, error = %e, "Source failed.");
                }
            }
            Err(e) => error!(error = %e, "Source task panicked."),
        }
    }
    info!("Flushing the pipeline into the store.");
    pipeline_stop.fire();
    if let Err(e) = pipeline_task.await {
        error!(error = %e, "Pipeline task panicked.");
    }
    uplink_stop.fire();
    match uplink_task.await {
        Ok(Err(e)) => error!(error = %e, "Uplink stopped with an error."),
        Err(e) => error!(error = %e, "Uplink task panicked."),
        Ok(Ok(())) => {}
    }
    store.close().await?;
    info!("Waymark gateway stopped.");
    Ok(())
}

/// Fires `trigger` on SIGTERM or SIGINT.
pub async fn signal_shutdown(trigger: Trigger) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("Cannot install signal handlers; stop with SIGKILL only.");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received."),
        _ = int.recv() => info!("SIGINT received."),
    }
    trigger.fire();
}
