//! The SQS completion queue and the local runner's poller against moto, over SQS's real wire
//! protocol, on the queues template.yaml defines (created by scripts/local_resources.py).

use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_sqs::types::QueueAttributeName;
use proactive_bot::adapters::sqs::{SqsCompletionQueue, SqsPoller};
use proactive_bot::jobs::{Completion, CompletionQueue, JobNumber, QueueError};
use proactive_bot::testing::moto::{self, MotoServer, RequestCounter};

struct Fixture {
    queue: SqsCompletionQueue,
    poller: SqsPoller,
    client: aws_sdk_sqs::Client,
    counter: RequestCounter,
    queue_url: String,
}

async fn fixture(name: &str) -> Fixture {
    let moto = MotoServer::shared();
    let resources = moto.create_resources(name).await;
    let (config, counter) = moto.sdk_config().await;
    let client = moto::sqs_client(&config, &counter);
    Fixture {
        queue: SqsCompletionQueue::new(client.clone(), &resources.queue_url),
        poller: SqsPoller::new(client.clone(), &resources.queue_url),
        client,
        counter,
        queue_url: resources.queue_url,
    }
}

fn completion(n: u32) -> Completion {
    Completion::new(
        JobNumber::new(n).expect("a job number"),
        "19:f00dfeed@thread.skype;messageid=1",
    )
}

impl Fixture {
    /// Polls (short waits) until a message arrives or `within` elapses.
    async fn receive_within(&self, within: Duration) -> Vec<SqsMessage> {
        let deadline = Instant::now() + within;
        loop {
            let messages = self.poller.receive(10, 1).await.expect("receive");
            if !messages.is_empty() || Instant::now() > deadline {
                return messages;
            }
        }
    }
}

#[tokio::test]
async fn a_sent_completion_is_received_with_its_body_and_correlation_id() {
    let f = fixture("roundtrip").await;
    let sent = completion(123_456);

    f.queue.send(&sent, Duration::ZERO).await.expect("send");
    assert_eq!(f.counter.count("SQS", "SendMessage"), 1);
    let messages = f.receive_within(Duration::from_secs(5)).await;

    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    let body = message.body.as_deref().expect("a body");
    assert_eq!(Completion::from_body(body).expect("a completion"), sent);
    let attribute = &message.message_attributes["correlationId"];
    assert_eq!(
        attribute.string_value.as_deref(),
        Some(sent.correlation_id.as_str())
    );
    assert_eq!(attribute.data_type.as_deref(), Some("String"));
    assert_eq!(message.attributes["ApproximateReceiveCount"], "1");
    assert_eq!(message.event_source.as_deref(), Some("aws:sqs"));
    assert!(message.message_id.is_some());

    f.poller
        .delete(message.receipt_handle.as_deref().expect("a receipt handle"))
        .await
        .expect("delete");
    assert_eq!(f.counter.count("SQS", "DeleteMessage"), 1);
}

#[tokio::test]
async fn a_delayed_completion_is_not_received_before_its_delay_but_is_after() {
    let f = fixture("delay").await;
    let sent = completion(200_002);
    let started = Instant::now();

    f.queue
        .send(&sent, Duration::from_secs(2))
        .await
        .expect("send");

    let early = f.poller.receive(10, 0).await.expect("receive");
    assert!(early.is_empty(), "received before its delay: {early:?}");
    let messages = f.receive_within(Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 1, "not received after its delay");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let body = messages[0].body.as_deref().expect("a body");
    assert_eq!(Completion::from_body(body).expect("a completion"), sent);
}

#[tokio::test]
async fn a_delay_over_900_seconds_is_refused_without_any_request() {
    let f = fixture("too-long").await;

    let result = f
        .queue
        .send(&completion(300_003), Duration::from_secs(901))
        .await;

    assert!(
        matches!(result, Err(QueueError::DelayTooLong(d)) if d == Duration::from_secs(901)),
        "{result:?}"
    );
    assert_eq!(f.counter.total(), 0, "{:?}", f.counter.snapshot());
}

#[tokio::test]
async fn a_message_received_and_not_deleted_comes_back_after_its_visibility_timeout() {
    let f = fixture("redelivery").await;
    f.client
        .set_queue_attributes()
        .queue_url(&f.queue_url)
        .attributes(QueueAttributeName::VisibilityTimeout, "1")
        .send()
        .await
        .expect("SetQueueAttributes");
    let sent = completion(400_004);
    f.queue.send(&sent, Duration::ZERO).await.expect("send");

    let first = f.receive_within(Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attributes["ApproximateReceiveCount"], "1");
    // In flight: invisible until the visibility timeout lapses (the "worker" crashed).
    let hidden = f.poller.receive(10, 0).await.expect("receive");
    assert!(hidden.is_empty(), "{hidden:?}");

    let again = f.receive_within(Duration::from_secs(10)).await;
    assert_eq!(again.len(), 1, "not redelivered");
    assert_eq!(again[0].message_id, first[0].message_id);
    assert_eq!(again[0].body, first[0].body);
    assert_eq!(again[0].attributes["ApproximateReceiveCount"], "2");

    // Deleted this time: gone for good.
    f.poller
        .delete(
            again[0]
                .receipt_handle
                .as_deref()
                .expect("a receipt handle"),
        )
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(f.poller.receive(10, 0).await.expect("receive").is_empty());
}

#[tokio::test]
async fn the_queues_have_the_shape_template_yaml_gives_them() {
    let moto = MotoServer::shared();
    let resources = moto.create_resources("shape").await;
    let (config, counter) = moto.sdk_config().await;
    let client = moto::sqs_client(&config, &counter);
    let attributes = client
        .get_queue_attributes()
        .queue_url(&resources.queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("GetQueueAttributes");
    let attributes = attributes.attributes().expect("attributes");
    assert_eq!(attributes[&QueueAttributeName::VisibilityTimeout], "180");
    let redrive: serde_json::Value =
        serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).expect("JSON");
    assert_eq!(redrive["maxReceiveCount"], 5);
    let dlq_name = resources
        .dead_letter_queue_url
        .rsplit('/')
        .next()
        .expect("a queue name");
    assert!(
        redrive["deadLetterTargetArn"]
            .as_str()
            .is_some_and(|arn| arn.ends_with(&format!(":{dlq_name}"))),
        "{redrive}"
    );
}
