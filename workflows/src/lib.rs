//! Deterministic workflow code and the types the workflow shares with activities and the API.
//!
//! Nothing in this crate does IO: workflows must replay identically from their history, so they
//! only decide, sleep on durable timers and call activities (declared in [`activities`], and
//! implemented with the IO clients in the `autopost-activities` crate).

pub mod activities;
pub mod bench;
pub mod publish;
pub mod types;

pub use publish::PublishPostWorkflow;
pub use types::*;
