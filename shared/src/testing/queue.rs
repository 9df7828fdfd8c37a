//! A delivery queue that counts what its consumers receive: how many times, on average, a
//! notification passes through the queue (the benchmarks' "receives per recipient", and the
//! pacing tests' bound on it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::SqsMessage;

use crate::delivery::consumer::{DeliveryQueue, QueueConsumer, QueueControl};
use crate::delivery::{NotificationQueue, QueueError, QueueMessage};

/// Wraps a [`DeliveryQueue`], counting the records received (every kind: deliveries and
/// tasks) and the messages sent to it.
pub struct CountingQueue {
    inner: Arc<dyn DeliveryQueue>,
    received: AtomicUsize,
    sent: AtomicUsize,
}

impl CountingQueue {
    pub fn new(inner: Arc<dyn DeliveryQueue>) -> Arc<CountingQueue> {
        Arc::new(CountingQueue {
            inner,
            received: AtomicUsize::new(0),
            sent: AtomicUsize::new(0),
        })
    }

    /// Records handed to consumers so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    /// Messages sent to the queue so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Starts both counts again from zero.
    pub fn reset(&self) {
        self.received.store(0, Ordering::SeqCst);
        self.sent.store(0, Ordering::SeqCst);
    }
}

#[async_trait]
impl NotificationQueue for CountingQueue {
    async fn send(&self, message: &QueueMessage) -> Result<(), QueueError> {
        self.inner.send(message).await?;
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn send_many(&self, messages: &[QueueMessage]) -> Result<(), QueueError> {
        self.inner.send_many(messages).await?;
        self.sent.fetch_add(messages.len(), Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl QueueControl for CountingQueue {
    async fn retry_in(&self, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        self.inner.retry_in(receipt_handle, delay).await
    }

    async fn dead_letter(&self, record: &SqsMessage) -> Result<(), QueueError> {
        self.inner.dead_letter(record).await
    }
}

#[async_trait]
impl QueueConsumer for CountingQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<SqsMessage>, QueueError> {
        let records = self.inner.receive(max, wait).await?;
        self.received.fetch_add(records.len(), Ordering::SeqCst);
        Ok(records)
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.inner.delete(receipt_handle).await
    }

    async fn delete_all(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        self.inner.delete_all(receipt_handles).await
    }
}
