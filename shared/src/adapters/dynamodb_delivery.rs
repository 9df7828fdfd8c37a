//! The DynamoDB [`NotificationStore`] and [`RateLimitStore`]: the delivery core's own table
//! (`DeliveryTable` in `template.yaml`), every transition a single conditional write.
//!
//! # Table layout
//!
//! One string partition key, `pk`, whose prefix says what kind of item it is:
//!
//! | item                     | `pk`                           | attributes                                |
//! |--------------------------|--------------------------------|-------------------------------------------|
//! | notification             | `n#<id>`                       | see below                                 |
//! | conversation send log    | `rate#<key>`                   | `sends` S, `version` N, `expiresAt` N     |
//! | tenant slot              | `slot#<key>`                   | `nextFree` N, `expiresAt` N               |
//! | registered conversation  | `conv#<conversation id>`       | see [`super::dynamodb_registry`]          |
//! | conversation's reminders | `rem#<channel>#<conversation>` | see [`super::dynamodb_reminders`]         |
//! | notify request           | `req#<id>`                     | see [`super::dynamodb_requests`]          |
//!
//! A notification:
//!
//! | attribute        | type | meaning                                                         |
//! |------------------|------|-----------------------------------------------------------------|
//! | `state`          | S    | `queued` \| `sending` \| `sent` \| `failed` \| `gaveUp`         |
//! | `createdAt`      | N    | epoch milliseconds                                              |
//! | `source`         | S    | who asked for it ([`Source`](crate::delivery::Source)), as JSON |
//! | `idempotencyKey` | S    | the producer's key, when it gave one                            |
//! | `correlationId`  | S    | ties the producing turn, the queue message and the delivery     |
//! | `urgent`         | BOOL | present (true) when the notification must interrupt            |
//! | `batch`          | S    | the notify request it is one recipient of, when it is one       |
//! | `conversation`   | S    | with `batch`: the target conversation's id                      |
//! | `target`         | S    | the conversation reference as JSON (unknown fields survive)     |
//! | `content`        | S    | text and attachments as JSON                                    |
//! | `updateOf`       | S    | the activity an update replaces in place, when it is an update  |
//! | `attempts`       | N    | Connector calls made so far                                     |
//! | `lastError`      | S    | the last transient error (while retrying, and once `gaveUp`)    |
//! | `leaseUntil`     | N    | epoch ms, while `sending`: the deliverer's lease                |
//! | `sentAt`         | N    | epoch ms, once `sent`                                           |
//! | `activityId`     | S    | once `sent`, when the channel gave the activity an id           |
//! | `failedAt`       | N    | epoch ms, once `failed`                                         |
//! | `reason`         | S    | once `failed`: why                                              |
//! | `gaveUpAt`       | N    | epoch ms, once `gaveUp`                                         |
//! | `expiresAt`      | N    | epoch **seconds**: the TTL; only `sent`, `failed`, `gaveUp`     |
//!
//! A send log's `sends` are epoch milliseconds, comma-separated, ascending; its `version`
//! counts the writes; it expires `keep_for` after its last write. A slot's `nextFree` is epoch
//! milliseconds; it expires a few minutes after that.
//!
//! # Why this shape
//!
//! - **One table for the delivery core.** Notifications, rate-limit state, the conversation
//!   registry and later idempotency records live together, apart from the jobs table: the
//!   engine knows nothing of jobs, and the delivery function's role then needs no access to
//!   jobs at all.
//! - **A typed string key.** `pk` with a type prefix lets later kinds of item arrive without
//!   a schema change; nothing here needs a range key (`show` reads by id). The one index,
//!   `ActiveConversations`, is sparse: only active registrations carry its keys, so no item
//!   of this module ever enters it.
//! - **Conditional writes.** Each transition of the ports' contracts is one request whose
//!   condition *is* the contract, and a refused write brings the stored item back
//!   (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), so the answer (Existing, Final, Busy,
//!   NotFound, the other slot case) never needs a second read. `create` and `claim` cost one
//!   request each, `record` one, a tenant slot one in the steady state.
//! - **Retention.** `expiresAt` is the table's TTL: notifications get it when they end (sent,
//!   failed, gave up: end + retention) and lose it when a redrive claims them again; send logs
//!   and slots get it on every write, so idle conversations and tenants disappear.
//!
//! Times are stored in whole milliseconds, so a notification read back has its instants
//! truncated to the millisecond.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};

use super::item::{Attributes, json, millis, number, string};
use crate::delivery::limits::{LogWrite, RateLimitStore, SendLog, Slot};
use crate::delivery::notification::{
    BatchEntry, BatchPage, Claim, Created, DeliveryState, Notification, NotificationId,
    NotificationStore, Outcome, Progress, StoreError,
};

/// Attribute names, key prefixes and state words: the items' vocabulary, in one place.
mod attr {
    pub const PK: &str = "pk";
    pub const EXPIRES_AT: &str = "expiresAt";

    pub const NOTIFICATION_PREFIX: &str = "n#";
    pub const STATE: &str = "state";
    pub const CREATED_AT: &str = "createdAt";
    pub const SOURCE: &str = "source";
    pub const IDEMPOTENCY_KEY: &str = "idempotencyKey";
    pub const BATCH: &str = "batch";
    pub const URGENT: &str = "urgent";
    pub const CONVERSATION: &str = "conversation";
    pub const CORRELATION_ID: &str = "correlationId";
    pub const TARGET: &str = "target";
    pub const CONTENT: &str = "content";
    pub const UPDATE_OF: &str = "updateOf";
    pub const ATTEMPTS: &str = "attempts";
    pub const LAST_ERROR: &str = "lastError";
    pub const LEASE_UNTIL: &str = "leaseUntil";
    pub const SENT_AT: &str = "sentAt";
    pub const ACTIVITY_ID: &str = "activityId";
    pub const FAILED_AT: &str = "failedAt";
    pub const REASON: &str = "reason";
    pub const GAVE_UP_AT: &str = "gaveUpAt";

    pub const QUEUED: &str = "queued";
    pub const SENDING: &str = "sending";
    pub const SENT: &str = "sent";
    pub const FAILED: &str = "failed";
    pub const GAVE_UP: &str = "gaveUp";

    pub const LOG_PREFIX: &str = "rate#";
    pub const SENDS: &str = "sends";
    pub const VERSION: &str = "version";

    pub const SLOT_PREFIX: &str = "slot#";
    pub const NEXT_FREE: &str = "nextFree";
}

/// The global secondary index listing a batch's notifications: partition key `batch`, sort
/// key `pk`, projecting `state`, `reason`, `lastError` and `conversation` (a request's
/// progress needs no more; the content, which may be large, stays out of the index).
pub const BATCH_INDEX: &str = "NotificationsByBatch";

/// How many conditional writes one `reserve_slot` makes at most: each refusal says which case
/// holds, so a second try normally succeeds; more only when other deliveries keep moving the
/// slot between our reads of it.
const SLOT_TRIES: usize = 4;
/// How long an idle tenant's slot item outlives its next free slot.
const SLOT_KEEP_SECS: i64 = 300;
/// Beyond this many keys the slot-case hints are simply forgotten (they are only a guess).
const SLOT_HINTS_MAX: usize = 1024;

/// Notifications and rate-limit state in a DynamoDB table shaped as the module doc describes.
#[derive(Debug)]
pub struct DynamoDeliveryStore {
    pub(super) client: Client,
    pub(super) table_name: String,
    pub(super) retention: chrono::Duration,
    /// Per slot key, the case of `reserve_slot` that succeeded last: a busy tenant stays busy,
    /// so trying that case first makes the steady state one request.
    slot_hints: Mutex<HashMap<String, SlotCase>>,
}

/// What one conditional slot write did.
enum SlotTry {
    /// The slot at this time is the caller's.
    Took(i64),
    /// The condition did not hold; the stored `nextFree` (none: no slot item yet) says why.
    Refused(Option<i64>),
}

/// The two shapes of a slot reservation (see [`DynamoDeliveryStore::reserve_slot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotCase {
    /// No slot is taken at or after `not_before`: the slot is `not_before`.
    Idle,
    /// Slots are taken beyond `not_before`: the slot is the next free one.
    Busy,
}

impl DynamoDeliveryStore {
    /// How long a finished notification is kept before the table's TTL deletes it.
    pub const DEFAULT_RETENTION: chrono::Duration = chrono::Duration::days(30);

    pub fn new(client: Client, table_name: impl Into<String>, retention: chrono::Duration) -> Self {
        DynamoDeliveryStore {
            client,
            table_name: table_name.into(),
            retention,
            slot_hints: Mutex::new(HashMap::new()),
        }
    }

    pub fn table_name(&self) -> &str {
        &self.table_name
    }

    /// `expiresAt` for a notification that ended at `ended`.
    fn expires_at(&self, ended: DateTime<Utc>) -> AttributeValue {
        super::item::expires_at(ended, self.retention)
    }

    pub(super) fn unavailable<E, R>(&self, operation: &str, error: SdkError<E, R>) -> StoreError
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        StoreError::Unavailable(super::item::failure(operation, &self.table_name, error))
    }

    fn slot_hint(&self, key: &str) -> SlotCase {
        let hints = self.slot_hints.lock().unwrap_or_else(|p| p.into_inner());
        hints.get(key).copied().unwrap_or(SlotCase::Idle)
    }

    fn remember_slot_case(&self, key: &str, case: SlotCase) {
        let mut hints = self.slot_hints.lock().unwrap_or_else(|p| p.into_inner());
        if hints.len() >= SLOT_HINTS_MAX && !hints.contains_key(key) {
            hints.clear();
        }
        hints.insert(key.to_owned(), case);
    }

    /// One conditional write of `case`.
    async fn try_slot(
        &self,
        key: &HashMap<String, AttributeValue>,
        case: SlotCase,
        interval: i64,
        not_before: i64,
        latest: i64,
    ) -> Result<SlotTry, StoreError> {
        // Outlives the next free slot whichever case wins (that is at most latest + interval).
        let expires_at = seconds_up(latest + interval) + SLOT_KEEP_SECS;
        let request = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(key.clone()))
            .expression_attribute_names("#nextFree", attr::NEXT_FREE)
            .expression_attribute_names("#expiresAt", attr::EXPIRES_AT)
            .expression_attribute_values(":notBefore", number(not_before))
            .expression_attribute_values(":expiresAt", number(expires_at))
            // The refusal carries the stored slot, which says which case holds.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let request = match case {
            SlotCase::Idle => request
                .condition_expression("attribute_not_exists(#nextFree) OR #nextFree <= :notBefore")
                .update_expression("SET #nextFree = :next, #expiresAt = :expiresAt")
                .expression_attribute_values(":next", number(not_before + interval)),
            SlotCase::Busy => request
                .condition_expression("#nextFree > :notBefore AND #nextFree <= :latest")
                .update_expression("SET #nextFree = #nextFree + :interval, #expiresAt = :expiresAt")
                .expression_attribute_values(":interval", number(interval))
                .expression_attribute_values(":latest", number(latest))
                .return_values(ReturnValue::UpdatedNew),
        };
        match request.send().await {
            Ok(output) => match case {
                SlotCase::Idle => Ok(SlotTry::Took(not_before)),
                SlotCase::Busy => {
                    let next: i64 = output
                        .attributes()
                        .ok_or_else(|| "no attributes returned".to_owned())
                        .and_then(|item| Attributes(item).number(attr::NEXT_FREE))
                        .map_err(|detail| StoreError::Corrupt {
                            key: pk_of(key),
                            detail,
                        })?;
                    Ok(SlotTry::Took(next - interval))
                }
            },
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(refusal)) => {
                    match refusal.item() {
                        Some(item) if item.contains_key(attr::NEXT_FREE) => Attributes(item)
                            .number(attr::NEXT_FREE)
                            .map(|next| SlotTry::Refused(Some(next)))
                            .map_err(|detail| StoreError::Corrupt {
                                key: pk_of(key),
                                detail,
                            }),
                        _ => Ok(SlotTry::Refused(None)),
                    }
                }
                _ => Err(self.unavailable("UpdateItem", error)),
            },
        }
    }
}

fn key(pk: String) -> HashMap<String, AttributeValue> {
    HashMap::from([(attr::PK.to_owned(), AttributeValue::S(pk))])
}

fn notification_key(id: &NotificationId) -> HashMap<String, AttributeValue> {
    key(format!("{}{id}", attr::NOTIFICATION_PREFIX))
}

/// The key's `pk`, for error messages.
fn pk_of(item: &HashMap<String, AttributeValue>) -> String {
    match item.get(attr::PK) {
        Some(AttributeValue::S(pk)) => pk.clone(),
        Some(other) => format!("{other:?}"),
        None => "(no pk)".to_owned(),
    }
}

/// Whole milliseconds, rounded up: a slot interval never shrinks.
fn whole_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX)
}

/// Epoch milliseconds as epoch seconds, rounded up (a TTL never comes early).
fn seconds_up(ms: i64) -> i64 {
    (ms + 999).div_euclid(1000)
}

/// The item of `notification`, `expiresAt` aside (the store's retention, not the
/// notification's).
fn to_item(notification: &Notification) -> HashMap<String, AttributeValue> {
    let mut item = notification_key(&notification.id);
    item.extend([
        (attr::CREATED_AT.to_owned(), millis(notification.created_at)),
        (attr::SOURCE.to_owned(), json(&notification.source)),
        (
            attr::CORRELATION_ID.to_owned(),
            string(&notification.correlation_id),
        ),
        (attr::TARGET.to_owned(), json(&notification.target)),
        (attr::CONTENT.to_owned(), json(&notification.content)),
        (attr::ATTEMPTS.to_owned(), number(notification.attempts)),
    ]);
    if let Some(idempotency_key) = &notification.idempotency_key {
        item.insert(attr::IDEMPOTENCY_KEY.to_owned(), string(idempotency_key));
    }
    if let Some(last_error) = &notification.last_error {
        item.insert(attr::LAST_ERROR.to_owned(), string(last_error));
    }
    if notification.urgent {
        item.insert(attr::URGENT.to_owned(), AttributeValue::Bool(true));
    }
    if let Some(activity_id) = &notification.update_of {
        item.insert(attr::UPDATE_OF.to_owned(), string(activity_id));
    }
    if let Some(batch) = &notification.batch {
        // The batch index's keys and what a request's progress reads (see the module doc).
        item.insert(attr::BATCH.to_owned(), string(batch));
        item.insert(
            attr::CONVERSATION.to_owned(),
            string(&notification.target.conversation.id),
        );
    }
    let state = match &notification.state {
        DeliveryState::Queued => attr::QUEUED,
        DeliveryState::Sending { lease_until } => {
            item.insert(attr::LEASE_UNTIL.to_owned(), millis(*lease_until));
            attr::SENDING
        }
        DeliveryState::Sent {
            sent_at,
            activity_id,
        } => {
            item.insert(attr::SENT_AT.to_owned(), millis(*sent_at));
            if let Some(activity_id) = activity_id {
                item.insert(attr::ACTIVITY_ID.to_owned(), string(activity_id));
            }
            attr::SENT
        }
        DeliveryState::Failed { failed_at, reason } => {
            item.insert(attr::FAILED_AT.to_owned(), millis(*failed_at));
            item.insert(attr::REASON.to_owned(), string(reason));
            attr::FAILED
        }
        DeliveryState::GaveUp {
            gave_up_at,
            last_error,
        } => {
            // One attribute for both: giving up keeps the error that made it give up.
            item.insert(attr::GAVE_UP_AT.to_owned(), millis(*gave_up_at));
            item.insert(attr::LAST_ERROR.to_owned(), string(last_error));
            attr::GAVE_UP
        }
    };
    item.insert(attr::STATE.to_owned(), string(state));
    item
}

/// When `state` ended, if it is one that gets the store's retention.
fn ended_at(state: &DeliveryState) -> Option<DateTime<Utc>> {
    match state {
        DeliveryState::Sent { sent_at, .. } => Some(*sent_at),
        DeliveryState::Failed { failed_at, .. } => Some(*failed_at),
        DeliveryState::GaveUp { gave_up_at, .. } => Some(*gave_up_at),
        DeliveryState::Queued | DeliveryState::Sending { .. } => None,
    }
}

/// Reads the delivery table's items.
trait DeliveryItem {
    fn notification(&self) -> Result<Notification, String>;
    fn send_log(&self) -> Result<SendLog, String>;
    fn batch_entry(&self) -> Result<BatchEntry, String>;
}

impl DeliveryItem for Attributes<'_> {
    fn notification(&self) -> Result<Notification, String> {
        let pk = self.string(attr::PK)?;
        let id = pk
            .strip_prefix(attr::NOTIFICATION_PREFIX)
            .and_then(|id| NotificationId::parse(id).ok())
            .ok_or_else(|| format!("{} is not a notification key", attr::PK))?;
        let state = match self.string(attr::STATE)? {
            attr::QUEUED => DeliveryState::Queued,
            attr::SENDING => DeliveryState::Sending {
                lease_until: self.millis(attr::LEASE_UNTIL)?,
            },
            attr::SENT => DeliveryState::Sent {
                sent_at: self.millis(attr::SENT_AT)?,
                activity_id: self.optional_string(attr::ACTIVITY_ID)?,
            },
            attr::FAILED => DeliveryState::Failed {
                failed_at: self.millis(attr::FAILED_AT)?,
                reason: self.string(attr::REASON)?.to_owned(),
            },
            attr::GAVE_UP => DeliveryState::GaveUp {
                gave_up_at: self.millis(attr::GAVE_UP_AT)?,
                last_error: self.string(attr::LAST_ERROR)?.to_owned(),
            },
            other => return Err(format!("unknown {} {other:?}", attr::STATE)),
        };
        Ok(Notification {
            id,
            created_at: self.millis(attr::CREATED_AT)?,
            source: self.json(attr::SOURCE)?,
            idempotency_key: self.optional_string(attr::IDEMPOTENCY_KEY)?,
            correlation_id: self.string(attr::CORRELATION_ID)?.to_owned(),
            urgent: matches!(self.0.get(attr::URGENT), Some(AttributeValue::Bool(true))),
            batch: self.optional_string(attr::BATCH)?,
            target: self.json(attr::TARGET)?,
            content: self.json(attr::CONTENT)?,
            update_of: self.optional_string(attr::UPDATE_OF)?,
            attempts: self.number(attr::ATTEMPTS)?,
            last_error: self.optional_string(attr::LAST_ERROR)?,
            state,
        })
    }

    /// A batch index item: the keys, `state`, `reason`, `lastError` and `conversation`.
    fn batch_entry(&self) -> Result<BatchEntry, String> {
        let pk = self.string(attr::PK)?;
        let id = pk
            .strip_prefix(attr::NOTIFICATION_PREFIX)
            .and_then(|id| NotificationId::parse(id).ok())
            .ok_or_else(|| format!("{} {pk:?} is not a notification key", attr::PK))?;
        let progress = match self.string(attr::STATE)? {
            attr::QUEUED | attr::SENDING => Progress::Pending,
            attr::SENT => Progress::Sent,
            attr::FAILED => Progress::Failed {
                reason: self.string(attr::REASON)?.to_owned(),
            },
            attr::GAVE_UP => Progress::gave_up(self.string(attr::LAST_ERROR)?),
            other => return Err(format!("unknown {} {other:?}", attr::STATE)),
        };
        Ok(BatchEntry {
            id,
            conversation: self.string(attr::CONVERSATION)?.to_owned(),
            progress,
        })
    }

    fn send_log(&self) -> Result<SendLog, String> {
        let sends = self.string(attr::SENDS)?;
        let sends = sends
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("{} holds {s:?}, not epoch ms", attr::SENDS))
            })
            .collect::<Result<_, _>>()?;
        Ok(SendLog {
            sends,
            version: self.number(attr::VERSION)?,
        })
    }
}

fn corrupt(item: &HashMap<String, AttributeValue>, detail: String) -> StoreError {
    StoreError::Corrupt {
        key: pk_of(item),
        detail,
    }
}

impl TryFrom<&HashMap<String, AttributeValue>> for Notification {
    type Error = StoreError;

    fn try_from(item: &HashMap<String, AttributeValue>) -> Result<Self, Self::Error> {
        Attributes(item)
            .notification()
            .map_err(|detail| corrupt(item, detail))
    }
}

#[async_trait]
impl NotificationStore for DynamoDeliveryStore {
    async fn create(&self, notification: &Notification) -> Result<Created, StoreError> {
        let mut item = to_item(notification);
        if let Some(ended) = ended_at(&notification.state) {
            item.insert(attr::EXPIRES_AT.to_owned(), self.expires_at(ended));
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.table_name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            // The stored notification comes back with the refusal: Existing in one request.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Created::New),
            Err(error) => match error.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(refusal)) => {
                    match refusal.item() {
                        Some(item) => {
                            Notification::try_from(item).map(|n| Created::Existing(Box::new(n)))
                        }
                        None => Err(StoreError::Unavailable(format!(
                            "DynamoDB PutItem on table {} refused notification {} without \
                             returning the stored one",
                            self.table_name, notification.id
                        ))),
                    }
                }
                _ => Err(self.unavailable("PutItem", error)),
            },
        }
    }

    async fn get(&self, id: &NotificationId) -> Result<Option<Notification>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .set_key(Some(notification_key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.unavailable("GetItem", e))?;
        output.item().map(Notification::try_from).transpose()
    }

    /// One BatchGetItem per 100 distinct ids; unprocessed keys are asked for again.
    async fn get_many(&self, ids: &[NotificationId]) -> Result<Vec<Notification>, StoreError> {
        // BatchGetItem refuses a request that names a key twice.
        let mut distinct: Vec<&NotificationId> = ids.iter().collect();
        distinct.sort();
        distinct.dedup();
        let keys = distinct.into_iter().map(notification_key).collect();
        super::item::batch_get(&self.client, &self.table_name, keys)
            .await
            .map_err(StoreError::Unavailable)?
            .iter()
            .map(Notification::try_from)
            .collect()
    }

    async fn claim(
        &self,
        id: &NotificationId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(notification_key(id)))
            // A redrive of a notification that gave up makes it live again: it must not expire.
            .update_expression(
                "SET #state = :sending, #leaseUntil = :leaseUntil REMOVE #gaveUpAt, #expiresAt",
            )
            .condition_expression(
                "attribute_exists(#pk) AND (#state IN (:queued, :gaveUp) \
                 OR (#state = :sending AND #leaseUntil < :now))",
            )
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#leaseUntil", attr::LEASE_UNTIL)
            .expression_attribute_names("#gaveUpAt", attr::GAVE_UP_AT)
            .expression_attribute_names("#expiresAt", attr::EXPIRES_AT)
            .expression_attribute_values(":queued", string(attr::QUEUED))
            .expression_attribute_values(":gaveUp", string(attr::GAVE_UP))
            .expression_attribute_values(":sending", string(attr::SENDING))
            .expression_attribute_values(":now", millis(now))
            .expression_attribute_values(":leaseUntil", millis(lease_until))
            .return_values(ReturnValue::AllNew)
            // The stored item comes back with the refusal, so Final, Busy and NotFound need no
            // second read.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => match output.attributes() {
                Some(item) => Notification::try_from(item).map(Claim::Claimed),
                None => Err(StoreError::Unavailable(format!(
                    "DynamoDB UpdateItem on table {} returned no attributes for notification {id}",
                    self.table_name
                ))),
            },
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(refusal)) => {
                    let Some(item) = refusal.item() else {
                        return Ok(Claim::NotFound);
                    };
                    let stored = Notification::try_from(item)?;
                    match stored.state {
                        DeliveryState::Sent { .. } | DeliveryState::Failed { .. } => {
                            Ok(Claim::Final(stored))
                        }
                        DeliveryState::Sending { lease_until } => Ok(Claim::Busy(lease_until)),
                        // The condition admits these: only a store that broke its own
                        // condition could get here; retrying is the honest answer.
                        DeliveryState::Queued | DeliveryState::GaveUp { .. } => {
                            Err(StoreError::Unavailable(format!(
                                "DynamoDB UpdateItem on table {} refused to claim notification \
                                 {id} while it is {}",
                                self.table_name,
                                stored.state.name()
                            )))
                        }
                    }
                }
                _ => Err(self.unavailable("UpdateItem", error)),
            },
        }
    }

    async fn record(
        &self,
        id: &NotificationId,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(notification_key(id)))
            .condition_expression("attribute_exists(#pk) AND NOT #state IN (:sent, :failed)")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#attempts", attr::ATTEMPTS)
            .expression_attribute_names("#leaseUntil", attr::LEASE_UNTIL)
            .expression_attribute_names("#expiresAt", attr::EXPIRES_AT)
            .expression_attribute_values(":sent", string(attr::SENT))
            .expression_attribute_values(":failed", string(attr::FAILED));
        let request = match outcome {
            Outcome::Sent { activity_id } => {
                let request = request
                    .expression_attribute_names("#sentAt", attr::SENT_AT)
                    .expression_attribute_names("#gaveUpAt", attr::GAVE_UP_AT)
                    .expression_attribute_values(":now", millis(now))
                    .expression_attribute_values(":one", number(1))
                    .expression_attribute_values(":expiresAt", self.expires_at(now));
                match activity_id {
                    Some(activity_id) => request
                        .update_expression(
                            "SET #state = :sent, #sentAt = :now, #activityId = :activityId, \
                                 #attempts = #attempts + :one, #expiresAt = :expiresAt \
                             REMOVE #leaseUntil, #gaveUpAt",
                        )
                        .expression_attribute_names("#activityId", attr::ACTIVITY_ID)
                        .expression_attribute_values(":activityId", string(activity_id)),
                    None => request.update_expression(
                        "SET #state = :sent, #sentAt = :now, \
                             #attempts = #attempts + :one, #expiresAt = :expiresAt \
                         REMOVE #leaseUntil, #gaveUpAt",
                    ),
                }
            }
            Outcome::Failed { reason } => request
                .update_expression(
                    "SET #state = :failed, #failedAt = :now, #reason = :reason, \
                         #attempts = #attempts + :one, #expiresAt = :expiresAt \
                     REMOVE #leaseUntil, #gaveUpAt",
                )
                .expression_attribute_names("#failedAt", attr::FAILED_AT)
                .expression_attribute_names("#reason", attr::REASON)
                .expression_attribute_names("#gaveUpAt", attr::GAVE_UP_AT)
                .expression_attribute_values(":reason", string(reason))
                .expression_attribute_values(":now", millis(now))
                .expression_attribute_values(":one", number(1))
                .expression_attribute_values(":expiresAt", self.expires_at(now)),
            // Queued never expires, whatever state the retry came from.
            Outcome::Retry { error } => request
                .update_expression(
                    "SET #state = :queued, #lastError = :error, #attempts = #attempts + :one \
                     REMOVE #leaseUntil, #gaveUpAt, #expiresAt",
                )
                .expression_attribute_names("#lastError", attr::LAST_ERROR)
                .expression_attribute_names("#gaveUpAt", attr::GAVE_UP_AT)
                .expression_attribute_values(":queued", string(attr::QUEUED))
                .expression_attribute_values(":error", string(error))
                .expression_attribute_values(":one", number(1)),
            // Given back unattempted: Queued, nothing counted (the names declared above must
            // all be used, hence the `+ 0`).
            Outcome::Released => request
                .update_expression(
                    "SET #state = :queued, #attempts = #attempts + :zero \
                     REMOVE #leaseUntil, #expiresAt",
                )
                .expression_attribute_values(":queued", string(attr::QUEUED))
                .expression_attribute_values(":zero", number(0)),
            Outcome::GaveUp {
                last_error,
                attempted,
            } => request
                .update_expression(
                    "SET #state = :gaveUp, #gaveUpAt = :now, #lastError = :error, \
                         #attempts = #attempts + :counted, #expiresAt = :expiresAt \
                     REMOVE #leaseUntil",
                )
                .expression_attribute_names("#gaveUpAt", attr::GAVE_UP_AT)
                .expression_attribute_names("#lastError", attr::LAST_ERROR)
                .expression_attribute_values(":gaveUp", string(attr::GAVE_UP))
                .expression_attribute_values(":now", millis(now))
                .expression_attribute_values(":error", string(last_error))
                .expression_attribute_values(":counted", number(u32::from(attempted)))
                .expression_attribute_values(":expiresAt", self.expires_at(now)),
        };
        match request.send().await {
            Ok(_) => Ok(()),
            // Sent or Failed already, or unknown: a late or repeated report changes nothing.
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(error) => Err(self.unavailable("UpdateItem", error)),
        }
    }

    async fn list_batch(
        &self,
        batch: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<BatchPage, StoreError> {
        let start = match after {
            None => None,
            Some(pk) if pk.starts_with(attr::NOTIFICATION_PREFIX) => Some(HashMap::from([
                (attr::BATCH.to_owned(), string(batch)),
                (attr::PK.to_owned(), string(pk)),
            ])),
            Some(_) => {
                return Err(StoreError::Corrupt {
                    key: "cursor".to_owned(),
                    detail: "not a cursor this store returned".to_owned(),
                });
            }
        };
        let output = self
            .client
            .query()
            .table_name(&self.table_name)
            .index_name(BATCH_INDEX)
            .key_condition_expression("#batch = :batch")
            .expression_attribute_names("#batch", attr::BATCH)
            .expression_attribute_values(":batch", string(batch))
            .set_exclusive_start_key(start)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| self.unavailable("Query", e))?;
        let entries = output
            .items()
            .iter()
            .map(|item| {
                Attributes(item)
                    .batch_entry()
                    .map_err(|detail| corrupt(item, detail))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let next = output
            .last_evaluated_key()
            .and_then(|key| key.get(attr::PK))
            .and_then(|pk| pk.as_s().ok())
            .cloned();
        Ok(BatchPage { entries, next })
    }
}

#[async_trait]
impl RateLimitStore for DynamoDeliveryStore {
    async fn load_log(&self, key: &str) -> Result<SendLog, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .set_key(Some(self::key(format!("{}{key}", attr::LOG_PREFIX))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.unavailable("GetItem", e))?;
        match output.item() {
            Some(item) => Attributes(item)
                .send_log()
                .map_err(|detail| corrupt(item, detail)),
            None => Ok(SendLog::default()),
        }
    }

    async fn store_log(
        &self,
        key: &str,
        expected_version: u64,
        sends: &[i64],
        keep_for: Duration,
    ) -> Result<bool, StoreError> {
        Ok(matches!(
            self.replace_log(key, expected_version, sends, keep_for)
                .await?,
            LogWrite::Stored
        ))
    }

    /// One conditional PutItem; a refusal carries the stored log
    /// (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), so no read follows it.
    async fn replace_log(
        &self,
        key: &str,
        expected_version: u64,
        sends: &[i64],
        keep_for: Duration,
    ) -> Result<LogWrite, StoreError> {
        let expires_at = seconds_up(Utc::now().timestamp_millis() + whole_millis(keep_for));
        let sends = sends
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut item = self::key(format!("{}{key}", attr::LOG_PREFIX));
        item.extend([
            (attr::SENDS.to_owned(), string(sends)),
            (attr::VERSION.to_owned(), number(expected_version + 1)),
            (attr::EXPIRES_AT.to_owned(), number(expires_at)),
        ]);
        let request = self
            .client
            .put_item()
            .table_name(&self.table_name)
            .set_item(Some(item))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let request = if expected_version == 0 {
            request
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", attr::PK)
        } else {
            request
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", attr::VERSION)
                .expression_attribute_values(":expected", number(expected_version))
        };
        match request.send().await {
            Ok(_) => Ok(LogWrite::Stored),
            // Someone else wrote the log since it was read (or removed it: an empty log).
            Err(SdkError::ServiceError(service))
                if service.err().is_conditional_check_failed_exception() =>
            {
                let current = match service.err() {
                    PutItemError::ConditionalCheckFailedException(refusal) => {
                        refusal.item().cloned()
                    }
                    _ => None,
                };
                match current {
                    Some(item) => Attributes(&item)
                        .send_log()
                        .map(LogWrite::Conflict)
                        .map_err(|detail| corrupt(&item, detail)),
                    None => Ok(LogWrite::Conflict(SendLog::default())),
                }
            }
            Err(error) => Err(self.unavailable("PutItem", error)),
        }
    }

    /// Two cases, each one atomic UpdateItem and neither needing a prior read:
    ///
    /// - **idle** (`nextFree` absent or ≤ `not_before`): the slot is `not_before`;
    ///   `nextFree = not_before + interval`.
    /// - **busy** (`not_before < nextFree ≤ latest`): the slot is the old `nextFree`;
    ///   `nextFree = nextFree + interval`, read back with `UPDATED_NEW`.
    ///
    /// The case that worked last for the key is tried first; a refusal returns the stored
    /// `nextFree`, which picks the other case or answers [`Slot::Full`].
    async fn reserve_slot(
        &self,
        key: &str,
        interval: Duration,
        not_before: i64,
        latest: i64,
    ) -> Result<Slot, StoreError> {
        let interval = whole_millis(interval);
        let item_key = self::key(format!("{}{key}", attr::SLOT_PREFIX));
        if not_before > latest {
            // Even an idle tenant's slot would be too late: reserve nothing, say when.
            let output = self
                .client
                .get_item()
                .table_name(&self.table_name)
                .set_key(Some(item_key))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| self.unavailable("GetItem", e))?;
            let next_free = match output.item() {
                Some(item) if item.contains_key(attr::NEXT_FREE) => Attributes(item)
                    .number(attr::NEXT_FREE)
                    .map_err(|detail| corrupt(item, detail))?,
                _ => not_before,
            };
            return Ok(Slot::Full(next_free.max(not_before)));
        }
        let mut case = self.slot_hint(key);
        let mut next_free = None;
        for _ in 0..SLOT_TRIES {
            match self
                .try_slot(&item_key, case, interval, not_before, latest)
                .await?
            {
                SlotTry::Took(slot) => {
                    self.remember_slot_case(key, case);
                    return Ok(Slot::Reserved(slot));
                }
                SlotTry::Refused(stored) => next_free = stored,
            }
            case = match next_free {
                None => SlotCase::Idle,
                Some(next) if next <= not_before => SlotCase::Idle,
                Some(next) if next > latest => return Ok(Slot::Full(next)),
                Some(_) => SlotCase::Busy,
            };
        }
        Ok(Slot::Full(next_free.unwrap_or(not_before + interval)))
    }
}
