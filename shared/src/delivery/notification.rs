//! The unit of delivery: a [`Notification`], its states, and the two ports that keep and carry
//! it — [`NotificationStore`] (durable record) and [`NotificationQueue`] (the work to do).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::{Activity, ConversationReference};

/// A notification's id: chosen by its producer so that the same request gives the same id
/// (a job's completion is `job-123456`), or random. 1–100 characters of `[A-Za-z0-9._:-]`, so
/// it is safe as a DynamoDB key, an SQS deduplication id and a log field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NotificationId(String);

/// Why a string is not a notification id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a notification id (1–100 characters of A-Z a-z 0-9 . _ : -)")]
pub struct InvalidNotificationId;

impl NotificationId {
    pub const MAX_LEN: usize = 100;

    pub fn parse(text: &str) -> Result<Self, InvalidNotificationId> {
        let valid = !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if valid {
            Ok(NotificationId(text.to_owned()))
        } else {
            Err(InvalidNotificationId)
        }
    }

    /// A fresh random id, `n-` and 32 hex digits.
    pub fn random() -> Self {
        NotificationId(format!(
            "n-{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NotificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for NotificationId {
    type Error = InvalidNotificationId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        NotificationId::parse(&value)
    }
}

impl From<NotificationId> for String {
    fn from(id: NotificationId) -> String {
        id.0
    }
}

/// What is said: text (Markdown or plain), and optionally attachments such as an Adaptive
/// Card (`{"contentType": "application/vnd.microsoft.card.adaptive", "content": {…}}`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `plain`, `markdown` or `xml`; absent means the channel's default (Markdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_format: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Value>,
    /// How this content reads when several notifications of the same kind go out to one
    /// conversation as one message (see [`super::digest`]). Without it, a digest lists the
    /// text as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<DigestLine>,
}

/// What a notification contributes to a digest: notifications with the same `key` are
/// summarised together as `summary`, with `{count}` replaced by how many there are and
/// `{items}` by their `item`s joined with ", " — "3 jobs are complete: 101, 102, 103."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestLine {
    pub key: String,
    pub item: String,
    pub summary: String,
}

impl Content {
    pub fn text(text: impl Into<String>) -> Self {
        Content {
            text: Some(text.into()),
            ..Content::default()
        }
    }

    /// This content, summarised with others of the same `key` in a digest.
    pub fn with_digest(mut self, line: DigestLine) -> Self {
        self.digest = Some(line);
        self
    }

    /// The message activity carrying this content, not yet addressed.
    pub fn to_activity(&self) -> Activity {
        let mut activity = Activity::message(self.text.clone().unwrap_or_default());
        if self.text.is_none() {
            activity.text = None;
        }
        // The producer's format when it gave one; otherwise read off the text.
        activity.text_format = match (&self.text_format, &self.text) {
            (Some(format), _) => Some(format.clone()),
            (None, Some(text)) => Some(crate::schema::text_format_of(text).to_owned()),
            (None, None) => None,
        };
        if !self.attachments.is_empty() {
            activity.extra.insert(
                "attachments".to_owned(),
                Value::Array(self.attachments.clone()),
            );
        }
        activity
    }
}

/// Who asked for the notification. The engine only logs and stores it; producers use it to
/// find their notifications again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Source {
    /// A job's completion (the job bot).
    Job { number: u32 },
    /// A reminder firing.
    Reminder { id: String },
    /// A call of the notify API.
    Api { request: String },
    /// One recipient of a broadcast.
    Broadcast { id: String },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Job { number } => write!(f, "job:{number}"),
            Source::Reminder { id } => write!(f, "reminder:{id}"),
            Source::Api { request } => write!(f, "api:{request}"),
            Source::Broadcast { id } => write!(f, "broadcast:{id}"),
        }
    }
}

/// Where a notification is in its life.
///
/// ```text
///   create ──► Queued ──claim──► Sending{lease} ──► Sent{activity id}
///                ▲                  │   │      └──► Failed{reason}        (permanent answer)
///                └── transient ─────┘   └─────────► GaveUp{last error}    (attempts or receives
///                    answer (attempts+1)                                    exhausted)
///   GaveUp ──claim (a redrive from the dead-letter queue)──► Sending
/// ```
///
/// Sent and Failed are final: nothing changes them. GaveUp is final for the engine, but a
/// message redriven from the dead-letter queue claims it again (it was never sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum DeliveryState {
    Queued,
    #[serde(rename_all = "camelCase")]
    Sending {
        lease_until: DateTime<Utc>,
    },
    #[serde(rename_all = "camelCase")]
    Sent {
        sent_at: DateTime<Utc>,
        /// The id the Connector gave the sent activity (Teams may give none).
        activity_id: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Failed {
        failed_at: DateTime<Utc>,
        reason: String,
    },
    #[serde(rename_all = "camelCase")]
    GaveUp {
        gave_up_at: DateTime<Utc>,
        last_error: String,
    },
}

impl DeliveryState {
    /// Sent or Failed: nothing will change it.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            DeliveryState::Sent { .. } | DeliveryState::Failed { .. }
        )
    }

    /// The word logs and `show` use.
    pub fn name(&self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Sending { .. } => "sending",
            DeliveryState::Sent { .. } => "sent",
            DeliveryState::Failed { .. } => "failed",
            DeliveryState::GaveUp { .. } => "gaveUp",
        }
    }
}

/// A proactive message to deliver into one conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: NotificationId,
    pub created_at: DateTime<Utc>,
    pub source: Source,
    /// The producer's key for "the same request" (the id is derived from it when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Ties the producing turn or request, the queue message and the delivery together in logs.
    pub correlation_id: String,
    /// Whether it must interrupt: reminders and API notifications are urgent unless they say
    /// otherwise; job completions and broadcasts may wait for a quiet moment.
    #[serde(default)]
    pub urgent: bool,
    /// The request this notification is one recipient of (a notify API call, a broadcast):
    /// the store lists a batch's notifications so the request's progress can be counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// The conversation it goes to.
    pub target: ConversationReference,
    pub content: Content,
    /// Delivered by updating this earlier activity of the conversation in place (`PUT
    /// …/activities/{id}`) instead of sending a new message. An update is never held or
    /// digested, and a refusal (any 4xx but 429) fails it quietly: the channel may not allow
    /// updates, and the message that accompanies it is what matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_of: Option<String>,
    /// Connector calls made so far.
    pub attempts: u32,
    /// The last transient error, while retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub state: DeliveryState,
}

impl Notification {
    /// A new, queued notification.
    pub fn new(
        id: NotificationId,
        source: Source,
        target: ConversationReference,
        content: Content,
        now: DateTime<Utc>,
    ) -> Self {
        Notification {
            id,
            created_at: now,
            source,
            idempotency_key: None,
            correlation_id: new_correlation_id(),
            urgent: false,
            batch: None,
            target,
            content,
            update_of: None,
            attempts: 0,
            last_error: None,
            state: DeliveryState::Queued,
        }
    }

    /// The queue message that asks the engine to deliver this notification.
    pub fn message(&self) -> DeliveryMessage {
        DeliveryMessage {
            id: self.id.clone(),
            conversation: self.target.conversation.id.clone(),
            channel: self.target.channel_id.clone(),
            tenant: self.target.tenant_id().map(str::to_owned),
            correlation_id: self.correlation_id.clone(),
            urgent: self.urgent,
            update: self.update_of.is_some(),
            slot: None,
        }
    }
}

/// A short random id tying a turn, its queue message and the delivery together in logs.
pub fn new_correlation_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Errors of the store ports (notifications, rate limits).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stored item cannot be read back (written by something else, or corrupt).
    #[error("{key} is stored in a form this version cannot read: {detail}")]
    Corrupt { key: String, detail: String },
    /// The backing service failed or could not be reached; retrying may succeed.
    #[error("delivery store unavailable: {0}")]
    Unavailable(String),
    /// A bounded in-memory store is full of items that are still in use.
    #[error("delivery store full: {0}")]
    Full(String),
}

/// What [`NotificationStore::create`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// Written as given.
    New,
    /// A notification with this id exists already (the same request again); here it is, as
    /// stored. Nothing was written.
    Existing(Box<Notification>),
}

/// What [`NotificationStore::claim`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The caller now holds the notification (state Sending, lease until the given time) and
    /// must send it and then [`NotificationStore::record`] the outcome.
    Claimed(Notification),
    /// Sent or Failed already: a duplicate delivery; send nothing.
    Final(Notification),
    /// Another delivery holds a live lease until this time.
    Busy(DateTime<Utc>),
    NotFound,
}

/// The outcome of one delivery attempt, for [`NotificationStore::record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The Connector accepted it: Sent, attempts + 1.
    Sent { activity_id: Option<String> },
    /// A permanent answer: Failed, attempts + 1.
    Failed { reason: String },
    /// A transient answer, to be retried: back to Queued, attempts + 1, `last_error` kept.
    Retry { error: String },
    /// The claim is given back unattempted (the rate limits said "later"): back to Queued,
    /// nothing counted.
    Released,
    /// Transient errors that never cleared (attempts or receives exhausted): GaveUp. Counts an
    /// attempt only when `attempted` (a rate-limit deferral on the last receive made none).
    GaveUp { last_error: String, attempted: bool },
}

/// One notification of a batch, as its request's progress needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry {
    pub id: NotificationId,
    /// The conversation it goes to.
    pub conversation: String,
    pub progress: Progress,
}

/// Where one recipient of a batch stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Queued or being sent (or retrying).
    Pending,
    Sent,
    /// Failed, or given up after transient errors (then `reason` starts with `gave up:`).
    Failed {
        reason: String,
    },
}

impl Progress {
    pub fn of(state: &DeliveryState) -> Progress {
        match state {
            DeliveryState::Queued | DeliveryState::Sending { .. } => Progress::Pending,
            DeliveryState::Sent { .. } => Progress::Sent,
            DeliveryState::Failed { reason, .. } => Progress::Failed {
                reason: reason.clone(),
            },
            DeliveryState::GaveUp { last_error, .. } => Progress::gave_up(last_error),
        }
    }

    /// A recipient given up after transient errors counts as failed, with the last one.
    pub fn gave_up(last_error: &str) -> Progress {
        Progress::Failed {
            reason: format!("gave up: {last_error}"),
        }
    }
}

/// A page of a batch's notifications.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchPage {
    pub entries: Vec<BatchEntry>,
    /// Pass it as `after` for the next page; `None` when this was the last one.
    pub next: Option<String>,
}

/// Durable notification records.
///
/// Contract, for every adapter:
/// - `create` writes the notification only if no notification with its id exists, and
///   otherwise returns [`Created::Existing`] with the stored one, never overwriting it: the
///   id is the idempotency guarantee of every producer.
/// - `get` returns `Ok(None)` for an unknown id; `get_many` returns the ones that exist, in
///   any order, with one request per 100 ids at most (it backs `show`).
/// - `claim` is one atomic conditional transition to `Sending { lease_until }`, from Queued,
///   from GaveUp (a redrive), or from Sending whose lease ended before `now` (a crashed
///   delivery taken over). Sent/Failed give [`Claim::Final`], a live lease [`Claim::Busy`].
/// - `record` applies an [`Outcome`] atomically unless the notification is Sent or Failed (a
///   late or repeated report cannot undo a final state; that case, and an unknown id, are Ok
///   and change nothing). Final states get the store's retention (TTL); others never expire.
/// - `list_batch` pages through the notifications whose `batch` is the given one, in a stable
///   order, at most `limit` per page, resuming after the cursor `after` a previous page
///   returned (an unknown batch is an empty page). On DynamoDB it reads an eventually
///   consistent index: a state changed a moment ago may show its previous value.
/// - Failures are [`StoreError::Unavailable`] (retryable) or [`StoreError::Corrupt`].
#[async_trait]
pub trait NotificationStore: Send + Sync {
    async fn create(&self, notification: &Notification) -> Result<Created, StoreError>;
    async fn get(&self, id: &NotificationId) -> Result<Option<Notification>, StoreError>;
    async fn get_many(&self, ids: &[NotificationId]) -> Result<Vec<Notification>, StoreError>;
    async fn claim(
        &self,
        id: &NotificationId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Claim, StoreError>;
    async fn record(
        &self,
        id: &NotificationId,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    async fn list_batch(
        &self,
        batch: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<BatchPage, StoreError>;
}

/// "Deliver notification X": the queue message. Carries what the engine needs before it reads
/// the record — the conversation (order and rate limits), the channel (which limits), the
/// tenant (the per-tenant rate) — and the correlation id for the logs.
///
/// The body is versioned JSON: `{"v":2,"kind":"notification","id":"…","conversation":"…",
/// "channel":"…","tenant":"…","correlationId":"…","urgent":true,"update":true,"slot":…}` (the
/// last three only when true or set). `urgent` and `update` let the engine hold or route a
/// message before it reads the record; `slot` is the send time a bulk fan-out reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryMessage {
    pub id: NotificationId,
    pub conversation: String,
    #[serde(default)]
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default)]
    pub correlation_id: String,
    /// The notification must interrupt: never held for a quiet moment.
    #[serde(default, skip_serializing_if = "is_false")]
    pub urgent: bool,
    /// The notification updates an earlier activity ([`Notification::update_of`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub update: bool,
    /// The tenant slot (epoch ms) a bulk fan-out reserved for this message: the delivery sends
    /// at it unless it is late, and a message that has one is bulk (it never takes a priority
    /// slot). See [`super::limits`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<i64>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    v: u32,
    kind: String,
    #[serde(flatten)]
    message: DeliveryMessage,
}

/// A queue message that is not a delivery message this version understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed delivery message: {0}")]
pub struct MalformedMessage(pub String);

impl DeliveryMessage {
    pub const VERSION: u32 = 2;
    pub const KIND: &'static str = "notification";

    pub fn to_body(&self) -> String {
        let envelope = Envelope {
            v: Self::VERSION,
            kind: Self::KIND.to_owned(),
            message: self.clone(),
        };
        serde_json::to_string(&envelope).expect("a delivery message always serializes")
    }

    pub fn from_body(body: &str) -> Result<Self, MalformedMessage> {
        let envelope: Envelope = serde_json::from_str(body).map_err(|e| {
            // Category and position only: the body is not echoed into logs or answers.
            MalformedMessage(format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        if envelope.v != Self::VERSION || envelope.kind != Self::KIND {
            return Err(MalformedMessage(format!(
                "unknown version/kind {}/{}",
                envelope.v,
                envelope.kind.chars().take(40).collect::<String>()
            )));
        }
        if envelope.message.conversation.is_empty() {
            return Err(MalformedMessage("no conversation".to_owned()));
        }
        Ok(envelope.message)
    }

    /// The FIFO message group: the conversation, so one conversation's notifications are
    /// delivered in order, one at a time, while other conversations proceed in parallel. SQS
    /// allows 128 characters of printable ASCII; longer or other ids are hashed (FNV-1a, 64
    /// bits: a collision would only make two conversations share an order).
    ///
    /// Updates of earlier activities have a group of their own per conversation: they add no
    /// message, so nothing orders them against the messages, and a burst of them would
    /// otherwise split the messages' batches (and digests) in two.
    pub fn group(&self) -> String {
        match self.update {
            true => group_of(&format!("{}#updates", self.conversation)),
            false => group_of(&self.conversation),
        }
    }
}

/// See [`DeliveryMessage::group`].
pub fn group_of(conversation: &str) -> String {
    let printable = conversation.bytes().all(|b| (b'!'..=b'~').contains(&b));
    if printable && !conversation.is_empty() && conversation.len() <= 128 {
        return conversation.to_owned();
    }
    format!("h-{:016x}", group_hash(conversation))
}

/// FNV-1a, 64 bits, of a conversation id: stable across processes and versions (it names
/// message groups and notifications), not a defence against chosen collisions.
pub fn group_hash(conversation: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in conversation.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Errors of the queue ports.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("delivery queue unavailable: {0}")]
    Unavailable(String),
}

/// Where delivery messages wait for the engine.
///
/// Contract, for every adapter:
/// - `enqueue` returns Ok only once the message is durably accepted.
/// - Messages of one conversation ([`DeliveryMessage::group`]) are delivered in the order
///   enqueued, and never while an earlier one of the group is in flight (SQS FIFO semantics);
///   different conversations are independent.
/// - The same notification id enqueued twice within five minutes is delivered once (FIFO
///   deduplication); beyond that, delivery is at least once, and the engine's claim makes a
///   duplicate a no-op.
///
/// `send` is the one primitive: any [`QueueMessage`] — a delivery, or a producer's task that
/// shares the queue (see [`super::engine::QueueTask`]). `send_many` sends several (a
/// broadcast's page) with as few requests as the adapter can (SQS: 10 per request); Ok means
/// every one was accepted. On an error some may have been accepted: sending them again is
/// harmless (deduplication, then the engine's claim).
#[async_trait]
pub trait NotificationQueue: Send + Sync {
    async fn send(&self, message: &QueueMessage) -> Result<(), QueueError>;

    async fn send_many(&self, messages: &[QueueMessage]) -> Result<(), QueueError> {
        for message in messages {
            self.send(message).await?;
        }
        Ok(())
    }

    async fn enqueue(&self, message: &DeliveryMessage) -> Result<(), QueueError> {
        self.send(&message.to_queue_message()).await
    }

    async fn enqueue_many(&self, messages: &[DeliveryMessage]) -> Result<(), QueueError> {
        let messages: Vec<QueueMessage> = messages
            .iter()
            .map(DeliveryMessage::to_queue_message)
            .collect();
        self.send_many(&messages).await
    }
}

/// A message as the queue carries it: its body, its FIFO message group, its deduplication id
/// (the same id within five minutes is accepted once), and a correlation id for the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub body: String,
    pub group: String,
    pub deduplication_id: String,
    pub correlation_id: String,
}

impl DeliveryMessage {
    /// The queue message delivering this notification: grouped by conversation, deduplicated
    /// by notification id.
    pub fn to_queue_message(&self) -> QueueMessage {
        QueueMessage {
            body: self.to_body(),
            group: self.group(),
            deduplication_id: self.id.to_string(),
            correlation_id: self.correlation_id.clone(),
        }
    }
}

/// The longest visibility SQS allows: a message can be put back for at most this long.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600 - 60);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_safe_keys() {
        assert!(NotificationId::parse("job-123456").is_ok());
        assert!(NotificationId::parse("n-0123abcd:x.y_z").is_ok());
        assert!(NotificationId::parse("").is_err());
        assert!(NotificationId::parse("has space").is_err());
        assert!(NotificationId::parse("a/b").is_err());
        assert!(NotificationId::parse(&"x".repeat(101)).is_err());
        let random = NotificationId::random();
        assert_eq!(random.as_str().len(), 34);
        assert!(NotificationId::parse(random.as_str()).is_ok());
        assert!(serde_json::from_str::<NotificationId>("\"a b\"").is_err());
    }

    #[test]
    fn message_body_round_trips_and_is_versioned() {
        let message = DeliveryMessage {
            id: NotificationId::parse("job-7").unwrap(),
            conversation: "a:1;messageid=2".into(),
            channel: "msteams".into(),
            tenant: Some("t1".into()),
            correlation_id: "c0ffee".into(),
            urgent: false,
            update: false,
            slot: None,
        };
        let body = message.to_body();
        let value: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["v"], 2);
        assert_eq!(value["kind"], "notification");
        assert_eq!(value["id"], "job-7");
        assert!(value.get("urgent").is_none() && value.get("update").is_none());
        assert_eq!(DeliveryMessage::from_body(&body).unwrap(), message);
        let flagged = DeliveryMessage {
            urgent: true,
            update: true,
            slot: Some(1_700_000_000_021),
            ..message.clone()
        };
        let value: Value = serde_json::from_str(&flagged.to_body()).unwrap();
        assert_eq!(
            (&value["urgent"], &value["update"], &value["slot"]),
            (&json!(true), &json!(true), &json!(1_700_000_000_021_i64))
        );
        assert_eq!(
            DeliveryMessage::from_body(&flagged.to_body()).unwrap(),
            flagged
        );
        assert!(DeliveryMessage::from_body("not json").is_err());
        assert!(
            DeliveryMessage::from_body(
                r#"{"v":1,"kind":"jobCompleted","job":7,"conversation":"c"}"#
            )
            .is_err()
        );
        assert!(DeliveryMessage::from_body(r#"{"v":2,"kind":"notification","id":"x"}"#).is_err());
        assert!(
            DeliveryMessage::from_body(
                r#"{"v":2,"kind":"notification","id":"a b","conversation":"c"}"#
            )
            .is_err()
        );
        let secret = "s3cr3t-input";
        let error = DeliveryMessage::from_body(&format!("{{\"v\":\"{secret}\"}}")).unwrap_err();
        assert!(!error.to_string().contains(secret), "{error}");
    }

    #[test]
    fn groups_are_valid_fifo_group_ids() {
        assert_eq!(group_of("a:1;messageid=2"), "a:1;messageid=2");
        let long = "19:".to_owned() + &"x".repeat(200);
        let group = group_of(&long);
        assert!(group.starts_with("h-") && group.len() == 18, "{group}");
        assert_eq!(group, group_of(&long), "stable");
        assert_ne!(group_of("conv with space"), "conv with space");
    }

    #[test]
    fn content_becomes_a_message_activity() {
        let content = Content {
            text: Some("hi".into()),
            text_format: Some("markdown".into()),
            attachments: vec![
                serde_json::json!({"contentType": "application/vnd.microsoft.card.adaptive", "content": {}}),
            ],
            digest: None,
        };
        let activity = content.to_activity();
        assert_eq!(activity.kind, "message");
        assert_eq!(activity.text.as_deref(), Some("hi"));
        assert_eq!(activity.text_format.as_deref(), Some("markdown"));
        assert_eq!(
            activity.extra["attachments"][0]["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card_only = Content {
            attachments: content.attachments.clone(),
            ..Content::default()
        };
        assert_eq!(card_only.to_activity().text, None);
        assert_eq!(card_only.to_activity().text_format, None);
        assert_eq!(
            Content::text("Job 7 is complete.")
                .to_activity()
                .text_format
                .as_deref(),
            Some("plain"),
            "read off the text when the producer gave no format"
        );
    }

    #[test]
    fn states_serialize_with_their_names() {
        let state = DeliveryState::GaveUp {
            gave_up_at: DateTime::from_timestamp(0, 0).unwrap(),
            last_error: "503".into(),
        };
        let value = serde_json::to_value(&state).unwrap();
        assert_eq!(value["state"], "gaveUp");
        assert_eq!(state.name(), "gaveUp");
        assert!(!state.is_final());
    }
}
