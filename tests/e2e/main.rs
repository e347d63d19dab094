//! End-to-end tests of the `waymark` gateway against real parts (Mosquitto, SQLite files).
//! One test binary: `tests/e2e/main.rs` plus one module per area, sharing `tests/support/`.

#[path = "../support/mod.rs"]
mod support;

mod gateway;
mod uplink;
