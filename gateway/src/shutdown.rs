//! One shutdown path for every task (STYLE habit 8).
//!
//! `main` owns the [`Trigger`]; every task holds a [`Shutdown`] and selects on
//! [`Shutdown::recv`]. On SIGTERM/SIGINT: sources stop accepting, the pipeline flushes its
//! batcher into the store, the uplink publishes what it can within the grace period, then the
//! store's writer thread commits and closes.

use tokio_util::sync::CancellationToken;

/// Fires the shutdown.
#[derive(Debug, Clone, Default)]
pub struct Trigger(CancellationToken);

/// Tells a task that shutdown has begun.
#[derive(Debug, Clone)]
pub struct Shutdown(CancellationToken);

impl Trigger {
    /// A new, unfired trigger.
    pub fn new() -> Self {
        Self::default()
    }
    /// A listener for this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.clone())
    }
    /// Starts the shutdown. Idempotent.
    pub fn fire(&self) {
        self.0.cancel();
    }
}

impl Shutdown {
    /// Resolves once shutdown has begun (immediately if it already has). Cancel-safe.
    pub async fn recv(&self) {
        self.0.cancelled().await;
    }
    /// Whether shutdown has begun.
    pub fn is_shutdown(&self) -> bool {
        self.0.is_cancelled()
    }
}
