//! Deterministic workflow code and the types the workflow shares with activities and the API.
//!
//! Nothing in this crate does IO: workflows must replay identically from their history, so they
//! only decide, sleep on durable timers and call activities (declared in [`activities`], and
//! implemented with the IO clients in the `autopost-activities` crate). [`rules`] holds what the
//! platforms accept, shared by the API's validation and the worker's preflight.

pub mod activities;
pub mod options;
pub mod publish;
pub mod rules;
pub mod types;

pub use options::{InstagramOptions, InstagramPostType, PostOptions, TiktokOptions, TiktokPrivacyLevel, UserTag};
pub use publish::PublishPostWorkflow;
pub use types::*;
