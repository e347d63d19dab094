//! `waymark-bridge`: the cloud side of Waymark. Subscribes to every vehicle's events (and
//! optionally telemetry), verifies and records each message durably before acknowledging it,
//! deduplicates by event id, watches per-vehicle sequence gaps, and delivers each event to
//! the HTTP targets its type routes to, each through its own durable outbox, with signed
//! requests, retries, dead letters and replay. User manual: `docs/bridge.md`.
//!
//! # Layout
//! - [`config`]: the TOML file, validated once.
//! - [`intake`]: checks one message (sans-IO).
//! - [`gaps`]: per-vehicle sequence gap tracking (sans-IO).
//! - [`retry`]: delivery outcome → retry / dead letter (sans-IO).
//! - [`sign`]: the webhook signature.
//! - [`store`]: SQLite; the durability contract.
//! - [`run`]: the daemon's tasks.

pub mod config;
pub mod gaps;
pub mod intake;
pub mod retry;
pub mod run;
pub mod sign;
pub mod store;
