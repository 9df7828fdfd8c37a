//! The HTTP-triggered function: `POST /api/messages`, in Lambda or locally.
//!
//! Inside Lambda (or `cargo lambda watch`) the router is handed to `lambda_http`. Anywhere else
//! the same router is served on `127.0.0.1:$PORT` by [`local`], which also consumes the
//! delivery queue in-process with the delivery function's handler.

pub mod local;

use proactive_bot::config::Settings;
use proactive_bot::wiring::Services;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Runs the function: Lambda's runtime when inside Lambda, the local runner otherwise.
pub async fn run() -> Result<(), Error> {
    let lambda = proactive_bot::telemetry::in_lambda();
    proactive_bot::telemetry::init(lambda);
    let settings = Settings::from_env()?;
    if lambda {
        let services = Services::build(settings).await?;
        lambda_http::run(services.router()).await
    } else {
        local::run(settings).await
    }
}
