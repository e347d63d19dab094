//! End-to-end tests of the `waymark-bridge` binary with real parts: a Mosquitto broker on a
//! free loopback port (the workspace's `tests/support/mosquitto.rs`, reused as is), a real
//! HTTP receiver in the test process that can fail on demand, real SQLite files, and the
//! bridge as a child process that is SIGKILLed.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod harness;
mod scenarios;

/// The workspace's Mosquitto harness (it calls `super::free_port`).
#[allow(dead_code)]
#[path = "../../../tests/support/mosquitto.rs"]
mod mosquitto;

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it right away).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}
