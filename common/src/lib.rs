//! Small pieces shared by the `waymark` gateway and the `waymark-bridge` that are not wire
//! formats (those live in `waymark-wire`).
//!
//! - [`backoff`]: exponential backoff with full jitter above a floor, sans-IO.

pub mod backoff;
