//! The SQS-triggered function: completions off the queue, proactive messages out, and a
//! partial batch response listing only the records to retry (see [`proactive_bot::worker`]).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;
use proactive_bot::config::Settings;
use proactive_bot::wiring::Services;
use proactive_bot::worker::CompletionWorker;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The function's handler. Never fails the whole invocation: a failure would make Lambda
/// retry every record of the batch, including those already delivered.
pub async fn handle(
    worker: &CompletionWorker,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    Ok(worker.handle_sqs_event(event.payload).await)
}

/// Builds the clients once, then serves invocations.
pub async fn run() -> Result<(), Error> {
    proactive_bot::telemetry::init(true);
    let (services, _) = Services::build(Settings::from_env()?).await?;
    let worker = services.worker;
    lambda_runtime::run(lambda_runtime::service_fn(|event| {
        let worker = worker.clone();
        async move { handle(&worker, event).await }
    }))
    .await
}
