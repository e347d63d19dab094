//! `waymark-devsim` as a library: the script language ([`script`]) and the simulated device
//! ([`sim::Sim`]), so that tests can run the simulator in-process on a real pseudo-terminal.
//! The binary (`src/main.rs`) is a thin CLI over the same code; docs/devices.md documents
//! both.

pub mod background;
pub mod script;
pub mod sim;

pub use background::Background;
pub use script::{Command, ScriptError, parse};
pub use sim::{Log, Sim, SimError};
