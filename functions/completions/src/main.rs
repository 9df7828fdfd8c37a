use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use proactive_bot::config::Settings;
use proactive_bot::wiring::Services;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    proactive_bot::telemetry::init(true);
    let (services, _) = Services::build(Settings::from_env()?).await?;
    let worker = services.worker;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let worker = worker.clone();
        async move { Ok::<_, Error>(worker.handle_sqs_event(event.payload).await) }
    }))
    .await
}
