//! End-to-end tests of the `waymark` gateway against real parts (Mosquitto, SQLite files).
//! One test binary: `tests/e2e/main.rs` plus one module per area, sharing `tests/support/`.

// Test harness code: a panic is a failed test, not a crash on input (as clippy.toml allows in
// `#[test]` functions; the helpers here are plain functions).
#![allow(clippy::unwrap_used, clippy::let_underscore_must_use)]

#[path = "../support/mod.rs"]
mod support;

mod gateway;
mod uplink;
