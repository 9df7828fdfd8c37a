//! The producers' side of the engine: [`Notifier`] turns "tell this conversation X" into a
//! durable notification and a queue message. Jobs use it today; reminders, the notify API and
//! broadcasts will.

use std::collections::HashMap;
use std::sync::Arc;

use super::notification::{
    Created, Notification, NotificationId, NotificationQueue, NotificationStore, QueueError,
    StoreError,
};

/// Why a notification could not be handed to the engine.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Creates notifications and queues their delivery. Built once per process.
pub struct Notifier {
    store: Arc<dyn NotificationStore>,
    queue: Arc<dyn NotificationQueue>,
}

impl Notifier {
    pub fn new(store: Arc<dyn NotificationStore>, queue: Arc<dyn NotificationQueue>) -> Self {
        Notifier { store, queue }
    }

    /// Hands `notification` to the engine: stored first (so it is never lost once this
    /// returns), then queued. Idempotent by id: the same id again returns the stored
    /// notification and sends nothing twice. A stored one still Queued is queued again — the
    /// producer is retrying after a failure between the two steps — which the queue's
    /// deduplication and the engine's claim make harmless.
    pub async fn notify(&self, notification: Notification) -> Result<Notification, NotifyError> {
        let notification = match self.store.create(&notification).await? {
            Created::New => notification,
            Created::Existing(stored) => {
                if !matches!(stored.state, super::DeliveryState::Queued) {
                    return Ok(*stored);
                }
                *stored
            }
        };
        self.queue.enqueue(&notification.message()).await?;
        tracing::info!(
            notification = %notification.id,
            source = %notification.source,
            correlation_id = %notification.correlation_id,
            conversation = %notification.target.conversation.id,
            "notification queued"
        );
        Ok(notification)
    }

    /// Hands several notifications to the engine (a notify request's recipients): each
    /// created as [`Notifier::notify`] does, `concurrency` writes at a time, then the ones to
    /// queue sent together (SQS: 10 per request). Returns how many were queued; the others
    /// existed already past Queued (a fan-out running a page again).
    pub async fn notify_many(
        &self,
        notifications: Vec<Notification>,
        concurrency: usize,
    ) -> Result<usize, NotifyError> {
        let to_queue: Vec<_> = self
            .create_many(notifications, concurrency)
            .await?
            .iter()
            .map(Notification::message)
            .collect();
        self.queue.enqueue_many(&to_queue).await?;
        Ok(to_queue.len())
    }

    /// The first half of [`Notifier::notify_many`], for a producer that queues at its own
    /// pace (a broadcast's fan-out): creates the notifications, `concurrency` writes at a
    /// time, and returns those to queue — the new ones, and those that existed still Queued.
    pub async fn create_many(
        &self,
        notifications: Vec<Notification>,
        concurrency: usize,
    ) -> Result<Vec<Notification>, NotifyError> {
        use futures_util::StreamExt;
        let created: Vec<Result<Option<Notification>, StoreError>> =
            futures_util::stream::iter(notifications.into_iter().map(|notification| async move {
                Ok(match self.store.create(&notification).await? {
                    Created::New => Some(notification),
                    Created::Existing(stored) => {
                        matches!(stored.state, super::DeliveryState::Queued).then_some(*stored)
                    }
                })
            }))
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut to_queue = Vec::with_capacity(created.len());
        for result in created {
            if let Some(notification) = result? {
                to_queue.push(notification);
            }
        }
        Ok(to_queue)
    }

    /// Queues delivery messages built by the caller (with their held slots: see
    /// [`super::limits`]) for notifications it created.
    pub async fn enqueue(&self, messages: &[super::DeliveryMessage]) -> Result<(), NotifyError> {
        self.queue.enqueue_many(messages).await?;
        Ok(())
    }

    /// The stored notifications among `ids`, by id (for `show` and status queries).
    pub async fn find(
        &self,
        ids: &[NotificationId],
    ) -> Result<HashMap<NotificationId, Notification>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self
            .store
            .get_many(ids)
            .await?
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect())
    }

    pub fn store(&self) -> &Arc<dyn NotificationStore> {
        &self.store
    }
}
