//! Reminders without a cloud: [`MemoryReminderStore`] (each conversation's reminders in
//! process memory, bounded like the other memory stores) and [`LocalTimer`] (a tokio task per
//! reminder that puts its delivery message on a [`NotificationQueue`] at the due time — the
//! in-memory queue for `cargo run`, or SQS in the local AWS mode).
//!
//! Both live as long as the process: a restart forgets them, as it forgets every other
//! in-memory state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use crate::delivery::{DeliveryMessage, NotificationQueue, StoreError};
use crate::reminders::{
    ConversationKey, ConversationReminders, ReminderScheduler, ReminderStore, ScheduleError,
    ScheduleName,
};

use super::memory::DEFAULT_CAPACITY;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every write is one insert or remove: a poisoned map is still consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Each conversation's reminders in a map behind a mutex; `save` compares versions under the
/// lock, as the DynamoDB adapter's conditional write does. At most `capacity` conversations:
/// when full, a conversation with nothing pending makes room, else the write is refused.
pub struct MemoryReminderStore {
    records: Mutex<HashMap<ConversationKey, ConversationReminders>>,
    capacity: usize,
}

impl Default for MemoryReminderStore {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl MemoryReminderStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        MemoryReminderStore {
            records: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Reminders held, over every conversation.
    pub fn reminders(&self) -> usize {
        lock(&self.records)
            .values()
            .map(|record| record.reminders.len())
            .sum()
    }
}

#[async_trait]
impl ReminderStore for MemoryReminderStore {
    async fn load(&self, key: &ConversationKey) -> Result<ConversationReminders, StoreError> {
        Ok(lock(&self.records).get(key).cloned().unwrap_or_default())
    }

    async fn save(
        &self,
        key: &ConversationKey,
        record: &ConversationReminders,
    ) -> Result<bool, StoreError> {
        let mut records = lock(&self.records);
        let stored = records.get(key).map_or(0, |r| r.version);
        if stored != record.version {
            return Ok(false);
        }
        if records.len() >= self.capacity && !records.contains_key(key) {
            let now = Utc::now();
            let idle = records
                .iter()
                .find(|(_, r)| r.pending(now).is_empty())
                .map(|(k, _)| k.clone());
            match idle {
                Some(idle) => {
                    records.remove(&idle);
                }
                None => {
                    return Err(StoreError::Full(format!(
                        "{} conversations with pending reminders",
                        records.len()
                    )));
                }
            }
        }
        let mut stored = record.clone();
        stored.version += 1;
        records.insert(key.clone(), stored);
        Ok(true)
    }
}

/// The longest one sleep lasts before the wall clock is looked at again: a reminder is not
/// late by a suspended laptop or a corrected clock (tokio's timers follow the monotonic
/// clock, which stops while the machine sleeps).
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// How often, and how far apart, a failed enqueue is tried again.
const ENQUEUE_ATTEMPTS: u32 = 10;

/// An in-process [`ReminderScheduler`]: one tokio task per schedule, kept by name so that
/// `cancel` aborts it. At the due time the task enqueues the message (retrying a failing
/// queue for a while), then removes itself. Bounded: at most `capacity` schedules at once.
/// Dropping the timer aborts what is still waiting.
pub struct LocalTimer {
    queue: Arc<dyn NotificationQueue>,
    timers: Arc<Mutex<HashMap<ScheduleName, JoinHandle<()>>>>,
    capacity: usize,
}

impl LocalTimer {
    pub fn new(queue: Arc<dyn NotificationQueue>) -> Self {
        Self::with_capacity(queue, DEFAULT_CAPACITY)
    }

    pub fn with_capacity(queue: Arc<dyn NotificationQueue>, capacity: usize) -> Self {
        LocalTimer {
            queue,
            timers: Arc::new(Mutex::new(HashMap::new())),
            capacity: capacity.max(1),
        }
    }

    /// Schedules waiting to fire.
    pub fn len(&self) -> usize {
        lock(&self.timers).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_scheduled(&self, name: &ScheduleName) -> bool {
        lock(&self.timers).contains_key(name)
    }
}

impl Drop for LocalTimer {
    fn drop(&mut self) {
        for (_, timer) in lock(&self.timers).drain() {
            timer.abort();
        }
    }
}

#[async_trait]
impl ReminderScheduler for LocalTimer {
    async fn schedule(
        &self,
        name: &ScheduleName,
        at: DateTime<Utc>,
        message: &DeliveryMessage,
    ) -> Result<(), ScheduleError> {
        let mut timers = lock(&self.timers);
        timers.retain(|_, timer| !timer.is_finished());
        if timers.contains_key(name) {
            return Ok(());
        }
        if timers.len() >= self.capacity {
            return Err(ScheduleError::Full(format!(
                "{} reminders waiting in this process",
                timers.len()
            )));
        }
        let queue = self.queue.clone();
        let registry = self.timers.clone();
        let message = message.clone();
        let own_name = name.clone();
        // Spawned while the map is locked: the task's own removal waits for the insert.
        let timer = tokio::spawn(async move {
            sleep_until(at).await;
            enqueue(queue.as_ref(), &message, &own_name).await;
            lock(&registry).remove(&own_name);
        });
        timers.insert(name.clone(), timer);
        Ok(())
    }

    async fn cancel(&self, name: &ScheduleName) -> Result<(), ScheduleError> {
        if let Some(timer) = lock(&self.timers).remove(name) {
            timer.abort();
        }
        Ok(())
    }
}

/// Sleeps until the wall clock reaches `at`, in steps of at most [`MAX_SLEEP`].
async fn sleep_until(at: DateTime<Utc>) {
    loop {
        let Ok(left) = (at - Utc::now()).to_std() else {
            return;
        };
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(MAX_SLEEP)).await;
    }
}

async fn enqueue(queue: &dyn NotificationQueue, message: &DeliveryMessage, name: &ScheduleName) {
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=ENQUEUE_ATTEMPTS {
        match queue.enqueue(message).await {
            Ok(()) => {
                tracing::info!(schedule = %name, notification = %message.id, correlation_id = %message.correlation_id, "reminder due; delivery queued");
                return;
            }
            Err(error) if attempt < ENQUEUE_ATTEMPTS => {
                tracing::warn!(schedule = %name, error = %error, attempt, "could not queue a due reminder; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(error) => {
                tracing::error!(schedule = %name, notification = %message.id, error = %error, "could not queue a due reminder; it is lost");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::NotificationId;
    use crate::delivery::{QueueError, QueueMessage};

    #[derive(Default)]
    struct RecordingQueue {
        messages: Mutex<Vec<(NotificationId, std::time::Instant)>>,
    }

    #[async_trait]
    impl NotificationQueue for RecordingQueue {
        async fn send(&self, message: &QueueMessage) -> Result<(), QueueError> {
            let id = NotificationId::parse(&message.deduplication_id).expect("a notification id");
            lock(&self.messages).push((id, std::time::Instant::now()));
            Ok(())
        }
    }

    fn message(id: &str) -> DeliveryMessage {
        DeliveryMessage {
            id: NotificationId::parse(id).unwrap(),
            conversation: "c".into(),
            channel: "emulator".into(),
            tenant: None,
            correlation_id: "c0ffee".into(),
            urgent: true,
            update: false,
            slot: None,
        }
    }

    fn name(text: &str) -> ScheduleName {
        ScheduleName::parse(text).unwrap()
    }

    #[tokio::test]
    async fn a_schedule_enqueues_its_message_at_its_time_once() {
        let queue = Arc::new(RecordingQueue::default());
        let timer = LocalTimer::new(queue.clone());
        let start = std::time::Instant::now();
        let at = Utc::now() + chrono::Duration::milliseconds(300);
        timer
            .schedule(&name("rem-a"), at, &message("rem-a"))
            .await
            .unwrap();
        // The same name again changes nothing.
        timer
            .schedule(&name("rem-a"), at, &message("rem-a"))
            .await
            .unwrap();
        assert!(timer.is_scheduled(&name("rem-a")));
        tokio::time::sleep(Duration::from_millis(600)).await;
        let sent = lock(&queue.messages).clone();
        assert_eq!(sent.len(), 1, "{sent:?}");
        let waited = sent[0].1 - start;
        assert!(waited >= Duration::from_millis(280), "{waited:?}");
        assert!(timer.is_empty(), "a fired schedule leaves nothing behind");
    }

    #[tokio::test]
    async fn a_cancelled_schedule_never_fires_and_unknown_names_cancel_fine() {
        let queue = Arc::new(RecordingQueue::default());
        let timer = LocalTimer::new(queue.clone());
        let at = Utc::now() + chrono::Duration::milliseconds(200);
        timer
            .schedule(&name("rem-b"), at, &message("rem-b"))
            .await
            .unwrap();
        timer.cancel(&name("rem-b")).await.unwrap();
        timer.cancel(&name("rem-unknown")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(lock(&queue.messages).is_empty());
        assert!(timer.is_empty());
    }

    #[tokio::test]
    async fn a_past_time_fires_at_once_and_the_timer_is_bounded() {
        let queue = Arc::new(RecordingQueue::default());
        let timer = LocalTimer::with_capacity(queue.clone(), 1);
        let past = Utc::now() - chrono::Duration::seconds(5);
        timer
            .schedule(&name("rem-c"), past, &message("rem-c"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(lock(&queue.messages).len(), 1);
        let later = Utc::now() + chrono::Duration::days(365);
        timer
            .schedule(&name("rem-d"), later, &message("rem-d"))
            .await
            .unwrap();
        let full = timer
            .schedule(&name("rem-e"), later, &message("rem-e"))
            .await;
        assert!(matches!(full, Err(ScheduleError::Full(_))), "{full:?}");
    }

    #[tokio::test]
    async fn the_memory_store_compares_versions() {
        let store = MemoryReminderStore::with_capacity(1);
        let key = ConversationKey {
            channel: "emulator".into(),
            conversation: "a".into(),
        };
        let mut record = store.load(&key).await.unwrap();
        assert_eq!(record, ConversationReminders::default());
        record.next_number = 2;
        assert!(store.save(&key, &record).await.unwrap());
        assert!(!store.save(&key, &record).await.unwrap(), "stale version");
        let stored = store.load(&key).await.unwrap();
        assert_eq!((stored.version, stored.next_number), (1, 2));
        // Full of a conversation with nothing pending: it makes room.
        let other = ConversationKey {
            channel: "emulator".into(),
            conversation: "b".into(),
        };
        assert!(
            store
                .save(&other, &ConversationReminders::default())
                .await
                .unwrap()
        );
        assert_eq!(store.load(&key).await.unwrap().version, 0);
    }
}
