//! In-memory adapters: the local runner's embedded default and the unit tests' ports. They
//! honour the same contracts as the DynamoDB and SQS adapters — conditional transitions atomic
//! under one lock, the queue FIFO per conversation with visibility timeouts, receive counts and
//! a dead-letter queue — so the conversation and the engine behave the same on both.
//!
//! The stores are **bounded**: a long local run does not grow without limit. When full, the
//! oldest *finished* items (complete jobs, sent/failed/given-up notifications) are evicted
//! first; if every item is still in use the write is refused ([`StoreError::Full`]) rather
//! than losing work in progress.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::SqsMessage;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::delivery::NotificationStore;
use crate::delivery::consumer::{QueueConsumer, QueueControl};
use crate::delivery::limits::{RateLimitStore, SendLog, Slot};
use crate::delivery::notification::{
    BatchEntry, BatchPage, Claim, Created, DeliveryState, Notification, NotificationId,
    NotificationQueue, Outcome, Progress, QueueError, QueueMessage,
    StoreError as DeliveryStoreError,
};
use crate::jobs::{CompleteOutcome, Job, JobNumber, JobPage, JobStatus, JobStore, StoreError};

/// How many items a memory store keeps by default.
pub const DEFAULT_CAPACITY: usize = 10_000;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a half-written item (every write is a
    // single insert or field update), so a poisoned map is still consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Jobs in a map behind a mutex; every operation is atomic under the lock, as the DynamoDB
/// conditional writes are.
pub struct MemoryJobStore {
    jobs: Mutex<HashMap<JobNumber, Job>>,
    capacity: usize,
}

impl Default for MemoryJobStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl MemoryJobStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        MemoryJobStore {
            jobs: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.jobs).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn create(&self, job: &Job) -> Result<(), StoreError> {
        let mut jobs = lock(&self.jobs);
        if jobs.contains_key(&job.number) {
            return Err(StoreError::Duplicate(job.number));
        }
        if jobs.len() >= self.capacity {
            let oldest_complete = jobs
                .values()
                .filter(|j| !j.status.is_running())
                .min_by_key(|j| (j.status.completed_at(), j.number))
                .map(|j| j.number);
            match oldest_complete {
                Some(number) => {
                    jobs.remove(&number);
                }
                None => {
                    return Err(StoreError::Full(format!(
                        "{} running jobs; complete some first",
                        jobs.len()
                    )));
                }
            }
        }
        jobs.insert(job.number, job.clone());
        Ok(())
    }

    async fn get(&self, number: JobNumber) -> Result<Option<Job>, StoreError> {
        Ok(lock(&self.jobs).get(&number).cloned())
    }

    async fn list_recent(&self, tenant: Option<&str>, limit: usize) -> Result<JobPage, StoreError> {
        let jobs = lock(&self.jobs);
        let mut all: Vec<&Job> = jobs.values().filter(|job| job.tenant() == tenant).collect();
        all.sort_by_key(|job| std::cmp::Reverse((job.created_at, job.number)));
        Ok(JobPage {
            total: all.len(),
            jobs: all.into_iter().take(limit).cloned().collect(),
        })
    }

    async fn announce(&self, number: JobNumber, activity_id: &str) -> Result<bool, StoreError> {
        Ok(match lock(&self.jobs).get_mut(&number) {
            Some(job) => {
                job.announcement = Some(activity_id.to_owned());
                true
            }
            None => false,
        })
    }

    async fn complete(
        &self,
        number: JobNumber,
        notification: &NotificationId,
        now: DateTime<Utc>,
    ) -> Result<CompleteOutcome, StoreError> {
        let mut jobs = lock(&self.jobs);
        let Some(job) = jobs.get_mut(&number) else {
            return Ok(CompleteOutcome::NotFound);
        };
        if !job.status.is_running() {
            return Ok(CompleteOutcome::AlreadyComplete(job.clone()));
        }
        job.status = JobStatus::Complete {
            completed_at: now,
            notification: notification.clone(),
        };
        Ok(CompleteOutcome::Completed(job.clone()))
    }
}

/// Notifications in a map behind a mutex, bounded like [`MemoryJobStore`].
pub struct MemoryNotificationStore {
    notifications: Mutex<HashMap<NotificationId, Notification>>,
    capacity: usize,
}

impl Default for MemoryNotificationStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl MemoryNotificationStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        MemoryNotificationStore {
            notifications: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.notifications).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn finished_at(notification: &Notification) -> Option<DateTime<Utc>> {
    match &notification.state {
        DeliveryState::Sent { sent_at, .. } => Some(*sent_at),
        DeliveryState::Failed { failed_at, .. } => Some(*failed_at),
        DeliveryState::GaveUp { gave_up_at, .. } => Some(*gave_up_at),
        DeliveryState::Queued | DeliveryState::Sending { .. } => None,
    }
}

#[async_trait]
impl NotificationStore for MemoryNotificationStore {
    async fn create(&self, notification: &Notification) -> Result<Created, DeliveryStoreError> {
        let mut all = lock(&self.notifications);
        if let Some(existing) = all.get(&notification.id) {
            return Ok(Created::Existing(Box::new(existing.clone())));
        }
        if all.len() >= self.capacity {
            let oldest_finished = all
                .values()
                .filter_map(|n| finished_at(n).map(|at| (at, n.id.clone())))
                .min()
                .map(|(_, id)| id);
            match oldest_finished {
                Some(id) => {
                    all.remove(&id);
                }
                None => {
                    return Err(DeliveryStoreError::Full(format!(
                        "{} notifications waiting for delivery",
                        all.len()
                    )));
                }
            }
        }
        all.insert(notification.id.clone(), notification.clone());
        Ok(Created::New)
    }

    async fn get(&self, id: &NotificationId) -> Result<Option<Notification>, DeliveryStoreError> {
        Ok(lock(&self.notifications).get(id).cloned())
    }

    async fn get_many(
        &self,
        ids: &[NotificationId],
    ) -> Result<Vec<Notification>, DeliveryStoreError> {
        let all = lock(&self.notifications);
        Ok(ids.iter().filter_map(|id| all.get(id).cloned()).collect())
    }

    async fn claim(
        &self,
        id: &NotificationId,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Claim, DeliveryStoreError> {
        let mut all = lock(&self.notifications);
        let Some(notification) = all.get_mut(id) else {
            return Ok(Claim::NotFound);
        };
        match &notification.state {
            DeliveryState::Sent { .. } | DeliveryState::Failed { .. } => {
                return Ok(Claim::Final(notification.clone()));
            }
            DeliveryState::Sending { lease_until } if *lease_until >= now => {
                return Ok(Claim::Busy(*lease_until));
            }
            DeliveryState::Queued
            | DeliveryState::GaveUp { .. }
            | DeliveryState::Sending { .. } => {}
        }
        notification.state = DeliveryState::Sending { lease_until };
        Ok(Claim::Claimed(notification.clone()))
    }

    async fn record(
        &self,
        id: &NotificationId,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<(), DeliveryStoreError> {
        let mut all = lock(&self.notifications);
        let Some(notification) = all.get_mut(id) else {
            return Ok(());
        };
        if notification.state.is_final() {
            return Ok(());
        }
        match outcome {
            Outcome::Sent { activity_id } => {
                notification.attempts += 1;
                notification.state = DeliveryState::Sent {
                    sent_at: now,
                    activity_id,
                };
            }
            Outcome::Failed { reason } => {
                notification.attempts += 1;
                notification.state = DeliveryState::Failed {
                    failed_at: now,
                    reason,
                };
            }
            Outcome::Retry { error } => {
                notification.attempts += 1;
                notification.last_error = Some(error);
                notification.state = DeliveryState::Queued;
            }
            Outcome::Released => {
                notification.state = DeliveryState::Queued;
            }
            Outcome::GaveUp {
                last_error,
                attempted,
            } => {
                notification.attempts += u32::from(attempted);
                notification.last_error = Some(last_error.clone());
                notification.state = DeliveryState::GaveUp {
                    gave_up_at: now,
                    last_error,
                };
            }
        }
        Ok(())
    }

    async fn list_batch(
        &self,
        batch: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<BatchPage, DeliveryStoreError> {
        let all = lock(&self.notifications);
        let mut entries: Vec<BatchEntry> = all
            .values()
            .filter(|n| n.batch.as_deref() == Some(batch))
            .filter(|n| after.is_none_or(|after| n.id.as_str() > after))
            .map(|n| BatchEntry {
                id: n.id.clone(),
                conversation: n.target.conversation.id.clone(),
                progress: Progress::of(&n.state),
            })
            .collect();
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        let limit = limit.max(1);
        let next = (entries.len() > limit).then(|| entries[limit - 1].id.to_string());
        entries.truncate(limit);
        Ok(BatchPage { entries, next })
    }
}

/// Rate-limit state in maps behind a mutex.
#[derive(Default)]
pub struct MemoryRateLimitStore {
    logs: Mutex<HashMap<String, SendLog>>,
    slots: Mutex<HashMap<String, i64>>,
}

impl MemoryRateLimitStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RateLimitStore for MemoryRateLimitStore {
    async fn load_log(&self, key: &str) -> Result<SendLog, DeliveryStoreError> {
        Ok(lock(&self.logs).get(key).cloned().unwrap_or_default())
    }

    async fn store_log(
        &self,
        key: &str,
        expected_version: u64,
        sends: &[i64],
        _keep_for: Duration,
    ) -> Result<bool, DeliveryStoreError> {
        let mut logs = lock(&self.logs);
        let current = logs.get(key).map(|log| log.version).unwrap_or(0);
        if current != expected_version {
            return Ok(false);
        }
        // Bounded like the stores: idle logs are dropped when there are many.
        if logs.len() >= DEFAULT_CAPACITY && !logs.contains_key(key) {
            let newest = sends.last().copied().unwrap_or(0);
            logs.retain(|_, log| log.sends.last().is_some_and(|&t| t > newest - 3_600_000));
        }
        logs.insert(
            key.to_owned(),
            SendLog {
                sends: sends.to_vec(),
                version: expected_version + 1,
            },
        );
        Ok(true)
    }

    async fn reserve_slot(
        &self,
        key: &str,
        interval: Duration,
        not_before: i64,
        latest: i64,
    ) -> Result<Slot, DeliveryStoreError> {
        let mut slots = lock(&self.slots);
        let next_free = slots.get(key).copied().unwrap_or(i64::MIN);
        let slot = next_free.max(not_before);
        if slot > latest {
            return Ok(Slot::Full(slot));
        }
        if slots.len() >= DEFAULT_CAPACITY && !slots.contains_key(key) {
            slots.retain(|_, next| *next > not_before);
        }
        slots.insert(key.to_owned(), slot + interval.as_millis() as i64);
        Ok(Slot::Reserved(slot))
    }
}

/// SQS FIFO semantics in memory: messages in order per group, a group held while one of its
/// messages is in flight, visibility timeouts, receive counts, a dead-letter queue after
/// `max_receives`, and five-minute deduplication by notification id.
pub struct MemoryQueue {
    state: Mutex<QueueState>,
    changed: Notify,
    visibility_timeout: Duration,
    max_receives: u32,
    capacity: usize,
}

#[derive(Default)]
struct QueueState {
    messages: VecDeque<QueuedMessage>,
    dead_letters: Vec<QueuedMessage>,
    recent_ids: HashMap<String, Instant>,
    next_id: u64,
}

/// A message held by a [`MemoryQueue`].
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub message_id: String,
    pub body: String,
    pub group: String,
    pub receive_count: u32,
    receipt: Option<String>,
    visible_at: Instant,
    /// When it was sent, as SQS's `SentTimestamp` says.
    sent_at: chrono::DateTime<chrono::Utc>,
}

/// How long a notification id is remembered for deduplication (SQS FIFO: 5 minutes).
const DEDUPLICATION_WINDOW: Duration = Duration::from_secs(300);

impl MemoryQueue {
    /// A queue whose received messages come back after `visibility_timeout` unless deleted,
    /// and go to the dead-letter queue once received `max_receives` times.
    pub fn new(visibility_timeout: Duration, max_receives: u32) -> Self {
        MemoryQueue {
            state: Mutex::new(QueueState::default()),
            changed: Notify::new(),
            visibility_timeout,
            max_receives: max_receives.max(1),
            capacity: 100_000,
        }
    }

    /// Messages waiting or in flight.
    pub fn len(&self) -> usize {
        lock(&self.state).messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the dead-letter queue holds.
    pub fn dead_letters(&self) -> Vec<QueuedMessage> {
        lock(&self.state).dead_letters.clone()
    }

    /// Moves every dead letter back to the queue, as `StartMessageMoveTask` does.
    pub fn redrive(&self) -> usize {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let moved: Vec<QueuedMessage> = state.dead_letters.drain(..).collect();
        let count = moved.len();
        for mut message in moved {
            message.receive_count = 0;
            message.receipt = None;
            message.visible_at = now;
            state.messages.push_back(message);
        }
        drop(state);
        self.changed.notify_waiters();
        count
    }

    fn take_visible(&self, max: usize) -> (Vec<SqsMessage>, Option<Instant>) {
        let mut state = lock(&self.state);
        let now = Instant::now();
        // A group is held while any of its messages is in flight (received, not yet visible).
        let held: HashSet<String> = state
            .messages
            .iter()
            .filter(|m| m.receipt.is_some() && m.visible_at > now)
            .map(|m| m.group.clone())
            .collect();
        let mut taken = Vec::new();
        let mut skipped: HashSet<String> = HashSet::new();
        let mut to_dead_letter = Vec::new();
        let mut next_change: Option<Instant> = None;
        let mut next_id = state.next_id;
        for (index, message) in state.messages.iter_mut().enumerate() {
            if taken.len() >= max {
                break;
            }
            if held.contains(&message.group) || skipped.contains(&message.group) {
                continue;
            }
            if message.visible_at > now {
                // Not yet visible (and not received): the group waits behind it.
                skipped.insert(message.group.clone());
                next_change =
                    Some(next_change.map_or(message.visible_at, |t| t.min(message.visible_at)));
                continue;
            }
            if message.receive_count >= self.max_receives {
                to_dead_letter.push(index);
                continue;
            }
            next_id += 1;
            message.receive_count += 1;
            message.receipt = Some(format!("{}#{next_id}", message.message_id));
            message.visible_at = now + self.visibility_timeout;
            let mut record =
                crate::delivery::consumer::sqs_record(&message.message_id, &message.body);
            record.receipt_handle = message.receipt.clone();
            record.attributes.insert(
                "ApproximateReceiveCount".to_owned(),
                message.receive_count.to_string(),
            );
            record
                .attributes
                .insert("MessageGroupId".to_owned(), message.group.clone());
            record.attributes.insert(
                "SentTimestamp".to_owned(),
                message.sent_at.timestamp_millis().to_string(),
            );
            taken.push(record);
        }
        state.next_id = next_id;
        for index in to_dead_letter.into_iter().rev() {
            if let Some(message) = state.messages.remove(index) {
                state.dead_letters.push(message);
            }
        }
        if let Some(t) = state
            .messages
            .iter()
            .filter(|m| m.receipt.is_some())
            .map(|m| m.visible_at)
            .min()
        {
            next_change = Some(next_change.map_or(t, |n| n.min(t)));
        }
        (taken, next_change)
    }
}

#[async_trait]
impl NotificationQueue for MemoryQueue {
    async fn send(&self, message: &QueueMessage) -> Result<(), QueueError> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        state
            .recent_ids
            .retain(|_, at| now.duration_since(*at) < DEDUPLICATION_WINDOW);
        if state.recent_ids.contains_key(&message.deduplication_id) {
            return Ok(());
        }
        if state.messages.len() >= self.capacity {
            return Err(QueueError::Unavailable(format!(
                "the in-memory queue holds {} messages",
                state.messages.len()
            )));
        }
        state
            .recent_ids
            .insert(message.deduplication_id.clone(), now);
        state.next_id += 1;
        let message_id = format!("mem-{:08}", state.next_id);
        state.messages.push_back(QueuedMessage {
            message_id,
            body: message.body.clone(),
            group: message.group.clone(),
            receive_count: 0,
            receipt: None,
            visible_at: now,
            sent_at: chrono::Utc::now(),
        });
        drop(state);
        self.changed.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl QueueControl for MemoryQueue {
    async fn retry_in(&self, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        let mut state = lock(&self.state);
        // Whole seconds, rounded up, as SQS counts visibility.
        let delay = Duration::from_secs(delay.as_secs() + u64::from(delay.subsec_nanos() > 0));
        let message = state
            .messages
            .iter_mut()
            .find(|m| m.receipt.as_deref() == Some(receipt_handle))
            .ok_or_else(|| QueueError::Unavailable("receipt handle is not valid".to_owned()))?;
        message.visible_at = Instant::now() + delay;
        drop(state);
        self.changed.notify_waiters();
        Ok(())
    }

    async fn dead_letter(&self, record: &SqsMessage) -> Result<(), QueueError> {
        let mut state = lock(&self.state);
        let receipt = record.receipt_handle.as_deref();
        let copy = state
            .messages
            .iter()
            .find(|m| m.receipt.is_some() && m.receipt.as_deref() == receipt)
            .cloned()
            .ok_or_else(|| QueueError::Unavailable("receipt handle is not valid".to_owned()))?;
        state.dead_letters.push(copy);
        Ok(())
    }
}

#[async_trait]
impl QueueConsumer for MemoryQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<SqsMessage>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            let (taken, next_change) = self.take_visible(max.clamp(1, 10));
            if !taken.is_empty() || Instant::now() >= deadline {
                return Ok(taken);
            }
            let wake = next_change.map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        let mut state = lock(&self.state);
        let before = state.messages.len();
        state
            .messages
            .retain(|m| m.receipt.as_deref() != Some(receipt_handle));
        let deleted = state.messages.len() < before;
        drop(state);
        if deleted {
            self.changed.notify_waiters();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{Content, DeliveryMessage, Source};
    use crate::schema::{ConversationAccount, ConversationReference};

    fn reference(conversation: &str) -> ConversationReference {
        ConversationReference {
            conversation: ConversationAccount {
                id: conversation.to_owned(),
                ..Default::default()
            },
            service_url: "http://127.0.0.1:1/".into(),
            ..Default::default()
        }
    }

    fn job(n: u32, secs: i64) -> Job {
        Job::new_running(
            JobNumber::new(n).unwrap(),
            reference(&format!("conv-{n}")),
            DateTime::from_timestamp(secs, 0).unwrap(),
        )
    }

    fn notification(id: &str, conversation: &str) -> Notification {
        Notification::new(
            NotificationId::parse(id).unwrap(),
            Source::Job { number: 1 },
            reference(conversation),
            Content::text("hi"),
            Utc::now(),
        )
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[tokio::test]
    async fn create_refuses_an_existing_number() {
        let store = MemoryJobStore::new();
        store.create(&job(1, 0)).await.unwrap();
        assert!(matches!(
            store.create(&job(1, 5)).await,
            Err(StoreError::Duplicate(_))
        ));
    }

    #[tokio::test]
    async fn lists_most_recent_first_within_the_limit() {
        let store = MemoryJobStore::new();
        for n in 1..=5 {
            store.create(&job(n, i64::from(n))).await.unwrap();
        }
        let page = store.list_recent(None, 2).await.unwrap();
        assert_eq!(page.total, 5);
        let numbers: Vec<u32> = page.jobs.iter().map(|j| j.number.get()).collect();
        assert_eq!(numbers, vec![5, 4]);
    }

    #[tokio::test]
    async fn completing_is_conditional() {
        let store = MemoryJobStore::new();
        let n = JobNumber::new(1).unwrap();
        let id = NotificationId::parse("job-1").unwrap();
        store.create(&job(1, 0)).await.unwrap();
        assert!(matches!(
            store.complete(n, &id, t(10)).await.unwrap(),
            CompleteOutcome::Completed(_)
        ));
        assert!(matches!(
            store.complete(n, &id, t(20)).await.unwrap(),
            CompleteOutcome::AlreadyComplete(_)
        ));
        assert_eq!(
            store
                .complete(JobNumber::new(2).unwrap(), &id, t(1))
                .await
                .unwrap(),
            CompleteOutcome::NotFound
        );
    }

    #[tokio::test]
    async fn a_full_job_store_evicts_complete_jobs_first_and_never_running_ones() {
        let store = MemoryJobStore::with_capacity(3);
        let id = NotificationId::parse("job-x").unwrap();
        for n in 1..=3 {
            store.create(&job(n, i64::from(n))).await.unwrap();
        }
        store
            .complete(JobNumber::new(2).unwrap(), &id, t(50))
            .await
            .unwrap();
        store.create(&job(4, 4)).await.unwrap();
        assert_eq!(store.len(), 3);
        assert!(
            store
                .get(JobNumber::new(2).unwrap())
                .await
                .unwrap()
                .is_none(),
            "the complete one went"
        );
        assert!(
            store
                .get(JobNumber::new(1).unwrap())
                .await
                .unwrap()
                .is_some()
        );
        assert!(matches!(
            store.create(&job(5, 5)).await,
            Err(StoreError::Full(_))
        ));
        assert_eq!(store.len(), 3, "nothing running was lost");
    }

    #[tokio::test]
    async fn a_full_notification_store_evicts_finished_ones_first() {
        let store = MemoryNotificationStore::with_capacity(2);
        store.create(&notification("a", "c")).await.unwrap();
        store.create(&notification("b", "c")).await.unwrap();
        assert!(matches!(
            store.create(&notification("c", "c")).await,
            Err(DeliveryStoreError::Full(_))
        ));
        let a = NotificationId::parse("a").unwrap();
        store.claim(&a, t(0), t(60)).await.unwrap();
        store
            .record(&a, Outcome::Sent { activity_id: None }, t(1))
            .await
            .unwrap();
        assert_eq!(
            store.create(&notification("c", "c")).await.unwrap(),
            Created::New
        );
        assert!(store.get(&a).await.unwrap().is_none());
        assert_eq!(store.len(), 2);
    }

    #[tokio::test]
    async fn claims_and_records_follow_the_contract() {
        let store = MemoryNotificationStore::new();
        let n = notification("n1", "c");
        assert_eq!(store.create(&n).await.unwrap(), Created::New);
        assert!(matches!(
            store.create(&n).await.unwrap(),
            Created::Existing(_)
        ));
        let id = n.id.clone();
        assert!(matches!(
            store.claim(&id, t(0), t(60)).await.unwrap(),
            Claim::Claimed(_)
        ));
        assert_eq!(
            store.claim(&id, t(10), t(70)).await.unwrap(),
            Claim::Busy(t(60))
        );
        // The lease lapsed: taken over.
        assert!(matches!(
            store.claim(&id, t(61), t(121)).await.unwrap(),
            Claim::Claimed(_)
        ));
        store
            .record(
                &id,
                Outcome::Retry {
                    error: "503".into(),
                },
                t(62),
            )
            .await
            .unwrap();
        let stored = store.get(&id).await.unwrap().unwrap();
        assert_eq!(
            (stored.attempts, stored.last_error.as_deref()),
            (1, Some("503"))
        );
        assert_eq!(stored.state, DeliveryState::Queued);
        store
            .record(
                &id,
                Outcome::GaveUp {
                    last_error: "503".into(),
                    attempted: false,
                },
                t(63),
            )
            .await
            .unwrap();
        // A redrive claims a given-up notification again.
        assert!(matches!(
            store.claim(&id, t(64), t(124)).await.unwrap(),
            Claim::Claimed(_)
        ));
        store
            .record(
                &id,
                Outcome::Sent {
                    activity_id: Some("a1".into()),
                },
                t(65),
            )
            .await
            .unwrap();
        store
            .record(
                &id,
                Outcome::Failed {
                    reason: "late".into(),
                },
                t(66),
            )
            .await
            .unwrap();
        let stored = store.get(&id).await.unwrap().unwrap();
        assert_eq!(stored.attempts, 2);
        assert!(
            matches!(stored.state, DeliveryState::Sent { .. }),
            "a late report cannot undo Sent"
        );
        assert!(matches!(
            store.claim(&id, t(100), t(160)).await.unwrap(),
            Claim::Final(_)
        ));
        let unknown = NotificationId::parse("nope").unwrap();
        assert_eq!(
            store.claim(&unknown, t(0), t(1)).await.unwrap(),
            Claim::NotFound
        );
        store
            .record(&unknown, Outcome::Retry { error: "x".into() }, t(0))
            .await
            .unwrap();
    }

    fn message(id: &str, conversation: &str) -> DeliveryMessage {
        notification(id, conversation).message()
    }

    fn ids(records: &[SqsMessage]) -> Vec<String> {
        records
            .iter()
            .map(|r| {
                DeliveryMessage::from_body(r.body.as_deref().unwrap())
                    .unwrap()
                    .id
                    .to_string()
            })
            .collect()
    }

    #[tokio::test]
    async fn the_queue_is_fifo_per_conversation_and_holds_a_group_in_flight() {
        let queue = MemoryQueue::new(Duration::from_secs(30), 5);
        for (id, conversation) in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("a1", "a")] {
            queue.enqueue(&message(id, conversation)).await.unwrap();
        }
        assert_eq!(queue.len(), 3, "a1 twice is deduplicated");
        let first = queue.receive(1, Duration::ZERO).await.unwrap();
        assert_eq!(ids(&first), vec!["a1"]);
        // a1 is in flight: a2 must wait; b1 may go.
        let second = queue.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(ids(&second), vec!["b1"]);
        // a1 back in 1 s: still nothing of "a" before it.
        queue
            .retry_in(
                first[0].receipt_handle.as_deref().unwrap(),
                Duration::from_millis(1),
            )
            .await
            .unwrap();
        assert!(queue.receive(10, Duration::ZERO).await.unwrap().is_empty());
        let again = queue.receive(10, Duration::from_secs(3)).await.unwrap();
        assert_eq!(
            ids(&again),
            vec!["a1", "a2"],
            "in order, after its visibility"
        );
        assert_eq!(again[0].attributes["ApproximateReceiveCount"], "2");
        for record in &again {
            queue
                .delete(record.receipt_handle.as_deref().unwrap())
                .await
                .unwrap();
        }
        queue
            .delete(second[0].receipt_handle.as_deref().unwrap())
            .await
            .unwrap();
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn the_queue_dead_letters_after_max_receives_and_redrives() {
        let queue = MemoryQueue::new(Duration::from_millis(1), 2);
        queue.enqueue(&message("x", "c")).await.unwrap();
        for _ in 0..2 {
            let records = queue.receive(10, Duration::from_secs(1)).await.unwrap();
            assert_eq!(records.len(), 1);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            queue
                .receive(10, Duration::from_millis(20))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(queue.dead_letters().len(), 1);
        assert_eq!(queue.redrive(), 1);
        let records = queue.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(records[0].attributes["ApproximateReceiveCount"], "1");
    }
}
