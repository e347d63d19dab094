//! Shared harness for the end-to-end tests: a real Mosquitto broker on a free loopback port
//! (plain, TLS, mutual TLS; stop, kill, freeze, restart with or without its session store),
//! a TCP gate to cut and restore the gateway's link, and a subscriber that records what the
//! broker delivers.
//!
//! Tests never use fixed ports and never skip: a missing `mosquitto` fails with a message
//! saying how to install it.

// Each test module uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub mod gate;
pub mod gateway;
pub mod mosquitto;
pub mod notify;
pub mod subscriber;

use std::future::Future;
use std::time::Duration;

pub use gate::Gate;
pub use mosquitto::{Certs, Mosquitto, MosquittoOptions, TlsMode};
pub use subscriber::{Message, Subscriber};

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it right away).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Polls `check` every 20 ms until it returns true; panics naming `what` after `timeout`.
/// The timeout is only an upper bound: it never makes a passing test fail on a slow machine
/// unless the machine is slower than the bound.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
