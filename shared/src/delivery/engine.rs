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
use chrono::{DateTime, Utc};
use tracing::Instrument;

use super::answers::{self, Verdict};
use super::digest::{self, DigestLimits};
use super::limits::{Admission, RateLimiter};
use super::notification::{
    Claim, Content, DeliveryMessage, Notification, NotificationStore, Outcome, StoreError,
};
use crate::connector::ConnectorClient;
use crate::registry::{ConversationRegistry, Registration};
use crate::schema::ConversationReference;

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
    /// How long after it was queued a non-urgent message waits for others of its
    /// conversation to go out with it as one digest (`DIGEST_WINDOW_SECONDS`, default 3;
    /// zero turns digests off). An urgent one does not wait, but takes along whatever of its
    /// conversation is queued behind it.
    pub digest_window: Duration,
    /// How much one digest may hold.
    pub digest: DigestLimits,
    /// A non-urgent notification is held while the conversation had an activity within this
    /// long (`QUIET_SECONDS`, default 5; zero: never held).
    pub quiet: Duration,
    /// The longest a notification is held, from when it was queued (`MAX_HOLD_SECONDS`,
    /// default 600).
    pub max_hold: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lease: Duration::from_secs(60),
            max_receives: 100,
            digest_window: Duration::from_secs(3),
            digest: DigestLimits::default(),
            quiet: Duration::from_secs(5),
            max_hold: Duration::from_secs(600),
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
    /// Sent as part of a digest whose first notification is another message's.
    Digested,
    /// Put back, unattempted, until the digest window has passed.
    DigestWindow,
    /// Put back, unattempted: the user is talking (see [`EngineConfig::quiet`]).
    Held,
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

    /// One conversation's messages of a batch, in order. Updates of earlier activities go on
    /// their own (they add no message, so nothing orders them); the messages go out as
    /// digests: a run of them claimed together and sent as one activity.
    async fn deliver_conversation(
        &self,
        group: Vec<(usize, DeliveryMessage)>,
        records: &[SqsMessage],
    ) -> Vec<(usize, RecordResult)> {
        let mut results = Vec::with_capacity(group.len());
        let (updates, messages): (Vec<_>, Vec<_>) =
            group.into_iter().partition(|(_, message)| message.update);
        for (index, message) in updates {
            let record = &records[index];
            let span = delivery_span(&message, record);
            let (delivered, decision) = self
                .deliver_update(&message, receive_count(record))
                .instrument(span)
                .await;
            results.push(result(index, record, delivered, decision));
        }

        let mut conversation = ConversationView::default();
        let mut next = 0;
        while next < messages.len() {
            let (index, message) = &messages[next];
            let record = &records[*index];
            let span = delivery_span(message, record);
            let queued_at = queued_at(record);
            let now = Utc::now();
            // An urgent message goes at once (joined by whatever is already queued behind
            // it); others wait out the window on their first receive only, so a queue clock
            // ahead of this one defers a message once at most.
            // A bulk recipient (it holds a tenant slot) is paced already, and one message of
            // many conversations' each: nothing to gather, and waiting would lose its slot.
            if !message.urgent
                && message.slot.is_none()
                && receive_count(record) == 1
                && let Some(wait) = self.digest_window_left(queued_at, now)
            {
                // Others due for this conversation within the window join it when it comes
                // back: everything behind it waits in the queue meanwhile.
                tracing::debug!(parent: &span, ?wait, "waiting out the digest window");
                results.push(result(
                    *index,
                    record,
                    Delivered::DigestWindow,
                    Decision::RetryIn(wait),
                ));
                next += 1;
                break;
            }
            let held = match message.urgent {
                true => None,
                false => {
                    let wait = self
                        .hold_for(&mut conversation, &message.conversation, queued_at, now)
                        .await;
                    // A bulk recipient's registration, read for the hold check, serves its
                    // send too: the fan-out listed it moments ago, and reading it again a
                    // few milliseconds later would cost a request a recipient for nothing.
                    if message.slot.is_some() && conversation.registration.is_some() {
                        conversation.fresh = true;
                    }
                    wait
                }
            };
            if let Some(wait) = held {
                self.hold(message, wait).instrument(span).await;
                results.push(result(
                    *index,
                    record,
                    Delivered::Held,
                    Decision::RetryIn(wait),
                ));
                // Not blocking: an urgent message behind it goes now.
                next += 1;
                continue;
            }
            let run = self
                .deliver_run(&messages[next..], records, &mut conversation)
                .instrument(span)
                .await;
            next += run.results.len();
            let blocked = run.blocked;
            results.extend(run.results);
            if blocked {
                break;
            }
        }
        // Behind a message that must come back later: visible again at once, so the queue
        // hands them over in order when the earlier one returns. (Giving them its delay instead
        // lets moto's FIFO emulation release them before it.)
        for (index, _) in &messages[next..] {
            let record = &records[*index];
            results.push(result(
                *index,
                record,
                Delivered::Blocked,
                Decision::RetryIn(Duration::ZERO),
            ));
        }
        results
    }

    /// How much of the digest window is left for a message queued at `queued_at`: `None`
    /// once it has passed (or when the queue did not say when, or digests are off).
    fn digest_window_left(
        &self,
        queued_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<Duration> {
        let window = chrono_duration(self.config.digest_window);
        let queued_at = queued_at?;
        if queued_at > now + window {
            // The queue's clock is far ahead of this one: its time says nothing.
            return None;
        }
        let left = (queued_at + window - now).to_std().ok()?;
        // A clock ahead of the queue's never makes it wait longer than the window.
        (!left.is_zero()).then(|| left.min(self.config.digest_window))
    }

    /// How long to hold a non-urgent message for `conversation`: until it has been quiet for
    /// the quiet period, counted from the last activity the bot received from it — unless
    /// holding is off, the user is not talking, or the message has waited its longest.
    async fn hold_for(
        &self,
        view: &mut ConversationView,
        conversation: &str,
        queued_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<Duration> {
        if self.config.quiet.is_zero() || self.registry.is_none() {
            return None;
        }
        // The queue always says when it took a message; without that, never hold.
        let queued_at = queued_at?;
        let registration = view
            .registration(self.registry.as_deref(), conversation)
            .await?;
        let quiet_from = registration.last_seen + chrono_duration(self.config.quiet);
        let hold_ends = queued_at + chrono_duration(self.config.max_hold);
        let until = quiet_from.min(hold_ends);
        let wait = (until - now).to_std().ok().filter(|w| !w.is_zero())?;
        // Whole seconds, as the queue counts visibility: never back a moment too early.
        Some(Duration::from_secs(wait.as_secs() + 1))
    }

    /// Notes a held message in its conversation's registration, so the bot's answer to the
    /// user's next message can carry it. Best effort: without the note it is still delivered
    /// when the conversation is quiet.
    async fn hold(&self, message: &DeliveryMessage, wait: Duration) {
        tracing::info!(?wait, "the user is talking; notification held");
        if let Some(registry) = &self.registry
            && let Err(error) = registry
                .hold(&message.conversation, message.id.as_str())
                .await
        {
            tracing::warn!(error = %error, "could not note the held notification");
        }
    }

    /// Delivers the run of messages starting at `messages[0]`: admits and claims the first,
    /// then claims those after it that may join it (up to the digest limits), and sends them
    /// all as one activity. Returns a result for each message it consumed, in order.
    async fn deliver_run(
        &self,
        messages: &[(usize, DeliveryMessage)],
        records: &[SqsMessage],
        view: &mut ConversationView,
    ) -> Run {
        let (index, head) = &messages[0];
        let record = &records[*index];
        let receives = receive_count(record);
        let last_receive = receives >= self.config.max_receives;
        let single = |delivered, decision: Decision| Run {
            blocked: matches!(decision, Decision::RetryIn(_)),
            results: vec![result(*index, record, delivered, decision)],
        };

        let at = match self.admit(head, last_receive, receives).await {
            Ok(at) => at,
            Err((delivered, decision)) => return single(delivered, decision),
        };
        let mut first = match self.claim(head, receives).await {
            Ok(notification) => notification,
            Err((delivered, decision)) => return single(delivered, decision),
        };
        let target = match self.target_of(&first, view, receives).await {
            Ok(target) => target,
            Err((delivered, decision)) => return single(delivered, decision),
        };
        first.target = target;

        // Those behind it that may join: claimed in order, until one may not.
        let mut members = vec![(*index, first)];
        let mut skipped = Vec::new();
        // A zero window turns digests off.
        let most = match self.config.digest_window.is_zero() {
            true => 1,
            false => self.config.digest.notifications,
        };
        for (index, message) in &messages[1..] {
            if members.len() >= most {
                break;
            }
            let now = Utc::now();
            let record = &records[*index];
            if !message.urgent
                && self
                    .hold_for(view, &message.conversation, queued_at(record), now)
                    .await
                    .is_some()
            {
                break;
            }
            let lease_until = now + chrono_duration(self.config.lease);
            match self.store.claim(&message.id, now, lease_until).await {
                Ok(Claim::Claimed(mut notification)) => {
                    let mut contents: Vec<&Content> =
                        members.iter().map(|(_, n)| &n.content).collect();
                    contents.push(&notification.content);
                    if notification.update_of.is_some() || !self.config.digest.fit(&contents) {
                        self.record(&notification, Outcome::Released).await;
                        break;
                    }
                    notification.target = members[0].1.target.clone();
                    members.push((*index, notification));
                }
                Ok(Claim::Final(_)) => skipped.push((*index, Delivered::Duplicate)),
                Ok(Claim::NotFound) => skipped.push((*index, Delivered::Unknown)),
                Ok(Claim::Busy(_)) | Err(_) => break,
            }
        }

        let planned = match self.wait_for(at, &members[0].1, head.slot.is_some()).await {
            Ok(Some(at)) => at,
            Ok(None) => {
                for (_, notification) in &members {
                    self.record(notification, Outcome::Released).await;
                }
                return self.run_result(
                    &members,
                    &skipped,
                    records,
                    Delivered::Deferred,
                    Decision::RetryIn(Duration::from_secs(1)),
                );
            }
            Err(error) => {
                for (_, notification) in &members {
                    self.record(notification, Outcome::Released).await;
                }
                let (delivered, decision) = self.store_unavailable(error, receives);
                return self.run_result(&members, &skipped, records, delivered, decision);
            }
        };
        let notifications: Vec<Notification> = members.iter().map(|(_, n)| n.clone()).collect();
        if notifications.len() > 1 {
            tracing::info!(
                notifications = notifications.len(),
                "sending a digest of notifications due together"
            );
        }
        let left = Utc::now();
        let (delivered, decision) = self.send(&notifications, last_receive).await;
        let target = &notifications[0].target;
        if let Err(error) = self
            .limiter
            .sent(&target.channel_id, &target.conversation.id, planned, left)
            .await
        {
            tracing::warn!(error = %error, "could not correct the conversation's send log");
        }
        if delivered == Delivered::Sent {
            self.release_held(view, &notifications).await;
        }
        self.run_result(&members, &skipped, records, delivered, decision)
    }

    /// The results of a run: the first member gets the run's outcome; the others the same
    /// (a digest member's Sent is [`Delivered::Digested`]), and if the first must come back,
    /// visible again at once behind it; skipped duplicates are done.
    fn run_result(
        &self,
        members: &[(usize, Notification)],
        skipped: &[(usize, Delivered)],
        records: &[SqsMessage],
        delivered: Delivered,
        decision: Decision,
    ) -> Run {
        let mut results = Vec::with_capacity(members.len() + skipped.len());
        for (position, (index, _)) in members.iter().enumerate() {
            let (delivered, decision) = match (position, &delivered, decision) {
                (0, _, _) => (delivered.clone(), decision),
                (_, Delivered::Sent, _) => (Delivered::Digested, Decision::Done),
                (_, other, Decision::RetryIn(_)) => {
                    (other.clone(), Decision::RetryIn(Duration::ZERO))
                }
                (_, other, decision) => (other.clone(), decision),
            };
            results.push(result(*index, &records[*index], delivered, decision));
        }
        for (index, delivered) in skipped {
            results.push(result(
                *index,
                &records[*index],
                delivered.clone(),
                Decision::Done,
            ));
        }
        // In queue order, so the caller knows how many messages were consumed.
        results.sort_by_key(|(index, _)| *index);
        Run {
            blocked: matches!(decision, Decision::RetryIn(_)),
            results,
        }
    }

    /// Notifications sent that the registration listed as held leave its held set.
    async fn release_held(&self, view: &ConversationView, sent: &[Notification]) {
        let (Some(registry), Some(Some(registration))) = (&self.registry, &view.registration)
        else {
            return;
        };
        let held: Vec<String> = sent
            .iter()
            .map(|n| n.id.as_str().to_owned())
            .filter(|id| registration.held.contains(id))
            .collect();
        if held.is_empty() {
            return;
        }
        if let Err(error) = registry
            .release(registration.conversation_id(), &held)
            .await
        {
            tracing::warn!(error = %error, "could not clear the held notifications");
        }
    }

    /// An update of an earlier activity: admitted and claimed like any message, then `PUT`.
    async fn deliver_update(
        &self,
        message: &DeliveryMessage,
        receives: u32,
    ) -> (Delivered, Decision) {
        let last_receive = receives >= self.config.max_receives;
        let at = match self.admit(message, last_receive, receives).await {
            Ok(at) => at,
            Err(outcome) => return outcome,
        };
        let mut notification = match self.claim(message, receives).await {
            Ok(notification) => notification,
            Err(outcome) => return outcome,
        };
        let mut view = ConversationView::default();
        match self.target_of(&notification, &mut view, receives).await {
            Ok(target) => notification.target = target,
            Err(outcome) => return outcome,
        }
        let planned = match self
            .wait_for(at, &notification, message.slot.is_some())
            .await
        {
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
        let outcome = self
            .send(std::slice::from_ref(&notification), last_receive)
            .await;
        let target = &notification.target;
        if let Err(error) = self
            .limiter
            .sent(&target.channel_id, &target.conversation.id, planned, left)
            .await
        {
            tracing::warn!(error = %error, "could not correct the conversation's send log");
        }
        outcome
    }

    /// Admits `message` under the rate limits: when to send it, or what to do instead.
    async fn admit(
        &self,
        message: &DeliveryMessage,
        last_receive: bool,
        receives: u32,
    ) -> Result<DateTime<Utc>, (Delivered, Decision)> {
        // Admitted before the claim, from the message's own routing, so a message the limits
        // put back costs no claim and no release. A duplicate found by the claim leaves an
        // unused entry in the conversation's log: stricter, never looser.
        let admission = self
            .limiter
            .admit(
                &message.channel,
                &message.conversation,
                message.tenant.as_deref(),
                message.slot,
                Utc::now(),
            )
            .await;
        match admission {
            Ok(Admission::SendAt(at)) => Ok(at),
            Ok(Admission::RetryIn(delay)) => {
                if last_receive {
                    return Err(self
                        .give_up_unattempted(message, "deferred by rate limits on its last receive")
                        .await);
                }
                tracing::debug!(?delay, "rate limits defer the notification");
                Err((Delivered::Deferred, Decision::RetryIn(delay)))
            }
            Err(error) => Err(self.store_unavailable(error, receives)),
        }
    }

    /// Claims `message`'s notification, or says what to do with a message that cannot be.
    async fn claim(
        &self,
        message: &DeliveryMessage,
        receives: u32,
    ) -> Result<Notification, (Delivered, Decision)> {
        let now = Utc::now();
        let claim = self
            .store
            .claim(&message.id, now, now + chrono_duration(self.config.lease))
            .await;
        match claim {
            Ok(Claim::Claimed(notification)) => {
                tracing::Span::current()
                    .record("source", tracing::field::display(&notification.source));
                Ok(notification)
            }
            Ok(Claim::Final(notification)) => {
                tracing::info!(
                    state = notification.state.name(),
                    "duplicate delivery; nothing sent"
                );
                Err((Delivered::Duplicate, Decision::Done))
            }
            Ok(Claim::Busy(until)) => {
                let delay = (until - now).to_std().unwrap_or_default() + Duration::from_secs(1);
                tracing::info!(?delay, "another delivery holds the lease; trying later");
                Err((Delivered::Busy, Decision::RetryIn(delay)))
            }
            Ok(Claim::NotFound) => {
                tracing::warn!("delivery message for an unknown notification acknowledged");
                Err((Delivered::Unknown, Decision::Done))
            }
            Err(error) => Err(self.store_unavailable(error, receives)),
        }
    }

    /// Where `notification` (claimed) goes: its conversation's registered reference (the
    /// latest serviceUrl), if the conversation is registered and active. Otherwise the
    /// notification is recorded Failed (not registered), or given back if the registry could
    /// not be read, and the error says what to do with its message. Without a registry (unit
    /// tests of the engine alone), its own target.
    async fn target_of(
        &self,
        notification: &Notification,
        view: &mut ConversationView,
        receives: u32,
    ) -> Result<ConversationReference, (Delivered, Decision)> {
        let Some(registry) = &self.registry else {
            return Ok(notification.target.clone());
        };
        // Read fresh once per batch: the hold check may have read it before the claim.
        if !view.fresh {
            match registry.get(&notification.target.conversation.id).await {
                Ok(registration) => view.registration = Some(registration),
                Err(error) => {
                    self.record(notification, Outcome::Released).await;
                    return Err(self
                        .store_unavailable(StoreError::Unavailable(error.to_string()), receives));
                }
            }
            view.fresh = true;
        }
        match &view.registration {
            Some(Some(registration)) if registration.status.is_active() => {
                Ok(registration.reference.clone())
            }
            _ => {
                tracing::warn!("the conversation is not registered (or retired); not sent");
                self.record(
                    notification,
                    Outcome::Failed {
                        reason: NOT_REGISTERED.to_owned(),
                    },
                )
                .await;
                Err((Delivered::Failed(NOT_REGISTERED.to_owned()), Decision::Done))
            }
        }
    }

    /// Waits until `at`; if the wait ends too late (the writes that admitted the send took
    /// longer than expected), takes a new tenant slot, up to twice, then sends anyway — late,
    /// with its log entry corrected afterwards. `None`: the tenant has no room soon.
    async fn wait_for(
        &self,
        mut at: chrono::DateTime<Utc>,
        notification: &Notification,
        bulk: bool,
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
                .reschedule(&target.channel_id, target.tenant_id(), bulk, Utc::now())
                .await?
            {
                Admission::SendAt(next) => at = next,
                Admission::RetryIn(_) => return Ok(None),
            }
        }
        unreachable!("the loop returns")
    }

    /// Sends `notifications` — one, or a digest of several for one conversation — as one
    /// activity (an update: `PUT` to the activity it replaces), judges the answer and records
    /// the outcome for each.
    async fn send(
        &self,
        notifications: &[Notification],
        last_receive: bool,
    ) -> (Delivered, Decision) {
        let first = &notifications[0];
        let contents: Vec<&Content> = notifications.iter().map(|n| &n.content).collect();
        let mut activity = first.target.address(digest::merge(&contents).to_activity());
        let mut token_refreshed = false;
        let verdict = loop {
            let answer = match &first.update_of {
                Some(activity_id) => {
                    activity.id = Some(activity_id.clone());
                    self.connector.update_activity(&activity, activity_id).await
                }
                None => self.connector.send_to_conversation(&activity).await,
            };
            match answer {
                Ok(response) => {
                    // An update keeps the activity's id whatever the answer says.
                    let activity_id = match &first.update_of {
                        Some(updated) => Some(updated.clone()),
                        None => response.id.clone(),
                    };
                    for notification in notifications {
                        self.record(
                            notification,
                            Outcome::Sent {
                                activity_id: activity_id.clone(),
                            },
                        )
                        .await;
                    }
                    tracing::info!(
                        activity_id = activity_id.as_deref().unwrap_or_default(),
                        attempts = first.attempts + 1,
                        notifications = notifications.len(),
                        update = first.update_of.is_some(),
                        conversation = %first.target.conversation.id,
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
                    Verdict::Permanent { reason, .. } if first.update_of.is_some() => {
                        // The channel may not allow updates (or the activity is gone): the
                        // message that came with it is what matters. Not retried; the
                        // conversation is not retired for it.
                        tracing::warn!(
                            reason,
                            "the channel refused to update the activity; left as it was"
                        );
                        let reason = format!("update refused: {reason}");
                        self.record(
                            first,
                            Outcome::Failed {
                                reason: reason.clone(),
                            },
                        )
                        .await;
                        return (Delivered::Failed(reason), Decision::Done);
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
                    service_url = %first.target.service_url,
                    conversation = %first.target.conversation.id,
                    "notification cannot be delivered; failed"
                );
                for notification in notifications {
                    self.record(
                        notification,
                        Outcome::Failed {
                            reason: reason.clone(),
                        },
                    )
                    .await;
                }
                if conversation_gone {
                    self.retire(&first.target.conversation.id, &reason).await;
                }
                (Delivered::Failed(reason), Decision::Done)
            }
            Verdict::Transient {
                error,
                retry_after,
                max_attempts,
            } => {
                let attempts = first.attempts + 1;
                if attempts >= max_attempts || last_receive {
                    tracing::error!(
                        error,
                        attempts,
                        last_receive,
                        "transient errors never cleared; notification given up and dead-lettered"
                    );
                    for notification in notifications {
                        self.record(
                            notification,
                            Outcome::GaveUp {
                                last_error: error.clone(),
                                attempted: true,
                            },
                        )
                        .await;
                    }
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
                for notification in notifications {
                    self.record(
                        notification,
                        Outcome::Retry {
                            error: error.clone(),
                        },
                    )
                    .await;
                }
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

/// What one conversation's messages in a batch need to know about it, read at most once.
#[derive(Default)]
struct ConversationView {
    /// `None`: not read yet; `Some(None)`: not registered.
    registration: Option<Option<Registration>>,
    /// Read after a claim (not only for the hold check before it).
    fresh: bool,
}

impl ConversationView {
    /// The active registration, read once; a registry error reads as none (logged).
    async fn registration(
        &mut self,
        registry: Option<&dyn ConversationRegistry>,
        conversation: &str,
    ) -> Option<&Registration> {
        if self.registration.is_none() {
            let registry = registry?;
            self.registration = Some(match registry.get(conversation).await {
                Ok(registration) => registration,
                Err(error) => {
                    tracing::warn!(error = %error, "could not read the registration; not holding");
                    None
                }
            });
        }
        self.registration
            .as_ref()?
            .as_ref()
            .filter(|r| r.status.is_active())
    }
}

/// The results of a run of messages delivered together.
struct Run {
    results: Vec<(usize, RecordResult)>,
    /// The run must come back later: what follows it in the conversation waits.
    blocked: bool,
}

fn result(
    index: usize,
    record: &SqsMessage,
    delivered: Delivered,
    decision: Decision,
) -> (usize, RecordResult) {
    (
        index,
        RecordResult {
            message_id: record.message_id.clone().unwrap_or_default(),
            delivered,
            decision,
        },
    )
}

fn delivery_span(message: &DeliveryMessage, record: &SqsMessage) -> tracing::Span {
    tracing::info_span!(
        "delivery",
        notification = %message.id,
        correlation_id = %message.correlation_id,
        message_id = record.message_id.as_deref().unwrap_or_default(),
        source = tracing::field::Empty,
    )
}

/// When the queue took the message: SQS's `SentTimestamp` (epoch ms).
pub fn queued_at(record: &SqsMessage) -> Option<DateTime<Utc>> {
    record
        .attributes
        .get("SentTimestamp")
        .and_then(|ms| ms.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_millis)
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
