//! The SQS sample events in `events/` through the function's handler, with what they name
//! (`job-100001-1695809700000`, the reminder's `rem-…`, the broadcast's request) in the store
//! and its conversation registered (it talked to the bot: only such conversations are messaged), a
//! Connector stand-in as the channel, and a queue control that records what the handler asked
//! of SQS.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::Utc;
use lambda_runtime::{Context, LambdaEvent};
use proactive_bot::auth::AuthConfig;
use proactive_bot::delivery::consumer::QueueControl;
use proactive_bot::delivery::engine::NOT_REGISTERED;
use proactive_bot::delivery::{
    Content, DeliveryState, Notification, NotificationId, QueueError, Source,
};
use proactive_bot::metrics::{Function, Metrics};
use proactive_bot::schema::{ChannelAccount, ConversationAccount, ConversationReference};
use proactive_bot::testing::connector::{ConnectorStandIn, ScriptedResponse};
use proactive_bot::wiring::Services;

const NOTIFICATION: &str = "job-100001-1695809700000";

fn sqs_event(name: &str) -> LambdaEvent<SqsEvent> {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let event: SqsEvent = serde_json::from_str(&text).expect("a valid SQS event");
    LambdaEvent::new(event, Context::default())
}

/// Metrics written nowhere (`tests/metrics.rs` reads them).
fn no_metrics() -> Metrics {
    Metrics::new("test", Function::Delivery, Box::new(std::io::sink()))
}

/// What the handler asked of the queue.
#[derive(Default)]
struct RecordingControl {
    visibility: Mutex<Vec<(String, Duration)>>,
    dead_letters: Mutex<Vec<String>>,
}

#[async_trait]
impl QueueControl for RecordingControl {
    async fn retry_in(&self, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        self.visibility
            .lock()
            .unwrap()
            .push((receipt_handle.to_owned(), delay));
        Ok(())
    }

    async fn dead_letter(&self, record: &SqsMessage) -> Result<(), QueueError> {
        self.dead_letters
            .lock()
            .unwrap()
            .push(record.message_id.clone().unwrap_or_default());
        Ok(())
    }
}

/// Services holding the events' notification, its conversation registered.
async fn services_with_notification(connector: &ConnectorStandIn) -> Services {
    services_with(
        connector,
        NOTIFICATION,
        Source::Job { number: 100_001 },
        "Job 100001 is complete.",
    )
    .await
}

/// Services holding notification `id` (Queued) into the samples' conversation.
async fn services_with(
    connector: &ConnectorStandIn,
    id: &str,
    source: Source,
    text: &str,
) -> Services {
    let services = Services::in_memory(&AuthConfig::default()).unwrap();
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
        .registry
        .seen(&reference, Utc::now())
        .await
        .unwrap();
    let notification = Notification::new(
        NotificationId::parse(id).unwrap(),
        source,
        reference,
        Content::text(text),
        Utc::now(),
    );
    services.notifications.create(&notification).await.unwrap();
    services
}

async fn state(services: &Services) -> Notification {
    services
        .notifications
        .get(&NotificationId::parse(NOTIFICATION).unwrap())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn the_single_delivery_event_notifies_the_original_conversation() {
    let connector = ConnectorStandIn::start().await;
    let services = services_with_notification(&connector).await;
    let control = RecordingControl::default();
    let response = delivery::handle(
        &services.engine,
        &control,
        &no_metrics(),
        sqs_event("sqs-delivery.json"),
    )
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
    let stored = state(&services).await;
    assert!(
        matches!(&stored.state, DeliveryState::Sent { activity_id: Some(id), .. } if id == "activity-1"),
        "{stored:?}"
    );
    assert_eq!(stored.attempts, 1);
}

#[tokio::test]
async fn the_mixed_batch_sends_once_and_acknowledges_the_duplicate_and_the_malformed_record() {
    let connector = ConnectorStandIn::start().await;
    let services = services_with_notification(&connector).await;
    let control = RecordingControl::default();
    let response = delivery::handle(
        &services.engine,
        &control,
        &no_metrics(),
        sqs_event("sqs-mixed-batch.json"),
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(connector.requests().len(), 1, "the duplicate sent nothing");
    assert!(control.visibility.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_throttled_batch_comes_back_when_the_channel_says_in_order() {
    let connector = ConnectorStandIn::start().await;
    let services = services_with_notification(&connector).await;
    let control = RecordingControl::default();
    // The channel is throttling: the valid record must be retried after Retry-After, and its
    // duplicate (same conversation, after it) with it; the malformed record is not retried.
    connector.script(ScriptedResponse::status(429, None).with_header("Retry-After", "1"));
    let response = delivery::handle(
        &services.engine,
        &control,
        &no_metrics(),
        sqs_event("sqs-mixed-batch.json"),
    )
    .await
    .unwrap();
    let mut failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    failed.sort();
    assert_eq!(failed, vec!["duplicate-1".to_owned(), "valid-1".to_owned()]);
    let visibility = control.visibility.lock().unwrap().clone();
    let delays: Vec<Duration> = visibility.iter().map(|(_, delay)| *delay).collect();
    assert_eq!(
        delays,
        vec![Duration::from_secs(1), Duration::ZERO],
        "the head comes back after the Retry-After, not the visibility timeout; the duplicate \
         behind it is put back at once and waits for it (FIFO)"
    );
    let stored = state(&services).await;
    assert_eq!(stored.state, DeliveryState::Queued);
    assert_eq!(stored.attempts, 1);
    assert!(stored.last_error.unwrap().contains("429"));
    // The response is what Lambda expects on the wire.
    let wire = serde_json::to_value(&response).unwrap();
    assert_eq!(wire["batchItemFailures"][0]["itemIdentifier"], "valid-1");
}

#[tokio::test]
async fn a_reminder_fired_by_eventbridge_scheduler_is_delivered_like_any_notification() {
    // What EventBridge Scheduler puts on the queue: the schedule's input as the body, the
    // conversation as the message group, a content-based deduplication id.
    const REMINDER: &str = "rem-0f1e2d3c4b5a69788796a5b4c3d2e1f0";
    let connector = ConnectorStandIn::start().await;
    let services = services_with(
        &connector,
        REMINDER,
        Source::Reminder {
            id: "0f1e2d3c4b5a69788796a5b4c3d2e1f0".into(),
        },
        "Reminder: stretch",
    )
    .await;
    let control = RecordingControl::default();
    let response = delivery::handle(
        &services.engine,
        &control,
        &no_metrics(),
        sqs_event("sqs-reminder.json"),
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let requests = connector.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].path,
        "/amer/v3/conversations/8a684db0-5c7e-11ee-8c99-0242ac120002%7Clivechat/activities"
    );
    assert_eq!(requests[0].text(), "Reminder: stretch");
    let stored = services
        .notifications
        .get(&NotificationId::parse(REMINDER).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(stored.state, DeliveryState::Sent { .. }),
        "{stored:?}"
    );
}

#[tokio::test]
async fn the_delivery_event_for_a_retired_conversation_fails_and_sends_nothing() {
    let connector = ConnectorStandIn::start().await;
    let services = services_with_notification(&connector).await;
    let retired = services
        .registry
        .retire(
            "8a684db0-5c7e-11ee-8c99-0242ac120002|livechat",
            "uninstalled",
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(retired);
    let control = RecordingControl::default();
    let response = delivery::handle(
        &services.engine,
        &control,
        &no_metrics(),
        sqs_event("sqs-delivery.json"),
    )
    .await
    .unwrap();
    assert!(
        response.batch_item_failures.is_empty(),
        "acknowledged: retrying cannot help"
    );
    assert!(connector.requests().is_empty(), "nothing sent");
    let stored = state(&services).await;
    assert!(
        matches!(&stored.state, DeliveryState::Failed { reason, .. } if reason == NOT_REGISTERED),
        "{stored:?}"
    );
    assert!(control.dead_letters.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_broadcast_event_fans_out_to_every_active_conversation_then_each_is_delivered() {
    use proactive_bot::delivery::consumer::handle_records;
    use proactive_bot::notify::{NotifyBody, Target};

    let connector = ConnectorStandIn::start().await;
    // Delivered as soon as the deliveries are taken off the queue: no digest window (digests
    // are tested in the messages function's conversation_flow tests).
    let settings = proactive_bot::config::Settings::from_lookup(|name| {
        (name == "DIGEST_WINDOW_SECONDS").then(|| "0".to_owned())
    })
    .unwrap();
    let services = Services::with_ports(
        &AuthConfig::default(),
        &settings,
        proactive_bot::wiring::Ports::in_memory(settings.max_receives),
    )
    .unwrap();
    for n in 0..3 {
        let mut reference =
            proactive_bot::testing::reference(&connector.service_url(), &format!("c{n}|livechat"));
        reference.conversation.tenant_id = Some("tenant-1".into());
        // They talked to the bot a minute ago: quiet now, so the broadcast is not held.
        services
            .registry
            .seen(&reference, Utc::now() - chrono::Duration::seconds(60))
            .await
            .unwrap();
    }
    // The request the sample's message names: its id comes from this idempotency key.
    let submitted = services
        .notify
        .submit(
            NotifyBody {
                target: Target::All { tenant_id: None },
                content: Content::text("Maintenance at 22:00"),
                urgent: false,
            },
            Some("sample-broadcast"),
        )
        .await
        .unwrap();
    assert_eq!(submitted.id, "k-3010a5f1fda516c7db9c6f424dd9a9dd");
    assert_eq!(submitted.recipients, 3);
    // The API queued the same step; take it off so only the sample's copy runs.
    let queued = services.queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(queued.len(), 1, "the fan-out's first step");
    services
        .queue
        .delete(queued[0].receipt_handle.as_deref().unwrap())
        .await
        .unwrap();

    let control = RecordingControl::default();
    let response = delivery::handle(
        &services.engine,
        &control,
        &no_metrics(),
        sqs_event("sqs-broadcast.json"),
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert!(
        connector.requests().is_empty(),
        "a fan-out step sends nothing itself"
    );
    let status = services
        .notify
        .status(&submitted.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status.fan_out, status.pending), ("done", 3), "{status:?}");

    let deliveries = services.queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(deliveries.len(), 3, "one delivery message per conversation");
    let (response, _) =
        handle_records(&services.engine, services.queue.as_ref(), &deliveries).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let mut paths: Vec<String> = connector
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        (0..3)
            .map(|n| format!("/amer/v3/conversations/c{n}%7Clivechat/activities"))
            .collect::<Vec<_>>()
    );
    let status = services
        .notify
        .status(&submitted.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status.sent, status.pending), (3, 0), "{status:?}");

    // The same step again (a redelivery) finds the fan-out done and queues nothing.
    let response = delivery::handle(
        &services.engine,
        &control,
        &no_metrics(),
        sqs_event("sqs-broadcast.json"),
    )
    .await
    .unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert!(
        services
            .queue
            .receive(10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
}
