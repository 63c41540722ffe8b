//! The integration and end-to-end tests: one binary, one module per area, all against a real
//! Temporal server and PostgreSQL (`temporal-dev/test` provides both). See `common` for the
//! harness.

mod api;
mod arming;
mod bench_smoke;
mod capabilities;
mod chaos;
mod commands;
mod common;
mod edits;
mod events;
mod exactly_once;
mod failures;
mod fuzz;
mod instagram_post_types;
mod many_processes;
mod observability;
mod page;
mod post_options;
mod postgres;
mod publish_end_to_end;
mod replay;
mod security;
mod shutdown;
mod ssrf;
mod temporal_tls;
mod tiktok_upload;
mod token_storage;
mod traces;
mod webhooks;
mod workflow_lifecycle;
