//! The SQS delivery queue against moto, over SQS's real wire protocol, on the FIFO queues
//! template.yaml defines (created by scripts/local_resources.py): order per conversation,
//! deduplication, visibility as the engine's retry timer, and the dead-letter queue.

use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsMessage;
use proactive_bot::adapters::sqs::SqsQueue;
use proactive_bot::delivery::consumer::{QueueConsumer, QueueControl};
use proactive_bot::delivery::{DeliveryMessage, NotificationId, NotificationQueue};
use proactive_bot::testing::moto::{self, MotoServer, RequestCounter};

struct Fixture {
    queue: SqsQueue,
    dead_letters: SqsQueue,
    counter: RequestCounter,
}

async fn fixture(name: &str) -> Fixture {
    let moto = MotoServer::shared();
    let resources = moto.create_resources(name).await;
    let (config, counter) = moto.sdk_config().await;
    let client = moto::sqs_client(&config, &counter);
    Fixture {
        queue: SqsQueue::new(
            client.clone(),
            &resources.queue_url,
            &resources.dead_letter_queue_url,
        ),
        dead_letters: SqsQueue::new(
            client,
            &resources.dead_letter_queue_url,
            &resources.dead_letter_queue_url,
        ),
        counter,
    }
}

fn message(id: &str, conversation: &str) -> DeliveryMessage {
    DeliveryMessage {
        id: NotificationId::parse(id).unwrap(),
        conversation: conversation.to_owned(),
        channel: "msteams".to_owned(),
        tenant: Some("tenant-1".to_owned()),
        correlation_id: format!("corr-{id}"),
        urgent: false,
        update: false,
        slot: None,
    }
}

fn ids(records: &[SqsMessage]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            DeliveryMessage::from_body(r.body.as_deref().unwrap())
                .unwrap()
                .id
                .to_string()
        })
        .collect()
}

/// Receives (short polls) until `count` messages came or `within` elapsed.
async fn receive(queue: &SqsQueue, count: usize, within: Duration) -> Vec<SqsMessage> {
    let deadline = Instant::now() + within;
    let mut all = Vec::new();
    while all.len() < count && Instant::now() < deadline {
        all.extend(queue.receive(10, Duration::from_secs(1)).await.unwrap());
    }
    all
}

#[tokio::test]
async fn a_queued_message_arrives_with_its_body_group_and_correlation_id_in_one_request() {
    let f = fixture("sqs-roundtrip").await;
    let sent = message("job-1-1", "19:f00dfeed@thread.skype;messageid=1");
    f.queue.enqueue(&sent).await.unwrap();
    assert_eq!(f.counter.count("SQS", "SendMessage"), 1);
    let received = receive(&f.queue, 1, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 1);
    let record = &received[0];
    assert_eq!(
        DeliveryMessage::from_body(record.body.as_deref().unwrap()).unwrap(),
        sent
    );
    assert_eq!(record.attributes["MessageGroupId"], sent.group());
    assert_eq!(record.attributes["ApproximateReceiveCount"], "1");
    assert_eq!(
        record.message_attributes["correlationId"]
            .string_value
            .as_deref(),
        Some("corr-job-1-1")
    );
    assert!(record.receipt_handle.is_some());
}

#[tokio::test]
async fn the_same_notification_queued_twice_is_delivered_once() {
    let f = fixture("sqs-dedup").await;
    f.queue.enqueue(&message("n-1", "c")).await.unwrap();
    f.queue.enqueue(&message("n-1", "c")).await.unwrap();
    let received = receive(&f.queue, 2, Duration::from_secs(3)).await;
    assert_eq!(ids(&received), vec!["n-1"]);
}

#[tokio::test]
async fn a_conversation_is_held_while_its_head_is_put_back_and_others_go_on() {
    let f = fixture("sqs-fifo").await;
    for (id, conversation) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        f.queue.enqueue(&message(id, conversation)).await.unwrap();
    }
    let first = receive(&f.queue, 3, Duration::from_secs(5)).await;
    assert_eq!(ids(&first), vec!["a1", "a2", "b1"], "in order per group");
    // a1 fails and comes back in 2 s; a2, unattempted, is put back at once — and still waits
    // behind a1, as the engine relies on; b1 is done.
    for (record, delay) in first[..2].iter().zip([2, 0]) {
        f.queue
            .retry_in(
                record.receipt_handle.as_deref().unwrap(),
                Duration::from_secs(delay),
            )
            .await
            .unwrap();
    }
    f.queue
        .delete(first[2].receipt_handle.as_deref().unwrap())
        .await
        .unwrap();
    f.queue.enqueue(&message("b2", "b")).await.unwrap();
    let started = Instant::now();
    let next = receive(&f.queue, 1, Duration::from_secs(5)).await;
    assert_eq!(ids(&next), vec!["b2"], "b is not held up by a");
    assert!(started.elapsed() < Duration::from_millis(1900));
    f.queue
        .delete(next[0].receipt_handle.as_deref().unwrap())
        .await
        .unwrap();
    let again = receive(&f.queue, 2, Duration::from_secs(10)).await;
    assert_eq!(ids(&again), vec!["a1", "a2"], "a comes back in order");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "not before its visibility: {:?}",
        started.elapsed()
    );
    assert_eq!(again[0].attributes["ApproximateReceiveCount"], "2");
    assert_eq!(again[1].attributes["ApproximateReceiveCount"], "2");
    assert_eq!(f.counter.count("SQS", "ChangeMessageVisibility"), 2);
}

#[tokio::test]
async fn a_dead_letter_keeps_its_body_group_and_correlation_id() {
    let f = fixture("sqs-dlq").await;
    let sent = message("gave-up", "c");
    f.queue.enqueue(&sent).await.unwrap();
    let received = receive(&f.queue, 1, Duration::from_secs(5)).await;
    f.queue.dead_letter(&received[0]).await.unwrap();
    f.queue
        .delete(received[0].receipt_handle.as_deref().unwrap())
        .await
        .unwrap();
    let dead = receive(&f.dead_letters, 1, Duration::from_secs(5)).await;
    assert_eq!(ids(&dead), vec!["gave-up"]);
    assert_eq!(dead[0].attributes["MessageGroupId"], sent.group());
    assert_eq!(
        dead[0].message_attributes["correlationId"]
            .string_value
            .as_deref(),
        Some("corr-gave-up")
    );
    assert!(
        f.queue
            .receive(10, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn many_messages_go_ten_per_request_each_once_in_order_per_conversation() {
    let f = fixture("sqs-many").await;
    let messages: Vec<DeliveryMessage> = (0..25)
        .map(|n| message(&format!("many-{n:02}"), &format!("conversation-{}", n % 5)))
        .collect();
    f.counter.reset();
    f.queue.enqueue_many(&messages).await.unwrap();
    assert_eq!(
        f.counter.count("SQS", "SendMessageBatch"),
        3,
        "25 = 10 + 10 + 5"
    );
    assert_eq!(f.counter.total(), 3);
    // Sending them again (a fan-out page run twice) is deduplicated.
    f.queue.enqueue_many(&messages).await.unwrap();

    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.len() < 25 && Instant::now() < deadline {
        let batch = f.queue.receive(10, Duration::from_secs(1)).await.unwrap();
        let handles: Vec<String> = batch
            .iter()
            .filter_map(|r| r.receipt_handle.clone())
            .collect();
        received.extend(ids(&batch));
        f.queue.delete_all(&handles).await.unwrap();
    }
    let mut sorted = received.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 25, "each message once: {received:?}");
    assert_eq!(received.len(), 25, "no duplicates: {received:?}");
    for conversation in 0..5 {
        let order: Vec<&String> = received
            .iter()
            .filter(|id| id[5..].parse::<usize>().unwrap() % 5 == conversation)
            .collect();
        let mut expected = order.clone();
        expected.sort();
        assert_eq!(order, expected, "conversation {conversation} in order");
    }
    assert!(
        f.queue
            .receive(10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
}
