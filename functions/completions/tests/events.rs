//! The SQS sample events in `events/` through the function's handler, with job 100001 (the
//! number they name) in the store and a Connector stand-in as the channel.

use aws_lambda_events::event::sqs::SqsEvent;
use chrono::Utc;
use lambda_runtime::{Context, LambdaEvent};
use proactive_bot::auth::AuthConfig;
use proactive_bot::jobs::{Job, JobNumber, JobStatus};
use proactive_bot::schema::{ChannelAccount, ConversationAccount, ConversationReference};
use proactive_bot::testing::connector::{ConnectorStandIn, ScriptedResponse};
use proactive_bot::wiring::Services;

fn sqs_event(name: &str) -> LambdaEvent<SqsEvent> {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let event: SqsEvent = serde_json::from_str(&text).expect("a valid SQS event");
    LambdaEvent::new(event, Context::default())
}

async fn services_with_job(connector: &ConnectorStandIn) -> Services {
    let (services, _receiver) = Services::in_memory(&AuthConfig::default()).unwrap();
    let reference = ConversationReference {
        user: ChannelAccount {
            id: "user-1".into(),
            ..Default::default()
        },
        bot: ChannelAccount {
            id: "bot-1".into(),
            ..Default::default()
        },
        conversation: ConversationAccount {
            id: "8a684db0-5c7e-11ee-8c99-0242ac120002|livechat".into(),
            ..Default::default()
        },
        channel_id: "emulator".into(),
        service_url: connector.service_url(),
        ..Default::default()
    };
    services
        .store
        .create(&Job::new_running(
            JobNumber::new(100_001).unwrap(),
            reference,
            Utc::now(),
        ))
        .await
        .unwrap();
    services
}

async fn status(services: &Services) -> JobStatus {
    services
        .store
        .get(JobNumber::new(100_001).unwrap())
        .await
        .unwrap()
        .unwrap()
        .status
}

#[tokio::test]
async fn the_single_completion_event_notifies_the_original_conversation() {
    let connector = ConnectorStandIn::start().await;
    let services = services_with_job(&connector).await;
    let response = completions::handle(&services.worker, sqs_event("sqs-completion.json"))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    let requests = connector.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].path,
        "/amer/v3/conversations/8a684db0-5c7e-11ee-8c99-0242ac120002%7Clivechat/activities"
    );
    assert_eq!(requests[0].text(), "Job 100001 is complete.");
    assert_eq!(requests[0].body["from"]["id"], "bot-1");
    assert_eq!(requests[0].body["recipient"]["id"], "user-1");
    assert!(matches!(
        status(&services).await,
        JobStatus::Notified { .. }
    ));
}

#[tokio::test]
async fn the_mixed_batch_sends_once_and_acknowledges_the_duplicate_and_the_malformed_record() {
    let connector = ConnectorStandIn::start().await;
    let services = services_with_job(&connector).await;
    let response = completions::handle(&services.worker, sqs_event("sqs-mixed-batch.json"))
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(connector.requests().len(), 1, "the duplicate sent nothing");
}

#[tokio::test]
async fn the_mixed_batch_lists_exactly_the_retryable_failures() {
    let connector = ConnectorStandIn::start().await;
    let services = services_with_job(&connector).await;
    // The channel is throttling: the valid record must be retried, and its duplicate (same
    // conversation, after it) with it; the malformed record is not retried.
    connector.script(ScriptedResponse::status(429, None).with_header("Retry-After", "1"));
    let response = completions::handle(&services.worker, sqs_event("sqs-mixed-batch.json"))
        .await
        .unwrap();
    let mut failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    failed.sort();
    assert_eq!(failed, vec!["duplicate-1".to_owned(), "valid-1".to_owned()]);
    assert!(matches!(
        status(&services).await,
        JobStatus::Completing { .. }
    ));
    // The response is what Lambda expects on the wire.
    let wire = serde_json::to_value(&response).unwrap();
    assert_eq!(wire["batchItemFailures"][0]["itemIdentifier"], "valid-1");
}
