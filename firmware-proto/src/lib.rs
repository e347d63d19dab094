#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![doc = include_str!("../README.md")]
//!
//! # Layout
//! - [`messages`]: the [`Message`] enum and the types in it (the wire format's body).
//! - [`frame`]: [`encode`], the streaming [`Decoder`], [`PROTOCOL_VERSION`], [`MAX_FRAME`].
//! - [`error`]: the one [`Error`] type.

pub mod error;
pub mod frame;
pub mod messages;

pub use error::Error;
pub use frame::{
    Decoder, Feed, MAX_CONTENT, MAX_FRAME, PROTOCOL_VERSION, encode, encode_versioned,
};
pub use messages::{
    Capabilities, DeviceKind, FirmwareVersion, Message, NackReason, PodOutcome, ProbeStatus,
    RECIPIENT_CAPACITY, REF_CAPACITY, Recipient, Ref,
};
