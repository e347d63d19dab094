//! Reconnect backoff: the shared implementation in `waymark_common::backoff` (the bridge uses
//! the same one for its broker connection and its HTTP retries).

pub use waymark_common::backoff::*;
