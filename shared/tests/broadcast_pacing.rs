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
