//! Waymark gateway: the `waymark` daemon that runs on a vehicle's ARM Linux unit.
//!
//! ```text
//! sources ─mpsc<Reading>→ pipeline (filter, batch) → store (SQLite) → uplink (MQTT) ─PUBACK→ store.ack(ids)
//!         └─ events ───────────────────────────────→ store (commit, then ack the producer)
//! ```
//!
//! One tokio task per stage owns its state; stages talk over bounded channels. Decisions
//! (filtering, batching, in-flight bookkeeping, backoff, rate limits) are sans-IO structs that
//! take `now` and are tested without a runtime; the tasks around them are thin.
//!
//! # Layout
//! - [`config`]: the TOML file, validated once into a checked [`config::Config`].
//! - [`clock`]: GNSS-disciplined wall time; monotonic stamps until the time is known.
//! - [`sources`]: producers of readings and events (`jsonl` for on-vehicle apps).
//! - [`pipeline`]: per-signal deadband / minimum interval, and the telemetry batcher.
//! - [`store`]: the durable SQLite store-and-forward buffer: the single source of truth
//!   between acceptance and delivery.
//! - [`uplink`]: the MQTT connection: publishes from the store, deletes on PUBACK.
//! - [`milestones`]: sans-IO detectors (trip manifest, geofences, arrivals, cold chain, DM1)
//!   that turn readings into business events (docs/events.md).
//! - [`health`]: process-wide counters and source health for the status document.
//! - [`rate`]: the token bucket behind every rate limit.
//! - [`run`]: wires the stages together; [`demo`] plays a recorded trip through them.
//! - [`systemd`]: `Type=notify` readiness, the progress-fed watchdog, the stop notice.

pub mod clock;
pub mod config;
pub mod demo;
pub mod health;
pub mod milestones;
pub mod pipeline;
pub mod rate;
pub mod run;
pub mod shutdown;
pub mod sources;
pub mod status;
pub mod store;
pub mod systemd;
pub mod uplink;

/// The gateway's version, published in the status document.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
