//! Logging set-up: JSON lines in Lambda (CloudWatch parses them), readable lines locally.
//! `RUST_LOG` filters as usual; the default is `info`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing (tests call it freely).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .without_time()
            .try_init()
    } else {
        builder.with_target(false).try_init()
    };
}

/// Whether this process runs inside Lambda (or under `cargo lambda watch`, which emulates it).
pub fn in_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}
