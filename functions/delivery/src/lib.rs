//! The SQS-triggered function: delivery messages off the FIFO queue, proactive messages out
//! through the Bot Connector, and a partial batch response listing only the messages that must
//! come back (see [`proactive_bot::delivery`]).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;
use proactive_bot::config::Settings;
use proactive_bot::delivery::DeliveryEngine;
use proactive_bot::delivery::consumer::{QueueControl, handle_event};
use proactive_bot::wiring::Services;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The function's handler. Never fails the whole invocation: a failure would make Lambda
/// retry every record of the batch, including those already delivered.
pub async fn handle(
    engine: &DeliveryEngine,
    control: &dyn QueueControl,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    Ok(handle_event(engine, control, event.payload).await)
}

/// Builds the clients once, then serves invocations.
pub async fn run() -> Result<(), Error> {
    proactive_bot::telemetry::init(true);
    let settings = Settings::from_env()?;
    if !settings.auth.is_enabled() {
        tracing::warn!(
            "MicrosoftAppId is not set (Emulator mode): notifications are sent without a token, which only local clients (the Emulator, Agents Playground) accept"
        );
    }
    let services = Services::build(settings).await?;
    let engine = services.engine.clone();
    let queue = services.queue.clone();
    lambda_runtime::run(lambda_runtime::service_fn(|event| {
        let engine = engine.clone();
        let queue = queue.clone();
        async move { handle(&engine, queue.as_ref(), event).await }
    }))
    .await
}
