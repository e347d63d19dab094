//! SAE J1939 (and the NMEA 2000 groups built on it): identifiers, the FMS parameter set,
//! the transport protocol, DM1 faults and the VIN. All sans-IO.

pub mod dm1;
pub mod fms;
pub mod id;
pub mod tp;
