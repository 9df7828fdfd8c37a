//! The notify API end to end on in-memory ports: HTTP requests to the router, the delivery
//! engine consuming the queue as the local runner does, and the real Connector client talking
//! to a Connector stand-in.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use proactive_bot::adapters::memory::{
    MemoryJobStore, MemoryNotificationStore, MemoryQueue, MemoryRateLimitStore,
};
use proactive_bot::adapters::memory_registry::MemoryConversationRegistry;
use proactive_bot::adapters::memory_requests::MemoryRequestStore;
use proactive_bot::auth::AuthConfig;
use proactive_bot::delivery::consumer::{QueueConsumer, consume, handle_records};
use proactive_bot::delivery::limits::LimitsConfig;
use proactive_bot::delivery::{EngineConfig, QueueError, QueueMessage};
use proactive_bot::notify::api::NotifyAuth;
use proactive_bot::notify::{CreatedRequest, FanOut, NotifyRequest, RequestStore};
use proactive_bot::schema::ConversationReference;
use proactive_bot::testing::connector::{ConnectorStandIn, RecordedRequest};
use proactive_bot::wiring::{Ports, Services};
use serde_json::{Value, json};

const KEY: &str = "test-notify-key";
const WAIT: Duration = Duration::from_secs(20);

struct Fixture {
    connector: ConnectorStandIn,
    services: Services,
    queue: Arc<MemoryQueue>,
    base: String,
    http: reqwest::Client,
    _server: tokio::task::JoinHandle<()>,
    consumer: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self._server.abort();
        if let Some(consumer) = self.consumer.take() {
            consumer.abort();
        }
    }
}

/// Ports whose queue and request store can be made to fail (a crash halfway, seen from the
/// fan-out: a step that errors after some of its work was done).
struct Faults {
    /// `send_many` calls that succeed before every later one fails (until reset).
    sends_before_failure: AtomicUsize,
    /// `save_fan_out` calls to fail, from the next one.
    failing_saves: AtomicUsize,
}

struct FlakyQueue {
    inner: Arc<MemoryQueue>,
    faults: Arc<Faults>,
}

#[async_trait]
impl proactive_bot::delivery::NotificationQueue for FlakyQueue {
    async fn send(&self, message: &QueueMessage) -> Result<(), QueueError> {
        self.inner.send(message).await
    }

    async fn send_many(&self, messages: &[QueueMessage]) -> Result<(), QueueError> {
        let left = self.faults.sends_before_failure.load(Ordering::SeqCst);
        if left == 0 {
            return Err(QueueError::Unavailable("injected: queue down".into()));
        }
        self.faults
            .sends_before_failure
            .store(left - 1, Ordering::SeqCst);
        self.inner.send_many(messages).await
    }
}

#[async_trait]
impl proactive_bot::delivery::consumer::QueueControl for FlakyQueue {
    async fn retry_in(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        self.inner.retry_in(receipt, delay).await
    }
    async fn dead_letter(
        &self,
        record: &aws_lambda_events::event::sqs::SqsMessage,
    ) -> Result<(), QueueError> {
        self.inner.dead_letter(record).await
    }
}

#[async_trait]
impl proactive_bot::delivery::consumer::QueueConsumer for FlakyQueue {
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<aws_lambda_events::event::sqs::SqsMessage>, QueueError> {
        self.inner.receive(max, wait).await
    }
    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.inner.delete(receipt).await
    }
}

struct FlakyRequests {
    inner: MemoryRequestStore,
    faults: Arc<Faults>,
}

#[async_trait]
impl RequestStore for FlakyRequests {
    async fn create(
        &self,
        request: &NotifyRequest,
    ) -> Result<CreatedRequest, proactive_bot::delivery::StoreError> {
        self.inner.create(request).await
    }
    async fn get(
        &self,
        id: &str,
    ) -> Result<Option<NotifyRequest>, proactive_bot::delivery::StoreError> {
        self.inner.get(id).await
    }
    async fn save_fan_out(
        &self,
        id: &str,
        fan_out: &FanOut,
    ) -> Result<(), proactive_bot::delivery::StoreError> {
        let failing = self.faults.failing_saves.load(Ordering::SeqCst);
        if failing > 0 {
            self.faults
                .failing_saves
                .store(failing - 1, Ordering::SeqCst);
            return Err(proactive_bot::delivery::StoreError::Unavailable(
                "injected: store down".into(),
            ));
        }
        self.inner.save_fan_out(id, fan_out).await
    }
}

async fn fixture_with(auth: NotifyAuth, faults: Option<Arc<Faults>>, consume_now: bool) -> Fixture {
    let connector = ConnectorStandIn::start().await;
    let queue = Arc::new(MemoryQueue::new(Duration::from_secs(30), 100));
    let (delivery_queue, requests): (
        Arc<dyn proactive_bot::delivery::consumer::DeliveryQueue>,
        Arc<dyn RequestStore>,
    ) = match &faults {
        Some(faults) => (
            Arc::new(FlakyQueue {
                inner: queue.clone(),
                faults: faults.clone(),
            }),
            Arc::new(FlakyRequests {
                inner: MemoryRequestStore::new(),
                faults: faults.clone(),
            }),
        ),
        None => (queue.clone(), Arc::new(MemoryRequestStore::new())),
    };
    let ports = Ports {
        jobs: Arc::new(MemoryJobStore::new()),
        notifications: Arc::new(MemoryNotificationStore::with_capacity(50_000)),
        limits: Arc::new(MemoryRateLimitStore::new()),
        queue: delivery_queue,
        registry: Arc::new(MemoryConversationRegistry::new()),
        requests,
        reminders: proactive_bot::wiring::ReminderPorts::in_memory(queue.clone()),
    };
    // Generous limits: these tests are about who gets what, not pacing.
    let limits: LimitsConfig = LimitsConfig {
        default: "conversation=100/1s;tenant=1000/1s".parse().unwrap(),
        ..LimitsConfig::default()
    };
    let mut services = Services::with_limits(
        &AuthConfig::default(),
        limits,
        EngineConfig::default(),
        ports,
    )
    .unwrap();
    services.notify_auth = auth;
    let (addr, server) =
        proactive_bot::testing::serve_on_loopback(services.router(), "bot router").await;
    let consumer = consume_now
        .then(|| tokio::spawn(consume(services.engine.clone(), services.queue.clone(), 3)));
    Fixture {
        connector,
        services,
        queue,
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        _server: server,
        consumer,
    }
}

async fn fixture() -> Fixture {
    fixture_with(NotifyAuth::ApiKey(Arc::from(KEY)), None, true).await
}

impl Fixture {
    fn reference(&self, conversation: &str, tenant: Option<&str>) -> ConversationReference {
        let mut reference =
            proactive_bot::testing::reference(&self.connector.service_url(), conversation);
        reference.conversation.tenant_id = tenant.map(str::to_owned);
        reference
    }

    async fn register(&self, conversation: &str, tenant: Option<&str>) {
        self.services
            .registry
            .seen(&self.reference(conversation, tenant), Utc::now())
            .await
            .unwrap();
    }

    async fn post(&self, body: Value, key: Option<&str>) -> (u16, Value) {
        self.post_raw(body.to_string(), Some(KEY), key).await
    }

    async fn post_raw(
        &self,
        body: String,
        api_key: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/api/notify", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(api_key) = api_key {
            request = request.bearer_auth(api_key);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn status(&self, id: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/api/notify/{id}", self.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls the status until nothing is pending (or fails after WAIT).
    async fn settled(&self, id: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (code, status) = self.status(id).await;
            assert_eq!(code, 200, "{status}");
            if status["pending"] == 0 && status["fanOut"] == "done" {
                return status;
            }
            assert!(Instant::now() < deadline, "never settled: {status}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The conversations the stand-in received messages for, with how many each.
    fn received(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for request in self.connector.requests() {
            *counts.entry(conversation_of(&request)).or_insert(0) += 1;
        }
        counts
    }
}

fn conversation_of(request: &RecordedRequest) -> String {
    request.body["conversation"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_api_needs_the_key_and_a_closed_api_refuses_everyone() {
    let f = fixture().await;
    f.register("c1", None).await;
    let body = json!({"conversationId": "c1", "text": "build 42 passed"}).to_string();
    for api_key in [None, Some("wrong-key"), Some("")] {
        let (status, answer) = f.post_raw(body.clone(), api_key, None).await;
        assert_eq!(status, 401, "{api_key:?}: {answer}");
    }
    let response = f
        .http
        .get(format!("{}/api/notify/r-0123", f.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401, "status needs the key too");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(f.connector.requests().is_empty(), "nothing sent");
    assert!(f.queue.is_empty(), "nothing queued");

    let (status, answer) = f.post_raw(body.clone(), Some(KEY), None).await;
    assert_eq!(status, 202, "{answer}");

    let closed = fixture_with(NotifyAuth::Closed, None, true).await;
    let (status, _) = closed.post_raw(body.clone(), Some(KEY), None).await;
    assert_eq!(status, 401, "no NOTIFY_API_KEY: every call refused");
    let iam = fixture_with(NotifyAuth::Iam, None, true).await;
    let (status, _) = iam.post_raw(body, Some(KEY), None).await;
    assert_eq!(status, 401, "IAM mode: a key is not enough");
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason_and_nothing_queued() {
    let f = fixture().await;
    f.register("c1", None).await;
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "not JSON"),
        (json!({"text": "hi"}).to_string(), 400, "no target"),
        (
            json!({"conversationId": "c1"}).to_string(),
            400,
            "no content",
        ),
        (
            json!({"conversationId": "c1", "text": "x".repeat(300 * 1024)}).to_string(),
            413,
            "too large",
        ),
    ];
    for (body, expected, reason) in cases {
        let (status, answer) = f.post_raw(body, Some(KEY), None).await;
        assert_eq!(status, expected, "{reason}: {answer}");
        if expected == 400 {
            let error = answer["error"].as_str().unwrap_or_default();
            assert!(error.contains(reason), "{error}");
        }
    }
    let (status, _) = f
        .post_raw(
            json!({"conversationId": "c1", "text": "x"}).to_string(),
            Some(KEY),
            Some(" "),
        )
        .await;
    assert_eq!(status, 400, "a blank idempotency key");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(f.connector.requests().is_empty(), "nothing sent");
    assert!(f.queue.is_empty(), "nothing queued");
}

#[tokio::test]
async fn named_conversations_are_sent_once_and_unregistered_ones_fail_unsent() {
    let f = fixture().await;
    f.register("c1", None).await;
    f.register("c2", None).await;
    f.register("gone", None).await;
    f.services
        .registry
        .retire("gone", "uninstalled", Utc::now())
        .await
        .unwrap();
    let card = json!({"contentType": "application/vnd.microsoft.card.adaptive",
        "content": {"type": "AdaptiveCard", "version": "1.5", "body": []}});
    let (status, answer) = f
        .post(
            json!({"conversationIds": ["c1", "c2", "stranger", "gone", "c1"],
                "text": "The price dropped", "attachments": [card]}),
            None,
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["recipients"], 4, "every target named, once");
    let id = answer["id"].as_str().unwrap().to_owned();

    let status = f.settled(&id).await;
    assert_eq!(status["recipients"], 4);
    assert_eq!(status["sent"], 2, "{status}");
    assert_eq!(status["failed"], 2, "{status}");
    assert_eq!(status["pending"], 0);
    let mut failures: Vec<(String, String)> = status["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["conversationId"].as_str().unwrap().to_owned(),
                f["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    failures.sort();
    assert_eq!(
        failures,
        vec![
            ("gone".to_owned(), "not registered".to_owned()),
            ("stranger".to_owned(), "not registered".to_owned()),
        ]
    );
    let received = f.received();
    assert_eq!(
        received,
        HashMap::from([("c1".to_owned(), 1), ("c2".to_owned(), 1)])
    );
    let sent = f.connector.requests();
    assert_eq!(sent[0].text(), "The price dropped");
    assert_eq!(sent[0].body["textFormat"], "plain", "read off the text");
    assert_eq!(
        sent[0].body["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );

    let (code, _) = f.status("r-00000000000000000000000000000000").await;
    assert_eq!(code, 404, "unknown id");
    let (code, _) = f.status("not%20an%20id").await;
    assert_eq!(code, 404, "malformed id");
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_first_request_and_sends_nothing_twice() {
    let f = fixture().await;
    f.register("c1", None).await;
    let body = json!({"conversationId": "c1", "text": "deploy finished"});
    let (first_status, first) = f.post(body.clone(), Some("deploy-77")).await;
    assert_eq!(first_status, 202, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    f.settled(&id).await;
    for _ in 0..3 {
        let (status, again) = f.post(body.clone(), Some("deploy-77")).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["id"], first["id"]);
        assert_eq!(again["recipients"], 1);
    }
    // Even with a different body: the key names the request.
    let (status, again) = f
        .post(
            json!({"conversationId": "c1", "text": "other"}),
            Some("deploy-77"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], first["id"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.received(), HashMap::from([("c1".to_owned(), 1)]));

    let (status, other) = f.post(body, Some("deploy-78")).await;
    assert_eq!(status, 202, "another key is another request");
    assert_ne!(other["id"], first["id"]);
}

#[tokio::test]
async fn a_broadcast_reaches_every_active_conversation_once_optionally_one_tenant() {
    let f = fixture().await;
    for i in 0..30 {
        let tenant = if i % 3 == 0 { "t2" } else { "t1" };
        f.register(&format!("c{i:02}"), Some(tenant)).await;
    }
    f.register("no-tenant", None).await;
    f.register("uninstalled", Some("t1")).await;
    f.services
        .registry
        .retire("uninstalled", "uninstalled", Utc::now())
        .await
        .unwrap();

    let (status, answer) = f
        .post(
            json!({"all": true, "tenantId": "t2", "text": "t2 only"}),
            None,
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["recipients"], 10);
    let status = f.settled(answer["id"].as_str().unwrap()).await;
    assert_eq!(
        (status["sent"].as_u64(), status["failed"].as_u64()),
        (Some(10), Some(0))
    );
    let received = f.received();
    assert_eq!(received.len(), 10);
    assert!(
        received
            .keys()
            .all(|c| c[1..].parse::<u32>().unwrap() % 3 == 0)
    );
    f.connector.clear();

    let (status, answer) = f.post(json!({"all": true, "text": "everyone"}), None).await;
    assert_eq!(status, 202);
    assert_eq!(answer["recipients"], 31, "30 with a tenant, one without");
    let status = f.settled(answer["id"].as_str().unwrap()).await;
    assert_eq!(status["sent"], 31, "{status}");
    let received = f.received();
    assert_eq!(received.len(), 31);
    assert!(received.values().all(|n| *n == 1), "{received:?}");
    assert!(!received.contains_key("uninstalled"));
}

#[tokio::test]
async fn a_broadcast_interrupted_halfway_resumes_without_duplicates() {
    let faults = Arc::new(Faults {
        // The named fan-out is not used; the broadcast's pages of 250 fail from the third.
        sends_before_failure: AtomicUsize::new(2),
        failing_saves: AtomicUsize::new(0),
    });
    let f = fixture_with(
        NotifyAuth::ApiKey(Arc::from(KEY)),
        Some(faults.clone()),
        false,
    )
    .await;
    for i in 0..1000 {
        f.register(&format!("c{i:04}"), Some("t1")).await;
    }
    let (status, answer) = f
        .post(json!({"all": true, "text": "hello all"}), None)
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["id"].as_str().unwrap().to_owned();

    // The fan-out step runs: two pages go out, the third fails (the queue is down).
    let records = f.queue.receive(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(records.len(), 1, "the broadcast's fan-out message");
    let (_, results) =
        handle_records(&f.services.engine, f.services.queue.as_ref(), &records).await;
    assert!(
        matches!(
            results[0].decision,
            proactive_bot::delivery::Decision::RetryIn(_)
        ),
        "{results:?}"
    );
    let (_, status) = f.status(&id).await;
    assert_eq!(status["fanOut"], "running");

    // A page whose cursor could not be saved is handed over again on resume.
    faults
        .sends_before_failure
        .store(usize::MAX, Ordering::SeqCst);
    faults.failing_saves.store(1, Ordering::SeqCst);
    let consumer = tokio::spawn(consume(
        f.services.engine.clone(),
        f.services.queue.clone(),
        3,
    ));
    let status = f.settled(&id).await;
    consumer.abort();
    assert_eq!(status["recipients"], 1000, "{status}");
    assert_eq!(status["sent"], 1000, "{status}");
    let received = f.received();
    assert_eq!(received.len(), 1000, "every conversation reached");
    let duplicated: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicates: {duplicated:?}");
}
