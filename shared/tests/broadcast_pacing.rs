//! Pacing a broadcast where its backlog is made (see `delivery::limits` and `notify`): the
//! fan-out queues each tenant's recipients just in time, each with a tenant slot it keeps to
//! the send. Two delivery "instances" (each its own engine, cache and pollers) share the
//! stores and the queue and deliver into a simulator that enforces Teams' limits exactly; on
//! in-memory ports, and with the pacing state (slots, send logs, notifications, registry) on
//! DynamoDB (moto) and the queue in memory with SQS's FIFO rules. Each recipient must be
//! received about once (not dozens of times, as when the backlog met the rate in the queue),
//! sent exactly once, with no 429 — also when the fan-out fails halfway through a page and
//! resumes. The rate itself is measured by `functions/messages/benches/broadcast.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use proactive_bot::adapters::memory::MemoryQueue;
use proactive_bot::auth::AuthConfig;
use proactive_bot::config::Backend;
use proactive_bot::delivery::consumer::{DeliveryQueue, QueueConsumer, QueueControl, consume};
use proactive_bot::delivery::limits::LimitsConfig;
use proactive_bot::delivery::{EngineConfig, NotificationQueue, QueueError, QueueMessage};
use proactive_bot::notify::NotifyBody;
use proactive_bot::registry::RegistryRetention;
use proactive_bot::testing::moto::{self, MotoServer};
use proactive_bot::testing::queue::CountingQueue;
use proactive_bot::testing::simulator::{SimulatorConfig, TeamsSimulator};
use proactive_bot::testing::teams_reference;
use proactive_bot::wiring::{Ports, Services};
use serde_json::json;

const TENANT: &str = "tenant-1";

/// Teams' limits with a margin sized for a loaded two-core CI machine (see
/// `tests/rate_limits.rs`): the delay between the engine's send and the channel's count has
/// reached 200 ms there.
fn test_limits() -> LimitsConfig {
    LimitsConfig {
        margin: Duration::from_millis(400),
        ..LimitsConfig::default()
    }
}

/// Fails the `fail_at`-th batch sent to the queue (once): a fan-out that dies halfway through
/// queueing a page.
struct FailingQueue {
    inner: Arc<dyn DeliveryQueue>,
    batches: AtomicUsize,
    fail_at: Option<usize>,
}

#[async_trait]
impl NotificationQueue for FailingQueue {
    async fn send(&self, message: &QueueMessage) -> Result<(), QueueError> {
        self.inner.send(message).await
    }

    async fn send_many(&self, messages: &[QueueMessage]) -> Result<(), QueueError> {
        let batch = self.batches.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_at == Some(batch) {
            return Err(QueueError::Unavailable("the test fails this batch".into()));
        }
        self.inner.send_many(messages).await
    }
}

#[async_trait]
impl QueueControl for FailingQueue {
    async fn retry_in(&self, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        self.inner.retry_in(receipt_handle, delay).await
    }

    async fn dead_letter(
        &self,
        record: &aws_lambda_events::event::sqs::SqsMessage,
    ) -> Result<(), QueueError> {
        self.inner.dead_letter(record).await
    }
}

#[async_trait]
impl QueueConsumer for FailingQueue {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<aws_lambda_events::event::sqs::SqsMessage>, QueueError> {
        self.inner.receive(max, wait).await
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.inner.delete(receipt_handle).await
    }
}

fn memory_ports() -> Ports {
    Ports::in_memory(100)
}

async fn dynamodb_ports() -> Ports {
    let moto = MotoServer::shared();
    let resources = moto.create_resources("pacing").await;
    let (config, counter) = moto.sdk_config().await;
    let ports = Ports::aws(
        moto::dynamodb_client(&config, &counter),
        moto::sqs_client(&config, &counter),
        &Backend::Aws {
            jobs_table: resources.table_name.clone(),
            delivery_table: resources.delivery_table_name.clone(),
            queue_url: resources.queue_url.clone(),
            dead_letter_queue_url: resources.dead_letter_queue_url.clone(),
        },
        chrono::Duration::days(1),
        RegistryRetention::default(),
    )
    .expect("AWS ports");
    // The queue in memory with SQS's FIFO rules: moto's FIFO queue slows with its depth and
    // under load hands one group to two receivers (see the README).
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(30), 100));
    Ports {
        queue: queue.clone(),
        reminders: proactive_bot::wiring::ReminderPorts::in_memory(queue),
        ..ports
    }
}

/// What became of one broadcast.
struct Drained {
    /// Records the pollers received, per recipient.
    receives_per_recipient: f64,
    /// Sends the channel accepted, by conversation.
    accepted: HashMap<String, usize>,
    throttled: usize,
    status: serde_json::Value,
}

/// Registers `recipients` conversations of one tenant, broadcasts to them through two
/// instances (two pollers each) and waits until each was accepted by the channel.
async fn broadcast(ports: Ports, recipients: usize, fail_batch: Option<usize>) -> Drained {
    let simulator = TeamsSimulator::start(SimulatorConfig {
        latency: Duration::from_millis(100),
        ..SimulatorConfig::default()
    })
    .await;
    let failing = Arc::new(FailingQueue {
        inner: ports.queue.clone(),
        batches: AtomicUsize::new(0),
        fail_at: fail_batch,
    });
    let counting = CountingQueue::new(failing);
    let shared = Ports {
        queue: counting.clone(),
        ..ports
    };
    let mut instances = Vec::new();
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let services = Services::with_limits(
            &AuthConfig::default(),
            test_limits(),
            EngineConfig::default(),
            Ports {
                jobs: shared.jobs.clone(),
                notifications: shared.notifications.clone(),
                limits: shared.limits.clone(),
                registry: shared.registry.clone(),
                queue: shared.queue.clone(),
                requests: shared.requests.clone(),
                reminders: proactive_bot::wiring::ReminderPorts::in_memory(shared.queue.clone()),
            },
        )
        .unwrap();
        consumers.push(tokio::spawn(consume(
            services.engine.clone(),
            services.queue.clone(),
            2,
        )));
        instances.push(services);
    }
    // They talked to the bot an hour ago: quiet now, so nothing is held.
    for n in 0..recipients {
        let reference = teams_reference(&simulator.service_url(), &format!("c{n:03}"), TENANT);
        shared
            .registry
            .seen(&reference, Utc::now() - chrono::Duration::hours(1))
            .await
            .unwrap();
    }
    let body =
        NotifyBody::from_json(&json!({"all": true, "tenantId": TENANT, "text": "hello"})).unwrap();
    let submitted = instances[0].notify.submit(body, None).await.unwrap();
    assert_eq!(submitted.recipients as usize, recipients);

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let accepted = simulator.accepted().len();
        if accepted >= recipients {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{accepted} of {recipients} accepted in 90 s; 429s: {}",
            simulator.throttled_count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Anything sent twice would arrive now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = instances[1]
        .notify
        .status(&submitted.id)
        .await
        .unwrap()
        .expect("the request's status");
    for consumer in consumers {
        consumer.abort();
    }
    let mut accepted = HashMap::new();
    for request in simulator.accepted() {
        *accepted
            .entry(request.conversation_id.clone().unwrap_or_default())
            .or_default() += 1;
    }
    eprintln!(
        "{recipients} recipients: {} receives, {} × 429",
        counting.received(),
        simulator.throttled_count()
    );
    Drained {
        receives_per_recipient: counting.received() as f64 / recipients as f64,
        accepted,
        throttled: simulator.throttled_count(),
        status: serde_json::to_value(&status).unwrap(),
    }
}

fn assert_each_once(drained: &Drained, recipients: usize) {
    assert_eq!(
        drained.accepted.len(),
        recipients,
        "every recipient reached"
    );
    let twice: Vec<_> = drained.accepted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(drained.status["sent"], recipients, "{}", drained.status);
    assert_eq!(drained.status["fanOut"], "done", "{}", drained.status);
}

/// About once: the fan-out's own steps and the odd late message (taking a new slot, or
/// coming back a second later) add a little; a backlog meeting the rate in the queue made it
/// 30 to 50.
const MOST_RECEIVES: f64 = 2.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_is_received_about_once_a_recipient_across_two_instances() {
    let recipients = 250;
    let drained = broadcast(memory_ports(), recipients, None).await;
    assert_each_once(&drained, recipients);
    assert_eq!(drained.throttled, 0, "the channel never had to throttle");
    assert!(
        drained.receives_per_recipient <= MOST_RECEIVES,
        "{} receives a recipient",
        drained.receives_per_recipient
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_that_fails_halfway_through_a_page_resumes_without_duplicates() {
    // Pages are 100 recipients queued 5 at a time: the 30th batch is in the second page.
    let recipients = 250;
    let drained = broadcast(memory_ports(), recipients, Some(30)).await;
    assert_each_once(&drained, recipients);
    assert_eq!(drained.throttled, 0, "the channel never had to throttle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_paced_on_dynamodb_is_received_about_once_and_resumes_after_a_failure() {
    let recipients = 120;
    let drained = broadcast(dynamodb_ports().await, recipients, Some(12)).await;
    assert_each_once(&drained, recipients);
    // moto's conditional writes are not atomic across concurrent requests (see the README):
    // one send may go early. Real DynamoDB serialises them.
    assert!(drained.throttled <= 1, "{} × 429", drained.throttled);
    assert!(
        drained.receives_per_recipient <= MOST_RECEIVES,
        "{} receives a recipient",
        drained.receives_per_recipient
    );
}

/// The limiter's rules for held slots and priority slots, on one store.
async fn held_and_priority_slots(store: Arc<dyn proactive_bot::delivery::limits::RateLimitStore>) {
    use proactive_bot::delivery::limits::{Admission, Block, RateLimiter};
    let limits = LimitsConfig::default();
    let max_wait = limits.max_wait;
    let limiter = RateLimiter::new(store, limits);
    let tenant = format!("held-{:x}", fastrand::u64(..));
    let now = Utc::now();
    let now_ms = now.timestamp_millis();
    let lead = Duration::from_millis(200);

    // A fan-out takes about 2 s of the tenant's slots, starting at most a lead away.
    let Block::Reserved { first, interval } = limiter
        .reserve_block("msteams", Some(&tenant), 95, lead, now)
        .await
        .unwrap()
    else {
        panic!("an idle tenant has room")
    };
    assert!(
        (now_ms + 100..=now_ms + 200).contains(&first),
        "{}",
        first - now_ms
    );
    assert_eq!(interval, Duration::from_millis(21));
    // And the counter knows: the next block is full until the first one ends.
    assert_eq!(
        limiter
            .reserve_block("msteams", Some(&tenant), 5, lead, now)
            .await
            .unwrap(),
        Block::Full(first + 95 * 21)
    );

    // A recipient keeps its held slot, exactly.
    let held = first + 3 * 21;
    match limiter
        .admit("msteams", "bulk-1", Some(&tenant), Some(held), now)
        .await
        .unwrap()
    {
        Admission::SendAt(at) => assert_eq!(at.timestamp_millis(), held),
        other => panic!("a held slot is kept: {other:?}"),
    }
    // A held slot more than a second away: back a moment before it, in whole seconds.
    assert_eq!(
        limiter
            .admit(
                "msteams",
                "bulk-2",
                Some(&tenant),
                Some(now_ms + 2_600),
                now
            )
            .await
            .unwrap(),
        Admission::RetryIn(Duration::from_secs(2))
    );
    // A late one is not used, and a bulk send takes no priority slot: the tenant is full.
    match limiter
        .admit("msteams", "bulk-3", Some(&tenant), Some(now_ms - 500), now)
        .await
        .unwrap()
    {
        Admission::RetryIn(_) => {}
        other => panic!("a late held slot must not be used: {other:?}"),
    }
    // An urgent send to the same tenant gets a priority slot within the wait…
    match limiter
        .admit("msteams", "urgent-1", Some(&tenant), None, now)
        .await
        .unwrap()
    {
        Admission::SendAt(at) => assert!(
            (at - now).to_std().unwrap_or_default() <= max_wait,
            "{at} for {now}"
        ),
        other => panic!("an urgent send finds a priority slot: {other:?}"),
    }
    // …and the next waits for the next priority slot (or the tenant), a second on.
    match limiter
        .admit("msteams", "urgent-2", Some(&tenant), None, now)
        .await
        .unwrap()
    {
        Admission::RetryIn(delay) => assert!(delay > max_wait, "{delay:?}"),
        other => panic!("one priority slot a 1.05 s: {other:?}"),
    }

    // A held slot never takes a send past the conversation's windows: after a burst of 7 in
    // this second, its slot (inside the second) is not kept.
    for _ in 0..7 {
        assert!(matches!(
            limiter
                .admit("msteams", "talkative", None, None, now)
                .await
                .unwrap(),
            Admission::SendAt(_)
        ));
    }
    match limiter
        .admit("msteams", "talkative", None, Some(now_ms + 150), now)
        .await
        .unwrap()
    {
        Admission::RetryIn(delay) => assert!(delay >= Duration::from_millis(900), "{delay:?}"),
        other => panic!("7 per second: {other:?}"),
    }
}

#[tokio::test]
async fn held_slots_are_kept_unless_late_and_urgent_sends_find_priority_slots_in_memory() {
    held_and_priority_slots(Arc::new(
        proactive_bot::adapters::memory::MemoryRateLimitStore::new(),
    ))
    .await;
}

#[tokio::test]
async fn held_slots_are_kept_unless_late_and_urgent_sends_find_priority_slots_on_dynamodb() {
    let moto = MotoServer::shared();
    let resources = moto.create_resources("held").await;
    let (config, counter) = moto.sdk_config().await;
    held_and_priority_slots(Arc::new(
        proactive_bot::adapters::dynamodb_delivery::DynamoDeliveryStore::new(
            moto::dynamodb_client(&config, &counter),
            resources.delivery_table_name.clone(),
            chrono::Duration::days(1),
        ),
    ))
    .await;
}
