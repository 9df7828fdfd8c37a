//! The completion worker on in-memory ports with a Connector stand-in: idempotency, retryable
//! and permanent failures, order within a conversation, malformed records.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use proactive_bot::adapters::memory::{MemoryCompletionQueue, MemoryJobStore};
use proactive_bot::bot::{Bot, SORRY_TEXT};
use proactive_bot::connector::{ConnectorClient, ConnectorConfig};
use proactive_bot::jobs::*;
use proactive_bot::schema::{Activity, ChannelAccount, ConversationAccount, ConversationReference};
use proactive_bot::testing::connector::{ConnectorStandIn, ScriptedResponse};
use proactive_bot::worker::{CompletionWorker, RecordOutcome, WorkerConfig, sqs_record};

fn reference(connector: &ConnectorStandIn, conversation: &str) -> ConversationReference {
    ConversationReference {
        user: ChannelAccount {
            id: "user".into(),
            ..Default::default()
        },
        bot: ChannelAccount {
            id: "bot".into(),
            ..Default::default()
        },
        conversation: ConversationAccount {
            id: conversation.into(),
            ..Default::default()
        },
        channel_id: "emulator".into(),
        service_url: connector.service_url(),
        ..Default::default()
    }
}

struct Fixture {
    connector: ConnectorStandIn,
    store: Arc<MemoryJobStore>,
    worker: CompletionWorker,
}

async fn fixture(lease: Duration) -> Fixture {
    let connector = ConnectorStandIn::start().await;
    let store = Arc::new(MemoryJobStore::new());
    let client = ConnectorClient::new(ConnectorConfig::default()).unwrap();
    let worker = CompletionWorker::new(
        store.clone(),
        client,
        WorkerConfig {
            lease,
            pacing: Duration::ZERO,
        },
    );
    Fixture {
        connector,
        store,
        worker,
    }
}

impl Fixture {
    async fn job(&self, n: u32, conversation: &str) -> Completion {
        let number = JobNumber::new(n).unwrap();
        let job = Job::new_running(number, reference(&self.connector, conversation), Utc::now());
        self.store.create(&job).await.unwrap();
        Completion::new(number, conversation)
    }

    async fn status(&self, n: u32) -> JobStatus {
        self.store
            .get(JobNumber::new(n).unwrap())
            .await
            .unwrap()
            .unwrap()
            .status
    }
}

#[tokio::test]
async fn a_retryable_send_failure_is_reported_and_the_redelivery_sends_once() {
    let f = fixture(Duration::from_millis(100)).await;
    let completion = f.job(1, "c1").await;
    f.connector.script(ScriptedResponse::status(503, None));
    let record = sqs_record("m1", &completion.to_body());
    let (response, _) = f.worker.handle_batch(std::slice::from_ref(&record)).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    assert_eq!(response.batch_item_failures[0].item_identifier, "m1");
    assert!(
        matches!(f.status(1).await, JobStatus::Completing { .. }),
        "marked complete, not yet notified"
    );
    assert_eq!(f.status(1).await.label(), "completing");

    // Redelivered while the first delivery's lease is live: backs off, sends nothing.
    let (response, outcomes) = f.worker.handle_batch(std::slice::from_ref(&record)).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    assert!(matches!(outcomes[0].1, RecordOutcome::Retry(_)));
    assert_eq!(f.connector.requests().len(), 1);

    // Redelivered after the lease lapsed (what the visibility timeout guarantees): repaired.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (response, outcomes) = f.worker.handle_batch(std::slice::from_ref(&record)).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        outcomes[0].1,
        RecordOutcome::Notified(JobNumber::new(1).unwrap())
    );
    assert!(matches!(f.status(1).await, JobStatus::Notified { .. }));
    assert_eq!(f.connector.requests().len(), 2);

    // And once more: a duplicate, nothing sent.
    let (_, outcomes) = f.worker.handle_batch(&[record]).await;
    assert_eq!(
        outcomes[0].1,
        RecordOutcome::Duplicate(JobNumber::new(1).unwrap())
    );
    assert_eq!(f.connector.requests().len(), 2);
}

#[tokio::test]
async fn a_conversation_the_bot_was_removed_from_marks_the_job_failed_with_the_reason() {
    let f = fixture(Duration::from_secs(60)).await;
    let completion = f.job(2, "c2").await;
    f.connector.script(ScriptedResponse::status(
        403,
        Some(r#"{"error":{"code":"BotNotInConversationRoster","message":"not in roster"}}"#),
    ));
    let (response, outcomes) = f
        .worker
        .handle_batch(&[sqs_record("m", &completion.to_body())])
        .await;
    assert!(response.batch_item_failures.is_empty(), "not retried");
    assert!(matches!(outcomes[0].1, RecordOutcome::DeliveryFailed(..)));
    let label = f.status(2).await.label();
    assert!(
        label.contains("failed") && label.contains("BotNotInConversationRoster"),
        "{label}"
    );
}

#[tokio::test]
async fn a_mixed_batch_lists_only_the_retryable_failures_and_keeps_conversation_order() {
    let f = fixture(Duration::from_secs(60)).await;
    let a1 = f.job(10, "a").await;
    let a2 = f.job(11, "a").await;
    let b1 = f.job(20, "b").await;
    let unknown = Completion::new(JobNumber::new(999_999).unwrap(), "z");
    // The first send (a1, in order within "a") fails with 502; b's send succeeds.
    f.connector.script(ScriptedResponse::status(502, None));
    let records = vec![
        sqs_record("a1", &a1.to_body()),
        sqs_record("malformed", "not json"),
        sqs_record("a2", &a2.to_body()),
        sqs_record("unknown", &unknown.to_body()),
    ];
    let (response, outcomes) = f.worker.handle_batch(&records).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, vec!["a1", "a2"], "a2 waits behind a1");
    assert_eq!(
        outcomes[1].1,
        RecordOutcome::Malformed(
            "malformed completion message: expected ident at line 1 column 2".into()
        )
    );
    assert_eq!(outcomes[2].1, RecordOutcome::Deferred);
    assert_eq!(
        outcomes[3].1,
        RecordOutcome::UnknownJob(JobNumber::new(999_999).unwrap())
    );
    assert!(f.status(11).await.is_running(), "a2 was not touched");

    let (response, _) = f
        .worker
        .handle_batch(&[sqs_record("b1", &b1.to_body())])
        .await;
    assert!(response.batch_item_failures.is_empty());
}

/// A store that is down.
struct DownStore;

#[async_trait]
impl JobStore for DownStore {
    async fn create(&self, _: &Job) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn get(&self, _: JobNumber) -> Result<Option<Job>, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn list_recent(&self, _: usize) -> Result<JobPage, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn complete_if_running(
        &self,
        _: JobNumber,
        _: DateTime<Utc>,
        _: DateTime<Utc>,
    ) -> Result<CompleteOutcome, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn record_delivery(
        &self,
        _: JobNumber,
        _: DeliveryOutcome,
        _: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
}

#[tokio::test]
async fn an_error_inside_a_turn_is_apologised_for() {
    let connector = ConnectorStandIn::start().await;
    let (queue, _receiver) = MemoryCompletionQueue::new();
    let client = ConnectorClient::new(ConnectorConfig::default()).unwrap();
    let bot = Bot::new(Arc::new(DownStore), Arc::new(queue), client);
    let r = reference(&connector, "c");
    for text in ["run", "show", "done 123456"] {
        let incoming = Activity {
            id: Some("in-1".into()),
            from: Some(r.user.clone()),
            recipient: Some(r.bot.clone()),
            conversation: Some(r.conversation.clone()),
            channel_id: Some("emulator".into()),
            service_url: Some(r.service_url.clone()),
            ..Activity::message(text)
        };
        bot.on_turn(&incoming)
            .await
            .expect("the apology was delivered");
    }
    let requests = connector.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.text() == SORRY_TEXT));

    // The worker reports a down store as retryable.
    let worker = CompletionWorker::new(
        Arc::new(DownStore),
        ConnectorClient::new(ConnectorConfig::default()).unwrap(),
        WorkerConfig::default(),
    );
    let completion = Completion::new(JobNumber::new(5).unwrap(), "c");
    let (response, _) = worker
        .handle_batch(&[sqs_record("m", &completion.to_body())])
        .await;
    assert_eq!(response.batch_item_failures.len(), 1);
}
