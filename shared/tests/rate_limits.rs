//! Channel limits across concurrent invocations: two delivery engines — two Lambda instances,
//! each with its own in-process cache and its own pollers — share the stores and the queue,
//! and deliver into a simulator that enforces Teams' limits exactly (429 + Retry-After when a
//! window is exceeded). On in-memory ports here; on DynamoDB (moto) in the same shape below,
//! and at scale in `functions/messages/benches/delivery.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use proactive_bot::adapters::dynamodb_delivery::DynamoDeliveryStore;
use proactive_bot::adapters::dynamodb_registry::DynamoConversationRegistry;
use proactive_bot::adapters::memory::{
    MemoryJobStore, MemoryNotificationStore, MemoryQueue, MemoryRateLimitStore,
};
use proactive_bot::adapters::memory_registry::MemoryConversationRegistry;
use proactive_bot::adapters::sqs::SqsQueue;
use proactive_bot::auth::AuthConfig;
use proactive_bot::delivery::consumer::{DeliveryQueue, consume};
use proactive_bot::delivery::limits::{LimitsConfig, RateLimitStore};
use proactive_bot::delivery::{
    Content, DeliveryState, EngineConfig, Notification, NotificationId, NotificationStore, Source,
};
use proactive_bot::jobs::JobStore;
use proactive_bot::registry::{ConversationRegistry, RegistryRetention};
use proactive_bot::schema::ConversationReference;
use proactive_bot::testing::moto::{self, MotoServer};
use proactive_bot::testing::simulator::{SimulatorConfig, TeamsSimulator};
use proactive_bot::wiring::{Ports, ReminderPorts, Services};

struct Shared {
    jobs: Arc<dyn JobStore>,
    notifications: Arc<dyn NotificationStore>,
    limits: Arc<dyn RateLimitStore>,
    registry: Arc<dyn ConversationRegistry>,
    queue: Arc<dyn DeliveryQueue>,
}

/// Teams' limits, with the margin every window is widened by sized for this machine rather
/// than for a Lambda next to the Connector. The margin is what absorbs the delay between the
/// moment the engine sends and the moment the channel counts; on a loaded two-core CI machine
/// (moto, other tests and both "instances" sharing it) that delay has reached 200 ms, and a
/// send delayed past the margin can draw a 429 that says nothing about the limiter's logic.
fn test_limits() -> LimitsConfig {
    LimitsConfig {
        margin: Duration::from_millis(400),
        ..LimitsConfig::default()
    }
}

/// Two "instances" over the same state, each consuming with two pollers.
fn start_instances(shared: &Shared) -> (Vec<Services>, Vec<tokio::task::JoinHandle<()>>) {
    let mut instances = Vec::new();
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let services = Services::with_limits(
            &AuthConfig::default(),
            test_limits(),
            // One message per notification and none held: this is about pacing sends.
            EngineConfig {
                digest_window: Duration::ZERO,
                quiet: Duration::ZERO,
                ..EngineConfig::default()
            },
            Ports {
                jobs: shared.jobs.clone(),
                notifications: shared.notifications.clone(),
                limits: shared.limits.clone(),
                registry: shared.registry.clone(),
                queue: shared.queue.clone(),
                requests: Arc::new(
                    proactive_bot::adapters::memory_requests::MemoryRequestStore::new(),
                ),
                reminders: ReminderPorts::in_memory(shared.queue.clone()),
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
    (instances, consumers)
}

fn reference(
    simulator: &TeamsSimulator,
    conversation: &str,
    tenant: &str,
) -> ConversationReference {
    let mut reference = proactive_bot::testing::reference(&simulator.service_url(), conversation);
    reference.conversation.tenant_id = Some(tenant.into());
    reference.channel_id = "msteams".into();
    reference
}

/// Registers each conversation (the engine delivers only to registered ones), then queues
/// `per_conversation[i]` numbered notifications ("<conversation> #<n>") for each
/// conversation, through the first instance's notifier, interleaved as a busy bot would.
async fn queue_all(
    services: &Services,
    simulator: &TeamsSimulator,
    plan: &[(String, usize)],
) -> Vec<NotificationId> {
    for (conversation, _) in plan {
        services
            .registry
            .seen(&reference(simulator, conversation, "tenant-1"), Utc::now())
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    let most = plan.iter().map(|(_, n)| *n).max().unwrap_or(0);
    for round in 0..most {
        for (conversation, count) in plan {
            if round >= *count {
                continue;
            }
            let id = NotificationId::parse(&format!("{conversation}-{round}")).unwrap();
            let notification = Notification::new(
                id.clone(),
                Source::Api {
                    request: "test".into(),
                },
                reference(simulator, conversation, "tenant-1"),
                Content::text(format!("{conversation} #{round}")),
                Utc::now(),
            );
            services.notifier.notify(notification).await.unwrap();
            ids.push(id);
        }
    }
    ids
}

/// Waits for every notification to be Sent, then checks: no 429, each sent exactly once, and
/// each conversation's in the order queued.
async fn assert_delivered_within_limits(
    simulator: &TeamsSimulator,
    notifications: &dyn NotificationStore,
    ids: &[NotificationId],
    plan: &[(String, usize)],
    within: Duration,
    max_throttled: usize,
) {
    let deadline = Instant::now() + within;
    loop {
        // moto applies an UpdateItem's SETs one by one, and a read in between can see a
        // notification `sent` without its `sentAt` (real DynamoDB writes an item atomically):
        // such a read is only "not yet".
        let stored = match notifications.get_many(ids).await {
            Ok(stored) => stored,
            Err(proactive_bot::delivery::StoreError::Corrupt { .. }) => Vec::new(),
            Err(error) => panic!("{error}"),
        };
        let sent = stored
            .iter()
            .filter(|n| matches!(n.state, DeliveryState::Sent { .. }))
            .count();
        if sent == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{sent} of {} sent in {within:?}; 429s so far: {}",
            ids.len(),
            simulator.throttled_count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = simulator.requests();
    let first = requests.first().map(|r| r.arrived);
    let timeline = |conversation: &Option<String>| {
        requests
            .iter()
            .filter(|r| &r.conversation_id == conversation)
            .map(|r| (r.arrived - first.unwrap(), r.status))
            .collect::<Vec<_>>()
    };
    let throttled: Vec<_> = requests
        .iter()
        .filter(|r| r.is_throttled())
        .map(|r| (r.conversation_id.clone(), timeline(&r.conversation_id)))
        .collect();
    assert!(
        simulator.throttled_count() <= max_throttled,
        "the channel had to throttle {} times (at most {max_throttled} allowed): {throttled:#?}",
        simulator.throttled_count()
    );
    for (conversation, count) in plan {
        let texts = simulator.accepted_texts_for(conversation);
        let expected: Vec<String> = (0..*count)
            .map(|n| format!("{conversation} #{n}"))
            .collect();
        assert_eq!(texts, expected, "exactly once, in order");
    }
    let per_conversation: HashMap<String, usize> =
        plan.iter().map(|(c, n)| (c.clone(), *n)).collect();
    assert_eq!(
        simulator.accepted().len(),
        per_conversation.values().sum::<usize>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_and_a_crowd_stay_within_teams_limits_across_two_instances() {
    let simulator = TeamsSimulator::start(SimulatorConfig::default()).await;
    let shared = Shared {
        jobs: Arc::new(MemoryJobStore::new()),
        notifications: Arc::new(MemoryNotificationStore::new()),
        limits: Arc::new(MemoryRateLimitStore::new()),
        registry: Arc::new(MemoryConversationRegistry::new()),
        queue: Arc::new(MemoryQueue::new(Duration::from_secs(30), 100)),
    };
    let (instances, consumers) = start_instances(&shared);
    // A burst of 20 into one conversation (the 8th must wait a second, the 9th two), and 80
    // more across 40 conversations of the same tenant (more than 50 within a second).
    let mut plan = vec![("burst".to_owned(), 20)];
    plan.extend((0..40).map(|n| (format!("c{n}"), 2)));
    let started = Instant::now();
    let ids = queue_all(&instances[0], &simulator, &plan).await;
    assert_delivered_within_limits(
        &simulator,
        shared.notifications.as_ref(),
        &ids,
        &plan,
        Duration::from_secs(40),
        0,
    )
    .await;
    // 20 into one conversation cannot take less than the windows allow: 7 at once, the 8th
    // after 1 s (7 / 1 s), the 9th–15th after 2 s, the 16th after 3 s (8 / 2 s), the rest
    // after 4 s.
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    for consumer in consumers {
        consumer.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limits_hold_across_two_instances_on_dynamodb_and_sqs() {
    let simulator = TeamsSimulator::start(SimulatorConfig::default()).await;
    let moto = MotoServer::shared();
    let resources = moto.create_resources("limits").await;
    let (config, counter) = moto.sdk_config().await;
    let dynamodb = moto::dynamodb_client(&config, &counter);
    let delivery = Arc::new(DynamoDeliveryStore::new(
        dynamodb.clone(),
        resources.delivery_table_name.clone(),
        chrono::Duration::days(1),
    ));
    let shared = Shared {
        jobs: Arc::new(MemoryJobStore::new()),
        notifications: delivery.clone(),
        limits: delivery,
        registry: Arc::new(DynamoConversationRegistry::new(
            dynamodb.clone(),
            resources.delivery_table_name.clone(),
            RegistryRetention::default(),
        )),
        queue: Arc::new(SqsQueue::new(
            moto::sqs_client(&config, &counter),
            &resources.queue_url,
            &resources.dead_letter_queue_url,
        )),
    };
    let (instances, consumers) = start_instances(&shared);
    let mut plan = vec![("burst".to_owned(), 12)];
    plan.extend((0..6).map(|n| (format!("c{n}"), 2)));
    let ids = queue_all(&instances[0], &simulator, &plan).await;
    assert_delivered_within_limits(
        &simulator,
        shared.notifications.as_ref(),
        &ids,
        &plan,
        Duration::from_secs(60),
        // moto's conditional writes are not atomic across concurrent requests, and under load
        // it can hand one FIFO message group to two receivers at once (see the README); either
        // can let one send through early. Real DynamoDB and SQS do neither. A 429 is retried
        // after its Retry-After, so delivery stays exactly once and in order.
        1,
    )
    .await;
    for consumer in consumers {
        consumer.abort();
    }
}
