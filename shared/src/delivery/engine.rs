//! The engine: takes delivery messages off the queue and delivers their notifications.
//!
//! For each message, in order within its conversation:
//!
//! 1. **Admit** it under the channel's rate limits ([`RateLimiter`]): send at a time at most a
//!    fraction of a second away, or come back later.
//! 2. **Claim** the notification (one conditional write): a duplicate of a sent or failed one
//!    stops here, sending nothing.
//! 3. **Send** it through the Connector, and **judge** the answer ([`super::answers`]).
//! 4. **Record** the outcome (one conditional write) and **decide** what the queue does with
//!    the message: delete it, make it visible again at a given time, or move it to the
//!    dead-letter queue ([`Decision`]). The engine decides; the queue adapter applies
//!    ([`super::consumer`]), so the same logic runs in Lambda and in the local runner.
//!
//! # Order
//! The queue hands a conversation's messages over in order, one batch at a time (SQS FIFO,
//! the conversation as message group). Within a batch the engine sends them one after the
//! other; once one must come back later, the rest of that conversation's messages in the batch
//! are returned to the queue unattempted, behind it, so nothing overtakes it.
//!
//! # Never lost, never twice
//! Every notification ends Sent, Failed or GaveUp. Transient errors are retried up to their
//! verdict's attempts; when they run out — or the message is on its last allowed receive —
//! the notification is recorded GaveUp with the last error and its message is moved to the
//! dead-letter queue, from which a redrive tries again. A duplicate delivery finds the
//! notification Sent or Failed and sends nothing. The one window for a duplicate send is a
//! crash between the Connector accepting the message and the Sent record: the message comes
//! back after the visibility timeout, the lease has lapsed, and it is sent a second time — at
//! most one duplicate, and only after a crash.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessage;
use chrono::Utc;
use tracing::Instrument;

use super::answers::{self, Verdict};
use super::limits::{Admission, RateLimiter};
use super::notification::{
    Claim, DeliveryMessage, Notification, NotificationStore, Outcome, StoreError,
};
use crate::connector::ConnectorClient;
use crate::registry::ConversationRegistry;

/// The failure reason of a notification whose conversation is not (or no longer) registered.
pub const NOT_REGISTERED: &str = "not registered";

/// Engine settings.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// How long a claim holds a notification. Shorter than the queue's visibility timeout, so a
    /// redelivery after a crash finds the lease lapsed and takes over.
    pub lease: Duration,
    /// The queue's `maxReceiveCount`: on this receive a notification that cannot be delivered
    /// now is given up (and its message moved to the dead-letter queue) instead of put back.
    pub max_receives: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lease: Duration::from_secs(60),
            max_receives: 100,
        }
    }
}

/// What the queue should do with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Done with it (sent, failed, a duplicate, unknown, malformed): delete it.
    Done,
    /// Make it visible again after this long (and report it as a batch item failure).
    RetryIn(Duration),
    /// Move it to the dead-letter queue (its notification is recorded GaveUp).
    DeadLetter,
}

/// What became of one message, for logs, metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Sent,
    /// The notification was Sent or Failed already: nothing sent.
    Duplicate,
    Failed(String),
    /// Will be retried: a transient answer.
    Retrying(String),
    GaveUp(String),
    /// Put back by the rate limits, not attempted.
    Deferred,
    /// Put back unattempted because an earlier message of its conversation must go first.
    Blocked,
    /// Another delivery holds the notification's lease.
    Busy,
    /// No such notification (expired, or never created): nothing to do.
    Unknown,
    /// Not a delivery message this version understands: acknowledged and logged.
    Malformed(String),
    /// A [`QueueTask`]'s message, handled by the task: what it did.
    Task(String),
    /// The store failed before anything was sent: retried.
    StoreUnavailable(String),
}

/// The result for one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordResult {
    pub message_id: String,
    pub delivered: Delivered,
    pub decision: Decision,
}

/// The delivery engine. Built once per process; knows notifications and conversations, never
/// jobs.
pub struct DeliveryEngine {
    store: Arc<dyn NotificationStore>,
    limiter: RateLimiter,
    connector: ConnectorClient,
    config: EngineConfig,
    registry: Option<Arc<dyn ConversationRegistry>>,
    tasks: HashMap<&'static str, Arc<dyn QueueTask>>,
}

/// Work of a producer that shares the delivery queue without being a delivery — a broadcast's
/// fan-out, say — so it runs, retries and survives crashes as deliveries do, in the same
/// function. The engine only routes it: a message whose envelope `kind` is [`QueueTask::kind`]
/// is handed to the task, outside the conversations' order (a task's messages use their own
/// message group).
#[async_trait::async_trait]
pub trait QueueTask: Send + Sync {
    /// The envelope `kind` this task handles (not `notification`).
    fn kind(&self) -> &'static str;
    /// Handles one message (its whole body is the task's); `receives` is its receive count.
    async fn run(&self, body: &str, receives: u32) -> (Delivered, Decision);
}

impl DeliveryEngine {
    pub fn new(
        store: Arc<dyn NotificationStore>,
        limiter: RateLimiter,
        connector: ConnectorClient,
        config: EngineConfig,
    ) -> Self {
        DeliveryEngine {
            store,
            limiter,
            connector,
            config,
            registry: None,
            tasks: HashMap::new(),
        }
    }

    /// Routes messages of `task`'s kind to it.
    pub fn with_task(mut self, task: Arc<dyn QueueTask>) -> Self {
        self.tasks.insert(task.kind(), task);
        self
    }

    /// Delivers only to conversations active in `registry`, at the reference it holds (the
    /// latest serviceUrl), and retires a conversation the Connector says is gone. Without a
    /// registry (unit tests of the engine alone) the notification's own target is used.
    pub fn with_registry(mut self, registry: Arc<dyn ConversationRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Delivers a batch: conversations concurrently, each conversation's messages in order.
    /// Returns one result per record, in the records' order.
    pub async fn handle_batch(&self, records: &[SqsMessage]) -> Vec<RecordResult> {
        let mut results: Vec<Option<RecordResult>> = vec![None; records.len()];
        let mut groups: Vec<Vec<(usize, DeliveryMessage)>> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        let mut tasks = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let message_id = record.message_id.clone().unwrap_or_default();
            let body = record.body.as_deref().unwrap_or_default();
            match DeliveryMessage::from_body(body) {
                Ok(message) => {
                    let group = *group_of.entry(message.group()).or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                    groups[group].push((index, message));
                }
                // Not a delivery: a producer's task, if its kind has one (read only then, so a
                // delivery's body is parsed once).
                Err(error) => match envelope_kind(body).and_then(|k| self.tasks.get(k.as_str())) {
                    Some(task) => tasks.push((index, task.clone())),
                    None => {
                        tracing::error!(message_id, error = %error, "malformed delivery message acknowledged");
                        results[index] = Some(RecordResult {
                            message_id,
                            delivered: Delivered::Malformed(error.to_string()),
                            decision: Decision::Done,
                        });
                    }
                },
            }
        }

        let run_tasks = futures_util::future::join_all(tasks.into_iter().map(|(index, task)| {
            let record = &records[index];
            let message_id = record.message_id.clone().unwrap_or_default();
            let span = tracing::info_span!("task", kind = task.kind(), message_id = %message_id);
            async move {
                let (delivered, decision) = task
                    .run(
                        record.body.as_deref().unwrap_or_default(),
                        receive_count(record),
                    )
                    .instrument(span)
                    .await;
                (
                    index,
                    RecordResult {
                        message_id,
                        delivered,
                        decision,
                    },
                )
            }
        }));
        let deliveries = futures_util::future::join_all(
            groups
                .into_iter()
                .map(|group| self.deliver_conversation(group, records)),
        );
        let (ran, delivered) = futures_util::future::join(run_tasks, deliveries).await;
        for (index, result) in ran.into_iter().chain(delivered.into_iter().flatten()) {
            results[index] = Some(result);
        }
        results
            .into_iter()
            .zip(records)
            .map(|(result, record)| {
                result.unwrap_or_else(|| RecordResult {
                    message_id: record.message_id.clone().unwrap_or_default(),
                    delivered: Delivered::Blocked,
                    decision: Decision::RetryIn(Duration::from_secs(1)),
                })
            })
            .collect()
    }

    async fn deliver_conversation(
        &self,
        group: Vec<(usize, DeliveryMessage)>,
        records: &[SqsMessage],
    ) -> Vec<(usize, RecordResult)> {
        let mut results = Vec::with_capacity(group.len());
        let mut blocked = false;
        for (index, message) in group {
            let record = &records[index];
            let message_id = record.message_id.clone().unwrap_or_default();
            if blocked {
                // Visible again at once: the queue still holds it back while the earlier
                // message of its conversation is in flight, and hands both over in order when
                // that one returns. (Giving it the head's delay instead lets moto's FIFO
                // emulation release it before the head.)
                results.push((
                    index,
                    RecordResult {
                        message_id,
                        delivered: Delivered::Blocked,
                        decision: Decision::RetryIn(Duration::ZERO),
                    },
                ));
                continue;
            }
            let span = tracing::info_span!(
                "delivery",
                notification = %message.id,
                correlation_id = %message.correlation_id,
                message_id = %message_id,
                source = tracing::field::Empty,
            );
            let (delivered, decision) = self
                .deliver(&message, receive_count(record))
                .instrument(span)
                .await;
            blocked = matches!(decision, Decision::RetryIn(_));
            results.push((
                index,
                RecordResult {
                    message_id,
                    delivered,
                    decision,
                },
            ));
        }
        results
    }

    /// One message: admit, claim, send, judge, record.
    async fn deliver(&self, message: &DeliveryMessage, receives: u32) -> (Delivered, Decision) {
        let last_receive = receives >= self.config.max_receives;
        // Admitted first, from the message's own routing, so a message the limits put back
        // costs no claim and no release. A duplicate found by the claim leaves an unused entry
        // in the conversation's log: stricter, never looser.
        let admission = self
            .limiter
            .admit(
                &message.channel,
                &message.conversation,
                message.tenant.as_deref(),
                Utc::now(),
            )
            .await;
        let at = match admission {
            Ok(Admission::SendAt(at)) => at,
            Ok(Admission::RetryIn(delay)) => {
                if last_receive {
                    return self
                        .give_up_unattempted(message, "deferred by rate limits on its last receive")
                        .await;
                }
                tracing::debug!(?delay, "rate limits defer the notification");
                return (Delivered::Deferred, Decision::RetryIn(delay));
            }
            Err(error) => return self.store_unavailable(error, receives),
        };

        let now = Utc::now();
        let claim = self
            .store
            .claim(&message.id, now, now + chrono_duration(self.config.lease))
            .await;
        let mut notification = match claim {
            Ok(Claim::Claimed(notification)) => notification,
            Ok(Claim::Final(notification)) => {
                tracing::info!(
                    state = notification.state.name(),
                    "duplicate delivery; nothing sent"
                );
                return (Delivered::Duplicate, Decision::Done);
            }
            Ok(Claim::Busy(until)) => {
                let delay = (until - now).to_std().unwrap_or_default() + Duration::from_secs(1);
                tracing::info!(?delay, "another delivery holds the lease; trying later");
                return (Delivered::Busy, Decision::RetryIn(delay));
            }
            Ok(Claim::NotFound) => {
                tracing::warn!("delivery message for an unknown notification acknowledged");
                return (Delivered::Unknown, Decision::Done);
            }
            Err(error) => return self.store_unavailable(error, receives),
        };
        tracing::Span::current().record("source", tracing::field::display(&notification.source));

        if let Some(registry) = &self.registry {
            match registry.get(&notification.target.conversation.id).await {
                Ok(Some(registration)) if registration.status.is_active() => {
                    notification.target = registration.reference;
                }
                Ok(_) => {
                    tracing::warn!("the conversation is not registered (or retired); not sent");
                    self.record(
                        &notification,
                        Outcome::Failed {
                            reason: NOT_REGISTERED.to_owned(),
                        },
                    )
                    .await;
                    return (Delivered::Failed(NOT_REGISTERED.to_owned()), Decision::Done);
                }
                Err(error) => {
                    self.record(&notification, Outcome::Released).await;
                    return self
                        .store_unavailable(StoreError::Unavailable(error.to_string()), receives);
                }
            }
        }

        let target = &notification.target;
        let planned = match self.wait_for(at, &notification).await {
            Ok(Some(at)) => at,
            Ok(None) => {
                self.record(&notification, Outcome::Released).await;
                return (
                    Delivered::Deferred,
                    Decision::RetryIn(Duration::from_secs(1)),
                );
            }
            Err(error) => {
                self.record(&notification, Outcome::Released).await;
                return self.store_unavailable(error, receives);
            }
        };
        let left = Utc::now();
        let result = self.send(&notification, last_receive).await;
        if let Err(error) = self
            .limiter
            .sent(&target.channel_id, &target.conversation.id, planned, left)
            .await
        {
            tracing::warn!(error = %error, "could not correct the conversation's send log");
        }
        result
    }

    /// Waits until `at`; if the wait ends too late (the writes that admitted the send took
    /// longer than expected), takes a new tenant slot, up to twice, then sends anyway — late,
    /// with its log entry corrected afterwards. `None`: the tenant has no room soon.
    async fn wait_for(
        &self,
        mut at: chrono::DateTime<Utc>,
        notification: &Notification,
    ) -> Result<Option<chrono::DateTime<Utc>>, StoreError> {
        for reschedules in 0.. {
            if let Ok(wait) = (at - Utc::now()).to_std() {
                tokio::time::sleep(wait).await;
            }
            let late = (Utc::now() - at).to_std().unwrap_or_default();
            if late <= self.limiter.lateness_allowed() || reschedules >= 2 {
                return Ok(Some(at));
            }
            tracing::debug!(?late, "slot missed; taking another");
            let target = &notification.target;
            match self
                .limiter
                .reschedule(&target.channel_id, target.tenant_id(), Utc::now())
                .await?
            {
                Admission::SendAt(next) => at = next,
                Admission::RetryIn(_) => return Ok(None),
            }
        }
        unreachable!("the loop returns")
    }

    async fn send(&self, notification: &Notification, last_receive: bool) -> (Delivered, Decision) {
        let activity = notification
            .target
            .address(notification.content.to_activity());
        let mut token_refreshed = false;
        let verdict = loop {
            match self.connector.send_to_conversation(&activity).await {
                Ok(response) => {
                    self.record(
                        notification,
                        Outcome::Sent {
                            activity_id: response.id.clone(),
                        },
                    )
                    .await;
                    tracing::info!(
                        activity_id = response.id.as_deref().unwrap_or_default(),
                        attempts = notification.attempts + 1,
                        conversation = %notification.target.conversation.id,
                        "notification sent"
                    );
                    return (Delivered::Sent, Decision::Done);
                }
                Err(error) => match answers::classify(&error, token_refreshed) {
                    Verdict::RefreshToken => {
                        tracing::warn!(error = %error, "the Connector refused the token; refreshing it and trying once more");
                        self.connector.invalidate_credentials();
                        token_refreshed = true;
                    }
                    verdict => break verdict,
                },
            }
        };
        match verdict {
            Verdict::Permanent {
                reason,
                conversation_gone,
            } => {
                tracing::error!(
                    reason,
                    conversation_gone,
                    service_url = %notification.target.service_url,
                    conversation = %notification.target.conversation.id,
                    "notification cannot be delivered; failed"
                );
                self.record(
                    notification,
                    Outcome::Failed {
                        reason: reason.clone(),
                    },
                )
                .await;
                if conversation_gone {
                    self.retire(&notification.target.conversation.id, &reason)
                        .await;
                }
                (Delivered::Failed(reason), Decision::Done)
            }
            Verdict::Transient {
                error,
                retry_after,
                max_attempts,
            } => {
                let attempts = notification.attempts + 1;
                if attempts >= max_attempts || last_receive {
                    tracing::error!(
                        error,
                        attempts,
                        last_receive,
                        "transient errors never cleared; notification given up and dead-lettered"
                    );
                    self.record(
                        notification,
                        Outcome::GaveUp {
                            last_error: error.clone(),
                            attempted: true,
                        },
                    )
                    .await;
                    return (Delivered::GaveUp(error), Decision::DeadLetter);
                }
                let delay = answers::retry_delay(attempts, retry_after);
                tracing::warn!(
                    error,
                    attempts,
                    ?delay,
                    ?retry_after,
                    "transient error; will retry"
                );
                self.record(
                    notification,
                    Outcome::Retry {
                        error: error.clone(),
                    },
                )
                .await;
                (Delivered::Retrying(error), Decision::RetryIn(delay))
            }
            Verdict::RefreshToken => unreachable!("handled in the loop"),
        }
    }

    /// The Connector says the bot can no longer reach `conversation`: retire it, so no
    /// producer targets it again until it talks to the bot. Best effort: the notification is
    /// failed either way, and a later send would be refused the same way.
    async fn retire(&self, conversation: &str, reason: &str) {
        let Some(registry) = &self.registry else {
            return;
        };
        match registry.retire(conversation, reason, Utc::now()).await {
            Ok(retired) => tracing::info!(
                retired,
                reason,
                "conversation retired after a permanent answer"
            ),
            Err(error) => tracing::warn!(error = %error, "could not retire the conversation"),
        }
    }

    /// Records an outcome, retrying the store briefly: after a send, a lost record would leave
    /// the notification Sending until its lease lapses and a redelivery sent it again.
    async fn record(&self, notification: &Notification, outcome: Outcome) {
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=3 {
            match self
                .store
                .record(&notification.id, outcome.clone(), Utc::now())
                .await
            {
                Ok(()) => return,
                Err(error) if attempt < 3 => {
                    tracing::warn!(error = %error, ?outcome, "recording the outcome failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                Err(error) => {
                    // Acknowledged anyway: putting the message back would send it again.
                    tracing::error!(error = %error, ?outcome, "could not record the outcome; the notification stays Sending until its lease lapses");
                }
            }
        }
    }

    /// The last receive came and the rate limits still defer it: given up without an attempt.
    async fn give_up_unattempted(
        &self,
        message: &DeliveryMessage,
        why: &str,
    ) -> (Delivered, Decision) {
        let last_error = match self.store.get(&message.id).await {
            Ok(Some(notification)) if notification.state.is_final() => {
                return (Delivered::Duplicate, Decision::Done);
            }
            Ok(Some(notification)) => notification.last_error.unwrap_or_else(|| why.to_owned()),
            Ok(None) => return (Delivered::Unknown, Decision::Done),
            Err(_) => why.to_owned(),
        };
        tracing::error!(
            last_error,
            "notification given up on its last receive; dead-lettered"
        );
        if let Err(error) = self
            .store
            .record(
                &message.id,
                Outcome::GaveUp {
                    last_error: last_error.clone(),
                    attempted: false,
                },
                Utc::now(),
            )
            .await
        {
            tracing::error!(error = %error, "could not record GaveUp");
        }
        (Delivered::GaveUp(last_error), Decision::DeadLetter)
    }

    fn store_unavailable(&self, error: StoreError, receives: u32) -> (Delivered, Decision) {
        tracing::warn!(error = %error, "delivery store unavailable; will retry");
        (
            Delivered::StoreUnavailable(error.to_string()),
            Decision::RetryIn(answers::retry_delay(receives.max(1), None)),
        )
    }
}

/// The `kind` of a versioned envelope (`{"v":…,"kind":"…",…}`), if the body is one.
fn envelope_kind(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Kind {
        kind: String,
    }
    serde_json::from_str::<Kind>(body).ok().map(|k| k.kind)
}

/// SQS's `ApproximateReceiveCount` of a record (1 on the first receive).
pub fn receive_count(record: &SqsMessage) -> u32 {
    record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|count| count.parse().ok())
        .unwrap_or(1)
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::seconds(60))
}
