//! The delivery engine end to end on in-memory ports — the FIFO queue with visibility and a
//! dead-letter queue, consumed by the same pollers the local runner runs — with the real
//! Connector client talking to a Connector stand-in that answers as scripted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use proactive_bot::adapters::memory::{
    MemoryJobStore, MemoryNotificationStore, MemoryQueue, MemoryRateLimitStore,
};
use proactive_bot::adapters::memory_registry::MemoryConversationRegistry;
use proactive_bot::auth::AuthConfig;
use proactive_bot::delivery::consumer::{QueueConsumer, consume, sqs_record};
use proactive_bot::delivery::engine::NOT_REGISTERED;
use proactive_bot::delivery::limits::LimitsConfig;
use proactive_bot::delivery::{
    Content, Decision, Delivered, DeliveryState, EngineConfig, Notification, NotificationId, Source,
};
use proactive_bot::registry::Status;
use proactive_bot::schema::ConversationReference;
use proactive_bot::testing::connector::{ConnectorStandIn, ScriptedResponse};
use proactive_bot::wiring::{Ports, ReminderPorts, Services};

const WAIT: Duration = Duration::from_secs(20);

struct Fixture {
    connector: ConnectorStandIn,
    services: Services,
    queue: Arc<MemoryQueue>,
    consumer: Option<tokio::task::JoinHandle<()>>,
}

struct Options {
    max_receives: u32,
    visibility: Duration,
    lease: Duration,
    consume: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_receives: 100,
            visibility: Duration::from_secs(30),
            lease: Duration::from_secs(20),
            consume: true,
        }
    }
}

async fn fixture(options: Options) -> Fixture {
    let connector = ConnectorStandIn::start().await;
    let queue = Arc::new(MemoryQueue::new(options.visibility, options.max_receives));
    let ports = Ports {
        jobs: Arc::new(MemoryJobStore::new()),
        notifications: Arc::new(MemoryNotificationStore::new()),
        limits: Arc::new(MemoryRateLimitStore::new()),
        registry: Arc::new(MemoryConversationRegistry::new()),
        queue: queue.clone(),
        requests: Arc::new(proactive_bot::adapters::memory_requests::MemoryRequestStore::new()),
        reminders: ReminderPorts::in_memory(queue.clone()),
    };
    let services = Services::with_limits(
        &AuthConfig::default(),
        LimitsConfig::default(),
        EngineConfig {
            lease: options.lease,
            max_receives: options.max_receives,
            // One message per notification, never held: these tests are about delivery
            // itself (digests and holding have their own, in tests/conversation_flow.rs).
            digest_window: Duration::ZERO,
            quiet: Duration::ZERO,
            ..EngineConfig::default()
        },
        ports,
    )
    .unwrap();
    let consumer = options
        .consume
        .then(|| tokio::spawn(consume(services.engine.clone(), services.queue.clone(), 2)));
    Fixture {
        connector,
        services,
        queue,
        consumer,
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            consumer.abort();
        }
    }
}

impl Fixture {
    fn reference(&self, conversation: &str) -> ConversationReference {
        proactive_bot::testing::reference(&self.connector.service_url(), conversation)
    }

    fn notification(&self, id: &str, conversation: &str) -> Notification {
        Notification::new(
            NotificationId::parse(id).unwrap(),
            Source::Job { number: 1 },
            self.reference(conversation),
            Content::text(id),
            Utc::now(),
        )
    }

    async fn notify(&self, id: &str, conversation: &str) -> NotificationId {
        self.submit(self.notification(id, conversation)).await.id
    }

    /// Registers the notification's conversation at its target (the engine delivers only to
    /// registered conversations, at the reference registered), then hands it to the engine.
    async fn submit(&self, notification: Notification) -> Notification {
        self.services
            .registry
            .seen(&notification.target, Utc::now())
            .await
            .unwrap();
        self.services.notifier.notify(notification).await.unwrap()
    }

    async fn stored(&self, id: &NotificationId) -> Notification {
        self.services.notifications.get(id).await.unwrap().unwrap()
    }

    /// Waits until the notification leaves Queued/Sending for a final or given-up state.
    async fn settled(&self, id: &NotificationId) -> Notification {
        let deadline = Instant::now() + WAIT;
        loop {
            let stored = self.stored(id).await;
            if matches!(
                stored.state,
                DeliveryState::Sent { .. }
                    | DeliveryState::Failed { .. }
                    | DeliveryState::GaveUp { .. }
            ) {
                return stored;
            }
            assert!(Instant::now() < deadline, "{id} never settled: {stored:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn texts(&self) -> Vec<String> {
        self.connector
            .requests()
            .iter()
            .map(|r| r.text().to_owned())
            .collect()
    }
}

fn error_body(code: &str) -> String {
    format!(r#"{{"error":{{"code":"{code}","message":"refused"}}}}"#)
}

#[tokio::test]
async fn every_permanent_answer_fails_the_notification_at_once_with_its_reason() {
    let f = fixture(Options::default()).await;
    let cases = [
        (400, None, "400"),
        (404, Some("ConversationNotFound"), "ConversationNotFound"),
        (413, None, "413"),
        (
            403,
            Some("BotNotInConversationRoster"),
            "BotNotInConversationRoster",
        ),
        (
            403,
            Some("ConversationBlockedByUser"),
            "ConversationBlockedByUser",
        ),
        (403, Some("BotDisabledByAdmin"), "BotDisabledByAdmin"),
        (403, Some("NotEnoughPermissions"), "NotEnoughPermissions"),
        (302, None, "302"),
    ];
    for (n, (status, code, expected)) in cases.into_iter().enumerate() {
        let body = code.map(error_body);
        f.connector
            .script(ScriptedResponse::status(status, body.as_deref()));
        let before = f.connector.requests().len();
        let id = f
            .notify(&format!("p{n}"), &format!("conversation-{n}"))
            .await;
        let stored = f.settled(&id).await;
        match &stored.state {
            DeliveryState::Failed { reason, .. } => {
                assert!(reason.contains(expected), "{status}: {reason}")
            }
            other => panic!("{status}: {other:?}"),
        }
        assert_eq!(stored.attempts, 1, "{status}");
        assert_eq!(
            f.connector.requests().len(),
            before + 1,
            "{status}: one request, no retry"
        );
    }
    assert!(
        f.queue.dead_letters().is_empty(),
        "failed is final, not dead-lettered"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(f.queue.is_empty(), "every message was deleted");
}

#[tokio::test]
async fn a_conversation_that_never_talked_to_the_bot_is_not_messaged() {
    let f = fixture(Options::default()).await;
    let notification = f.notification("unregistered", "stranger");
    let id = f.services.notifier.notify(notification).await.unwrap().id;
    let stored = f.settled(&id).await;
    assert!(
        matches!(&stored.state, DeliveryState::Failed { reason, .. } if reason == NOT_REGISTERED),
        "{stored:?}"
    );
    assert!(f.connector.requests().is_empty(), "nothing sent");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(f.queue.is_empty() && f.queue.dead_letters().is_empty());
}

#[tokio::test]
async fn a_conversation_the_connector_says_is_gone_is_retired_and_not_messaged_again() {
    let f = fixture(Options::default()).await;
    f.connector.script(ScriptedResponse::status(
        404,
        Some(&error_body("ConversationNotFound")),
    ));
    let id = f.notify("first", "gone").await;
    assert!(matches!(
        f.settled(&id).await.state,
        DeliveryState::Failed { .. }
    ));
    let registration = f.services.registry.get("gone").await.unwrap().unwrap();
    match &registration.status {
        Status::Retired { reason, .. } => {
            assert!(reason.contains("ConversationNotFound"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // A producer that still holds the old reference: refused before any request.
    let second = f.notification("second", "gone");
    let id = f.services.notifier.notify(second).await.unwrap().id;
    let stored = f.settled(&id).await;
    assert!(
        matches!(&stored.state, DeliveryState::Failed { reason, .. } if reason == NOT_REGISTERED),
        "{stored:?}"
    );
    assert_eq!(
        f.connector.requests().len(),
        1,
        "only the first was attempted"
    );
}

#[tokio::test]
async fn the_registered_reference_is_used_not_the_one_the_notification_was_made_with() {
    let f = fixture(Options::default()).await;
    f.services
        .registry
        .seen(&f.reference("moved"), Utc::now())
        .await
        .unwrap();
    let mut notification = f.notification("stale-reference", "moved");
    notification.target.service_url = "http://127.0.0.1:9/old/".into();
    let id = f.services.notifier.notify(notification).await.unwrap().id;
    assert!(matches!(
        f.settled(&id).await.state,
        DeliveryState::Sent { .. }
    ));
    assert_eq!(f.texts(), vec!["stale-reference"]);
}

#[tokio::test]
async fn unauthorised_answers_refresh_the_token_once_then_fail_or_succeed() {
    let f = fixture(Options::default()).await;
    f.connector.script(ScriptedResponse::status(401, None));
    f.connector.script(ScriptedResponse::status(401, None));
    let id = f.notify("twice-401", "c401").await;
    let stored = f.settled(&id).await;
    assert!(
        matches!(stored.state, DeliveryState::Failed { ref reason, .. } if reason.contains("401")),
        "{stored:?}"
    );
    assert_eq!(
        f.connector.requests().len(),
        2,
        "one retry with a fresh token, no more"
    );

    f.connector.clear();
    f.connector.script(ScriptedResponse::status(403, None));
    let id = f.notify("403-then-ok", "c403").await;
    assert!(matches!(
        f.settled(&id).await.state,
        DeliveryState::Sent { .. }
    ));
    assert_eq!(f.connector.requests().len(), 2);
}

#[tokio::test]
async fn a_refused_or_unbuildable_service_url_fails_without_a_request() {
    let f = fixture(Options::default()).await;
    let mut notification = f.notification("bad-url", "c");
    notification.target.service_url = "not a url".into();
    let id = f.submit(notification).await.id;
    let stored = f.settled(&id).await;
    assert!(
        matches!(stored.state, DeliveryState::Failed { .. }),
        "{stored:?}"
    );
    assert!(f.connector.requests().is_empty());
}

#[tokio::test]
async fn a_transient_500_is_retried_and_the_user_still_hears() {
    let f = fixture(Options::default()).await;
    f.connector.script(ScriptedResponse::status(500, None));
    let id = f.notify("after-a-500", "c").await;
    let stored = f.settled(&id).await;
    assert!(
        matches!(stored.state, DeliveryState::Sent { .. }),
        "{stored:?}"
    );
    assert_eq!(stored.attempts, 2);
    assert_eq!(f.texts(), vec!["after-a-500", "after-a-500"]);
}

#[tokio::test]
async fn every_transient_answer_is_retried() {
    let f = fixture(Options::default()).await;
    for (n, status) in [408u16, 412, 429, 502, 503, 504].into_iter().enumerate() {
        f.connector
            .script(ScriptedResponse::status(status, None).with_header("Retry-After", "0"));
        let id = f.notify(&format!("t{n}"), &format!("ct{n}")).await;
        let stored = f.settled(&id).await;
        assert!(
            matches!(stored.state, DeliveryState::Sent { .. }),
            "{status}: {stored:?}"
        );
        assert_eq!(stored.attempts, 2, "{status}");
    }
    // A timeout (the stand-in answers after the client gave up) is transient too: covered by
    // the connector client's own tests; a transport error here is a refused connection.
    let mut notification = f.notification("unreachable", "cu");
    notification.target.service_url = "http://127.0.0.1:9/".into();
    let id = f.submit(notification).await.id;
    let deadline = Instant::now() + WAIT;
    loop {
        let stored = f.stored(&id).await;
        if stored.attempts >= 1 {
            assert_eq!(stored.state, DeliveryState::Queued, "retrying, not failed");
            assert!(stored.last_error.unwrap().contains("unreachable"));
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn server_errors_are_given_up_after_three_attempts_and_dead_lettered() {
    let f = fixture(Options::default()).await;
    for _ in 0..3 {
        f.connector.script(
            ScriptedResponse::status(500, Some(&error_body("ServiceError")))
                .with_header("Retry-After", "0"),
        );
    }
    let id = f.notify("three-500s", "c").await;
    let stored = f.settled(&id).await;
    match &stored.state {
        DeliveryState::GaveUp { last_error, .. } => assert!(last_error.contains("500")),
        other => panic!("{other:?}"),
    }
    assert_eq!(stored.attempts, 3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        f.queue.dead_letters().len(),
        1,
        "its message waits in the DLQ"
    );
    assert!(f.queue.is_empty());
    assert_eq!(f.connector.requests().len(), 3);

    // Redriven once the channel is healthy: delivered after all.
    assert_eq!(f.queue.redrive(), 1);
    let stored = f.settled(&id).await;
    let deadline = Instant::now() + WAIT;
    let mut stored = stored;
    while !matches!(stored.state, DeliveryState::Sent { .. }) {
        assert!(Instant::now() < deadline, "{stored:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        stored = f.stored(&id).await;
    }
    assert_eq!(stored.attempts, 4);
}

#[tokio::test]
async fn retry_after_one_second_is_honoured_within_seconds_not_minutes() {
    let f = fixture(Options::default()).await;
    f.connector.script(
        ScriptedResponse::status(429, Some(&error_body("Throttled")))
            .with_header("Retry-After", "1"),
    );
    let id = f.notify("throttled", "c").await;
    let stored = f.settled(&id).await;
    assert!(matches!(stored.state, DeliveryState::Sent { .. }));
    let requests = f.connector.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].received_at - requests[0].received_at;
    assert!(
        gap >= Duration::from_millis(950) && gap < Duration::from_secs(5),
        "retried {gap:?} after a Retry-After of 1 s"
    );
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let f = fixture(Options::default()).await;
    let at = Utc::now() + chrono::Duration::seconds(3);
    let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    f.connector
        .script(ScriptedResponse::status(503, None).with_header("Retry-After", &date));
    let id = f.notify("dated", "c").await;
    let stored = f.settled(&id).await;
    assert!(matches!(stored.state, DeliveryState::Sent { .. }));
    let requests = f.connector.requests();
    let gap = requests[1].received_at - requests[0].received_at;
    assert!(
        gap >= Duration::from_millis(1500) && gap < Duration::from_secs(8),
        "retried {gap:?} after a Retry-After date ~3 s ahead"
    );
}

#[tokio::test]
async fn a_later_notification_never_overtakes_an_earlier_one_being_retried() {
    let f = fixture(Options::default()).await;
    // The first send to "a" fails twice; "a"'s later notifications, queued behind it (and
    // received in later batches), must wait; "b" proceeds meanwhile.
    f.connector
        .script(ScriptedResponse::status(503, None).with_header("Retry-After", "1"));
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(f.notify(&format!("a{n}"), "a").await);
    }
    // a1's first send has failed before b1 and a4..a6 are queued.
    f.connector.wait_for(1, WAIT).await;
    f.notify("b1", "b").await;
    for n in 4..=6 {
        ids.push(f.notify(&format!("a{n}"), "a").await);
    }
    for id in &ids {
        assert!(matches!(
            f.settled(id).await.state,
            DeliveryState::Sent { .. }
        ));
    }
    let texts = f.texts();
    let a: Vec<&str> = texts
        .iter()
        .map(String::as_str)
        .filter(|t| t.starts_with('a'))
        .collect();
    assert_eq!(
        a,
        vec!["a1", "a1", "a2", "a3", "a4", "a5", "a6"],
        "{texts:?}"
    );
    let b = texts.iter().position(|t| t == "b1").unwrap();
    assert!(
        b < texts.iter().rposition(|t| t == "a1").unwrap(),
        "b was not held up by a: {texts:?}"
    );
}

#[tokio::test]
async fn the_last_allowed_receive_gives_up_with_the_last_error() {
    let f = fixture(Options {
        max_receives: 3,
        ..Options::default()
    })
    .await;
    for _ in 0..5 {
        f.connector
            .script(ScriptedResponse::status(503, None).with_header("Retry-After", "0"));
    }
    let id = f.notify("never-clears", "c").await;
    let stored = f.settled(&id).await;
    match &stored.state {
        DeliveryState::GaveUp { last_error, .. } => assert!(last_error.contains("503")),
        other => panic!("{other:?}"),
    }
    assert_eq!(stored.attempts, 3, "one attempt per receive, no more");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(f.queue.dead_letters().len(), 1);
}

#[tokio::test]
async fn a_redriven_notification_that_was_already_sent_is_not_sent_again() {
    let f = fixture(Options::default()).await;
    let id = f.notify("sent-once", "c").await;
    assert!(matches!(
        f.settled(&id).await.state,
        DeliveryState::Sent { .. }
    ));
    // Its message lands in the DLQ anyway (an operator moved it, a crash after the send).
    let copy = f.stored(&id).await.message();
    let records = [sqs_record("dlq-copy", &copy.to_body())];
    let results = f.services.engine.handle_batch(&records).await;
    assert_eq!(results[0].delivered, Delivered::Duplicate);
    assert_eq!(results[0].decision, Decision::Done);
    assert_eq!(f.connector.requests().len(), 1);
}

#[tokio::test]
async fn a_crash_between_send_and_record_sends_at_most_one_duplicate() {
    let f = fixture(Options {
        visibility: Duration::from_millis(600),
        lease: Duration::from_millis(300),
        consume: false,
        ..Options::default()
    })
    .await;
    let id = f.notify("crashy", "c").await;
    // A worker receives the message, claims the notification and sends it — then dies before
    // recording the outcome or deleting the message.
    let received = f.queue.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(received.len(), 1);
    let now = Utc::now();
    let claimed = f
        .services
        .notifications
        .claim(&id, now, now + chrono::Duration::milliseconds(300))
        .await
        .unwrap();
    assert!(matches!(
        claimed,
        proactive_bot::delivery::Claim::Claimed(_)
    ));
    let activity = f
        .reference("c")
        .address(Content::text("crashy").to_activity());
    proactive_bot::connector::ConnectorClient::new(Default::default())
        .unwrap()
        .send_to_conversation(&activity)
        .await
        .unwrap();

    // The message comes back after its visibility timeout; the lease has lapsed by then.
    let consumer = tokio::spawn(consume(
        f.services.engine.clone(),
        f.services.queue.clone(),
        1,
    ));
    let stored = f.settled(&id).await;
    assert!(matches!(stored.state, DeliveryState::Sent { .. }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    consumer.abort();
    assert_eq!(f.texts(), vec!["crashy", "crashy"], "exactly one duplicate");
    assert!(f.queue.is_empty());
}

#[tokio::test]
async fn malformed_and_unknown_messages_are_acknowledged() {
    let f = fixture(Options {
        consume: false,
        ..Options::default()
    })
    .await;
    let unknown = f.notification("never-created", "c").message();
    let results = f
        .services
        .engine
        .handle_batch(&[
            sqs_record("m1", "not json"),
            sqs_record("m2", &unknown.to_body()),
            sqs_record("m3", r#"{"v":1,"kind":"jobCompleted","job":7}"#),
        ])
        .await;
    assert!(matches!(results[0].delivered, Delivered::Malformed(_)));
    assert_eq!(results[1].delivered, Delivered::Unknown);
    assert!(matches!(results[2].delivered, Delivered::Malformed(_)));
    assert!(results.iter().all(|r| r.decision == Decision::Done));
    assert!(f.connector.requests().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn each_log_line_of_a_delivery_carries_its_own_ids() {
    let (logs, _guard) = proactive_bot::testing::logs::capture();
    let f = fixture(Options::default()).await;
    // Slow answers, so deliveries of different conversations interleave.
    for _ in 0..6 {
        f.connector.script(
            ScriptedResponse::status(200, Some(r#"{"id":"x"}"#)).delayed(Duration::from_millis(50)),
        );
    }
    let mut expected = Vec::new();
    for n in 1..=6 {
        let mut notification = f.notification(&format!("job-{n}00000-1"), &format!("conv-{n}"));
        notification.source = Source::Job {
            number: n * 100_000,
        };
        let stored = f.submit(notification).await;
        expected.push(stored);
    }
    for notification in &expected {
        f.settled(&notification.id).await;
    }
    let text = logs.text();
    let mut checked = 0;
    for line in text.lines().filter(|l| l.contains("delivery{")) {
        let notification = expected
            .iter()
            .find(|n| line.contains(&format!("notification={}", n.id)))
            .unwrap_or_else(|| panic!("a delivery line without a known notification: {line}"));
        assert!(
            line.contains(&format!("correlation_id={}", notification.correlation_id)),
            "{line}"
        );
        if line.contains("source=") {
            assert!(
                line.contains(&format!("source={}", notification.source)),
                "{line}"
            );
        }
        for other in expected.iter().filter(|n| n.id != notification.id) {
            assert!(!line.contains(other.id.as_str()), "{line}");
        }
        checked += 1;
    }
    assert!(checked >= 6, "{text}");
    assert!(
        text.lines()
            .filter(|l| l.contains("notification sent"))
            .all(|l| l.contains("source=job:")),
        "{text}"
    );
}
