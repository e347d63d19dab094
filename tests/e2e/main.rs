//! End-to-end tests of the `waymark` gateway against real parts (Mosquitto, SQLite files).
//! One test binary: `tests/e2e/main.rs` plus one module per area, sharing `tests/support/`.

// Test code: an unwrap that fails is a failed test, not a crash on input.
#![allow(clippy::unwrap_used, clippy::let_underscore_must_use)]

#[path = "../support/mod.rs"]
mod support;

mod devices;
mod gateway;
mod package;
mod systemd;
mod uplink;
