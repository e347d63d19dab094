//! `waymark`: the gateway daemon and its command line.

fn main() {}
