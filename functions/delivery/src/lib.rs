//! The SQS-triggered function: delivery messages off the FIFO queue, proactive messages out
//! through the Bot Connector, and a partial batch response listing only the messages that must
//! come back (see [`proactive_bot::delivery`]). Each invocation flushes its metrics once
//! ([`proactive_bot::metrics`]).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;
use proactive_bot::config::Settings;
use proactive_bot::delivery::DeliveryEngine;
use proactive_bot::delivery::consumer::{QueueControl, handle_records};
use proactive_bot::metrics::{self, Function, Metrics};
use proactive_bot::wiring::Services;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The function's handler: delivers the batch, then writes what became of it as metrics.
/// Never fails the whole invocation: a failure would make Lambda retry every record of the
/// batch, including those already delivered.
pub async fn handle(
    engine: &DeliveryEngine,
    control: &dyn QueueControl,
    metrics: &Metrics,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let mut invocation = metrics.invocation();
    let records = &event.payload.records;
    let (response, results) = handle_records(engine, control, records).await;
    metrics::record_deliveries(&mut invocation, records, &results);
    metrics.flush(invocation);
    Ok(response)
}

/// Builds the clients once, then serves invocations.
pub async fn run() -> Result<(), Error> {
    proactive_bot::telemetry::init(true);
    // The same settings as the messages function, so the same refusals: without an app id
    // only when ALLOW_ANONYMOUS_EMULATOR_MODE=true (an init error, logged, otherwise).
    let settings =
        Settings::from_env().inspect_err(|e| tracing::error!("refusing to start: {e}"))?;
    if !settings.auth.is_enabled() {
        tracing::warn!(
            "MicrosoftAppId is not set (Emulator mode): notifications are sent without a token, which only local clients (the Emulator, Agents Playground) accept"
        );
    }
    let services = Services::build(settings).await?;
    let engine = services.engine.clone();
    let queue = services.queue.clone();
    let metrics = std::sync::Arc::new(Metrics::stdout(Function::Delivery));
    lambda_runtime::run(lambda_runtime::service_fn(|event| {
        let engine = engine.clone();
        let queue = queue.clone();
        let metrics = metrics.clone();
        async move { handle(&engine, queue.as_ref(), &metrics, event).await }
    }))
    .await
}
