//! Between the engine and a queue: applies the engine's [`Decision`]s to SQS (in Lambda, where
//! the event source mapping receives and deletes) or to any [`QueueConsumer`] (the local
//! runner, which also receives and deletes itself, as the event source mapping would).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};

use super::engine::{Decision, Delivered, DeliveryEngine, RecordResult};
use super::notification::QueueError;

/// The consumer's side of the queue: what the engine's decisions need.
///
/// Contract:
/// - `retry_in` makes a received message visible again after `delay` (whole seconds, rounded
///   up; SQS `ChangeMessageVisibility`), keeping its place in its conversation's order.
/// - `dead_letter` puts a copy of the record (body and attributes) on the dead-letter queue;
///   the caller then deletes it from the queue (the event source mapping does in Lambda).
#[async_trait]
pub trait QueueControl: Send + Sync {
    async fn retry_in(&self, receipt_handle: &str, delay: Duration) -> Result<(), QueueError>;
    async fn dead_letter(&self, record: &SqsMessage) -> Result<(), QueueError>;
}

/// A queue the local runner consumes itself, in the shape of Lambda's SQS event.
///
/// Contract: `receive` returns up to `max` messages (long-polling up to `wait` when none is
/// visible) with `messageId`, `receiptHandle`, `body` and the `ApproximateReceiveCount`
/// attribute, honouring FIFO order per message group; they stay in flight until deleted or
/// made visible again. `delete` removes a received message.
#[async_trait]
pub trait QueueConsumer: QueueControl {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<SqsMessage>, QueueError>;
    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError>;

    /// Deletes several received messages (up to 10), as the event source mapping does after
    /// a batch; adapters with a batch call use it.
    async fn delete_all(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        for receipt in receipt_handles {
            self.delete(receipt).await?;
        }
        Ok(())
    }
}

/// The delivery function's handler: delivers the batch, applies each decision, and lists the
/// records that must come back (partial batch failure), so Lambda deletes only the rest.
pub async fn handle_event(
    engine: &DeliveryEngine,
    control: &dyn QueueControl,
    event: SqsEvent,
) -> SqsBatchResponse {
    let (response, _) = handle_records(engine, control, &event.records).await;
    response
}

/// [`handle_event`], also returning what became of each record.
pub async fn handle_records(
    engine: &DeliveryEngine,
    control: &dyn QueueControl,
    records: &[SqsMessage],
) -> (SqsBatchResponse, Vec<RecordResult>) {
    let results = engine.handle_batch(records).await;
    let mut response = SqsBatchResponse::default();
    for (record, result) in records.iter().zip(&results) {
        let receipt = record.receipt_handle.as_deref().unwrap_or_default();
        let failed = match result.decision {
            Decision::Done => false,
            Decision::RetryIn(delay) => {
                if !receipt.is_empty()
                    && let Err(error) = control.retry_in(receipt, delay).await
                {
                    // It still comes back, after the queue's visibility timeout.
                    tracing::warn!(message_id = %result.message_id, error = %error, "could not set the message's visibility");
                }
                true
            }
            Decision::DeadLetter => match control.dead_letter(record).await {
                Ok(()) => false,
                Err(error) => {
                    tracing::error!(message_id = %result.message_id, error = %error, "could not move the message to the dead-letter queue; it will come back");
                    true
                }
            },
        };
        if failed {
            response.add_failure(result.message_id.clone());
        }
    }
    let count = |f: fn(&Delivered) -> bool| results.iter().filter(|r| f(&r.delivered)).count();
    tracing::info!(
        records = records.len(),
        sent = count(|d| matches!(d, Delivered::Sent | Delivered::Digested)),
        digested = count(|d| matches!(d, Delivered::Digested)),
        held = count(|d| matches!(d, Delivered::Held)),
        waiting = count(|d| matches!(d, Delivered::DigestWindow)),
        failed = count(|d| matches!(d, Delivered::Failed(_))),
        retrying = count(|d| matches!(d, Delivered::Retrying(_))),
        deferred = count(|d| matches!(
            d,
            Delivered::Deferred | Delivered::Blocked | Delivered::Busy
        )),
        gave_up = count(|d| matches!(d, Delivered::GaveUp(_))),
        duplicates = count(|d| matches!(d, Delivered::Duplicate)),
        malformed = count(|d| matches!(d, Delivered::Malformed(_))),
        "delivery batch processed"
    );
    (response, results)
}

/// The local runner's stand-in for Lambda's event source mapping: `concurrency` pollers,
/// each receiving a batch of up to 10, running the handler, and deleting what did not fail.
/// Runs until the task is aborted.
pub async fn consume(
    engine: Arc<DeliveryEngine>,
    queue: Arc<dyn QueueConsumer>,
    concurrency: usize,
) {
    let pollers = (0..concurrency.max(1)).map(|_| {
        let engine = engine.clone();
        let queue = queue.clone();
        tokio::spawn(async move { poll(&engine, queue.as_ref()).await })
    });
    futures_util::future::join_all(pollers).await;
}

async fn poll(engine: &DeliveryEngine, queue: &dyn QueueConsumer) {
    loop {
        let records = match queue.receive(10, Duration::from_secs(10)).await {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(error = %error, "receiving from the delivery queue failed");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        if records.is_empty() {
            continue;
        }
        let (response, _) = handle_records(engine, queue, &records).await;
        let done: Vec<String> = records
            .iter()
            .filter(|record| {
                let id = record.message_id.as_deref().unwrap_or_default();
                !response
                    .batch_item_failures
                    .iter()
                    .any(|f| f.item_identifier == id)
            })
            .filter_map(|record| record.receipt_handle.clone())
            .collect();
        if !done.is_empty()
            && let Err(error) = queue.delete_all(&done).await
        {
            tracing::warn!(error = %error, "could not delete processed messages");
        }
    }
}

/// A Lambda-shaped SQS record (tests, and queues that build their own records).
pub fn sqs_record(message_id: &str, body: &str) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = Some(message_id.to_owned());
    record.body = Some(body.to_owned());
    record.event_source = Some("aws:sqs".to_owned());
    record
}

/// An [`SqsEvent`] of `records`.
pub fn sqs_event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

/// A queue both ends of the engine use: producers enqueue, the consumer receives and applies
/// decisions. Every adapter (SQS, memory) is one.
pub trait DeliveryQueue: super::NotificationQueue + QueueConsumer {}

impl<T: super::NotificationQueue + QueueConsumer> DeliveryQueue for T {}
