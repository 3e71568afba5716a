//! The wire, and nothing else: framing, startup packets, the few messages pgmux writes.

pub mod frame;
pub mod messages;
pub mod startup;

pub use frame::{frame_len, FrameError};
