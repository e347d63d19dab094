//! Async tests of the jsonl source over real sockets.
