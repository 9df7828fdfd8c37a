//! The delivery function's metrics: sample SQS events through its handler
//! (`delivery::handle`), the EMF lines it writes read back and checked against the contract;
//! and the real binary under a Lambda Runtime API stand-in writing them to stdout.

use std::process::{Command, Stdio};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::Utc;
use lambda_runtime::{Context, LambdaEvent};
use proactive_bot::auth::AuthConfig;
use proactive_bot::delivery::consumer::QueueControl;
use proactive_bot::delivery::{Content, Notification, NotificationId, QueueError, Source};
use proactive_bot::metrics::{Function, Metrics};
use proactive_bot::schema::ConversationReference;
use proactive_bot::testing::connector::{ConnectorStandIn, ScriptedResponse};
use proactive_bot::testing::metrics::{CapturedMetrics, check_emf};
use proactive_bot::testing::runtime_api::{Answer, RuntimeApi};
use proactive_bot::wiring::Services;
use serde_json::{Value, json};

const NOTIFICATION: &str = "job-100001-1695809700000";
const CONVERSATION: &str = "8a684db0-5c7e-11ee-8c99-0242ac120002|livechat";

fn event_text(name: &str) -> String {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn sqs_event(name: &str) -> LambdaEvent<SqsEvent> {
    let event: SqsEvent = serde_json::from_str(&event_text(name)).expect("a valid SQS event");
    LambdaEvent::new(event, Context::default())
}

/// The queue as the event source mapping leaves it: nothing to do here.
struct NoQueue;

#[async_trait]
impl QueueControl for NoQueue {
    async fn retry_in(&self, _: &str, _: Duration) -> Result<(), QueueError> {
        Ok(())
    }
    async fn dead_letter(&self, _: &SqsMessage) -> Result<(), QueueError> {
        Ok(())
    }
}

/// Services holding the samples' notification, its conversation registered or not.
async fn services(connector: &ConnectorStandIn, registered: bool) -> Services {
    let services = Services::in_memory(&AuthConfig::default()).unwrap();
    let reference: ConversationReference =
        proactive_bot::testing::reference(&connector.service_url(), CONVERSATION);
    if registered {
        services
            .registry
            .seen(&reference, Utc::now())
            .await
            .unwrap();
    }
    let notification = Notification::new(
        NotificationId::parse(NOTIFICATION).unwrap(),
        Source::Job { number: 100_001 },
        reference,
        Content::text("Job 100001 is complete."),
        Utc::now(),
    );
    services.notifications.create(&notification).await.unwrap();
    services
}

const COUNTERS: [&str; 8] = [
    "ColdStart",
    "NotificationsSent",
    "NotificationsFailed",
    "NotificationsRetried",
    "NotificationsThrottled",
    "NotificationsDeferred",
    "NotificationsHeld",
    "NotificationsDigested",
];

/// The main line's counters, in the contract's order.
fn counters(line: &Value) -> Vec<u64> {
    COUNTERS
        .iter()
        .map(|name| {
            line[name]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: {line}"))
        })
        .collect()
}

fn directives(line: &Value) -> Vec<(Value, Vec<(String, String)>)> {
    line["_aws"]["CloudWatchMetrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|directive| {
            assert_eq!(directive["Namespace"], "ProactiveBot");
            let metrics = directive["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["Name"].as_str().unwrap().to_owned(),
                        m["Unit"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            (directive["Dimensions"].clone(), metrics)
        })
        .collect()
}

fn main_metrics(latency: bool) -> Vec<(String, String)> {
    let mut metrics: Vec<(String, String)> = COUNTERS
        .iter()
        .map(|name| (name.to_string(), "Count".to_owned()))
        .collect();
    if latency {
        metrics.push(("DeliveryLatency".into(), "Milliseconds".into()));
    }
    metrics
}

fn failed_by_reason() -> (Value, Vec<(String, String)>) {
    (
        json!([["Stack", "Function", "Reason"]]),
        vec![("NotificationsFailed".into(), "Count".into())],
    )
}

#[tokio::test]
async fn each_invocation_of_the_delivery_handler_writes_what_became_of_its_batch_as_emf() {
    let captured = CapturedMetrics::default();
    let metrics = Metrics::new("test-stack", Function::Delivery, Box::new(captured.clone()));
    let handle = |services: &Services, event: &str| {
        let engine = services.engine.clone();
        let event = sqs_event(event);
        let metrics = &metrics;
        async move {
            delivery::handle(&engine, &NoQueue, metrics, event)
                .await
                .unwrap()
        }
    };

    // 1. The channel throttles: the valid record is retried (a 429), its duplicate waits
    //    behind it (counted nowhere), the malformed record fails.
    let connector = ConnectorStandIn::start().await;
    let services_1 = services(&connector, true).await;
    connector.script(ScriptedResponse::status(429, None).with_header("Retry-After", "1"));
    handle(&services_1, "sqs-mixed-batch.json").await;
    // 2. Delivered: sent, with its latency from the record's SentTimestamp. The handler reads
    //    the clock between `before` and `after`.
    let before = Utc::now();
    handle(&services_1, "sqs-delivery.json").await;
    let after = Utc::now();
    // 3. A conversation that never talked to the bot: not registered, plus the malformed
    //    record; two reasons, so each has a line of its own.
    let services_3 = services(&connector, false).await;
    handle(&services_3, "sqs-mixed-batch.json").await;

    let lines = captured.documents();
    lines.iter().for_each(check_emf);
    for line in &lines {
        assert_eq!(
            (&line["Stack"], &line["Function"]),
            (&json!("test-stack"), &json!("delivery"))
        );
    }
    assert_eq!(lines.len(), 5, "{lines:#?}");

    // Cold start, Retried, Throttled; Failed 1 for malformed, on the main line.
    let throttled = &lines[0];
    assert_eq!(counters(throttled), [1, 0, 1, 1, 1, 0, 0, 0]);
    assert_eq!(throttled["Reason"], "malformed");
    assert_eq!(
        directives(throttled),
        vec![
            (json!([["Stack", "Function"]]), main_metrics(false)),
            failed_by_reason()
        ]
    );

    let sent = &lines[1];
    assert_eq!(counters(sent), [0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        directives(sent),
        vec![(json!([["Stack", "Function"]]), main_metrics(true))]
    );
    // The latency is (the handler's now − SentTimestamp), rounded to the microsecond: between
    // the same difference for `before` (rounded down) and `after` (rounded up), whatever
    // millisecond boundaries fall in between.
    let sample_sent_at_micros = 1_695_809_791_266_i64 * 1000;
    let latency = sent["DeliveryLatency"].as_f64().unwrap();
    let least = (before.timestamp_micros() - sample_sent_at_micros) as f64 / 1000.0;
    let most = (after.timestamp_micros() + 1 - sample_sent_at_micros) as f64 / 1000.0;
    assert!(
        (least..=most).contains(&latency),
        "queued (the sample's SentTimestamp) to sent: {latency} ms, not within [{least}, {most}]"
    );
    assert!(sent.get("Reason").is_none());

    let mixed = &lines[2];
    assert_eq!(counters(mixed), [0, 0, 2, 0, 0, 0, 0, 0]);
    assert!(
        mixed.get("Reason").is_none(),
        "two reasons: neither is the whole"
    );
    assert_eq!(
        directives(mixed),
        vec![(json!([["Stack", "Function"]]), main_metrics(false))]
    );
    for (line, reason) in lines[3..].iter().zip(["not_registered", "malformed"]) {
        assert_eq!(line["Reason"], reason);
        assert_eq!(line["NotificationsFailed"], 1);
        assert_eq!(directives(line), vec![failed_by_reason()]);
        assert!(line.get("ColdStart").is_none(), "{line}");
    }
}

#[tokio::test]
async fn the_lambda_binary_writes_its_metrics_to_stdout_with_the_stack_it_is_given() {
    // In memory, the samples' notification is unknown: acknowledged, nothing counted but the
    // zeros and the cold start.
    let event = event_text("sqs-delivery.json");
    let mut api = RuntimeApi::start(vec![event.clone(), event]).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_delivery"))
        .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "delivery")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "test")
        .env("AWS_REGION", "us-east-1")
        // No app id inside Lambda: allowed explicitly (see the startup tests).
        .env("ALLOW_ANONYMOUS_EMULATOR_MODE", "true")
        .env("METRICS_STACK", "ci-stack")
        .env("RUST_LOG", "info")
        .env_remove("JOBS_TABLE_NAME")
        .env_remove("DELIVERY_TABLE_NAME")
        .env_remove("NOTIFICATIONS_QUEUE_URL")
        .env_remove("NOTIFICATIONS_DEAD_LETTER_QUEUE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the function's binary");
    for _ in 0..2 {
        let answer = api.answer(Duration::from_secs(60)).await;
        assert!(
            matches!(&answer, Answer::Response(body) if body.contains("batchItemFailures")),
            "{answer:?}"
        );
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("the child's stdout");
    let stdout: Vec<Value> = String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let emf: Vec<&Value> = stdout.iter().filter(|l| l.get("_aws").is_some()).collect();
    assert_eq!(emf.len(), 2, "one EMF line per invocation: {stdout:#?}");
    assert!(stdout.len() > emf.len(), "the JSON logs share stdout");
    for (n, line) in emf.iter().enumerate() {
        check_emf(line);
        assert_eq!(
            (&line["Stack"], &line["Function"]),
            (&json!("ci-stack"), &json!("delivery"))
        );
        assert_eq!(counters(line), [u64::from(n == 0), 0, 0, 0, 0, 0, 0, 0]);
    }
}
