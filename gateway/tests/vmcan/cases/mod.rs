//! The cases run inside the VM, in order. Each is a plain function returning `Err(reason)`;
//! a case that needs async code builds its own tokio runtime ([`rt`]).
//!
//! To add a group of cases (e.g. the SocketCAN source's): write a module here with
//! `pub fn cases() -> Vec<Case>` and add one `v.extend(that::cases())` line to [`all`].

mod can_source;
mod kernel;
mod obd;

/// One test case.
pub struct Case {
    /// Name shown in the report and matched by the filter.
    pub name: &'static str,
    /// The test.
    pub run: fn() -> Result<(), String>,
}

/// Cases that always run (the others depend on them), whatever the filter.
pub const SETUP: &[&str] = &["vcan_interfaces_created"];

/// The interface every case uses.
pub const IFACE: &str = "vcan0";

/// Every case, setup first.
pub fn all() -> Vec<Case> {
    let mut v = kernel::cases();
    v.extend(obd::cases());
    v.extend(can_source::cases());
    v
}

/// A current-thread-free runtime for a case's async parts.
pub fn rt() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// `Err(msg)` unless `cond`.
pub fn check(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg()) }
}
