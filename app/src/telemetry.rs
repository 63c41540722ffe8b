//! Logging: JSON lines for machines or pretty text for people, levels from `RUST_LOG`.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,temporalio_sdk_core=warn,sqlx=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests that start several components) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true).with_current_span(false)).try_init(),
        LogFormat::Pretty => registry.with(fmt::layer()).try_init(),
    };
}
