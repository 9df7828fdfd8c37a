//! The SQS delivery queue: [`SqsQueue`] sends delivery messages to the FIFO queue
//! (`NotificationsQueue` in `template.yaml`), applies the engine's decisions to received ones
//! (visibility, dead letters), and — for the local runner, standing in for Lambda's event
//! source mapping — receives and deletes.
//!
//! A message's body is [`DeliveryMessage::to_body`] (versioned JSON); its **message group** is
//! the conversation ([`DeliveryMessage::group`]), so SQS hands one conversation's messages over
//! in order and never two at once, while other conversations proceed in parallel; its
//! **deduplication id** is the notification id, so the same notification queued twice within
//! five minutes is delivered once. The message attribute `correlationId` repeats the
//! correlation id so it can be logged before the body is parsed.
//!
//! To come back later (a `Retry-After`, a rate limit, a backoff) a received message's
//! visibility is changed (`ChangeMessageVisibility`): FIFO queues have no per-message delay,
//! and a message made invisible keeps its place at the head of its conversation. A message
//! the engine gave up on is copied to the dead-letter queue (same group and deduplication id)
//! and deleted, so `aws sqs start-message-move-task` can redrive it.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::event::sqs::{SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};

use crate::delivery::consumer::{QueueConsumer, QueueControl};
use crate::delivery::notification::{
    DeliveryMessage, MAX_VISIBILITY, NotificationQueue, QueueError, QueueMessage,
};

/// The message attribute carrying the correlation id.
pub const CORRELATION_ID_ATTRIBUTE: &str = "correlationId";

fn unavailable<E, R>(operation: &str, queue_url: &str, error: SdkError<E, R>) -> QueueError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    QueueError::Unavailable(format!(
        "SQS {operation} on {queue_url}: {}",
        DisplayErrorContext(&error)
    ))
}

/// The FIFO delivery queue and its dead-letter queue.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    dead_letter_url: String,
}

impl SqsQueue {
    pub fn new(
        client: Client,
        queue_url: impl Into<String>,
        dead_letter_url: impl Into<String>,
    ) -> Self {
        SqsQueue {
            client,
            queue_url: queue_url.into(),
            dead_letter_url: dead_letter_url.into(),
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    fn correlation(value: &str) -> Result<Option<MessageAttributeValue>, QueueError> {
        // SQS refuses empty attribute values; an absent correlation id is simply not sent.
        if value.is_empty() {
            return Ok(None);
        }
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .map(Some)
            .map_err(|e| QueueError::Unavailable(format!("building the message: {e}")))
    }
}

/// Visibility in whole seconds, rounded up so a message never comes back early, capped at
/// what SQS allows.
pub fn visibility_seconds(delay: Duration) -> i32 {
    let delay = delay.min(MAX_VISIBILITY);
    let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

#[async_trait]
impl NotificationQueue for SqsQueue {
    async fn send(&self, message: &QueueMessage) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(&message.body)
            .message_group_id(&message.group)
            .message_deduplication_id(&message.deduplication_id)
            .set_message_attributes(
                Self::correlation(&message.correlation_id)?
                    .map(|value| HashMap::from([(CORRELATION_ID_ATTRIBUTE.to_owned(), value)])),
            )
            .send()
            .await
            .map_err(|e| unavailable("SendMessage", &self.queue_url, e))?;
        Ok(())
    }

    /// SendMessageBatch, 10 per request; entries SQS refused are sent again (twice at most),
    /// then reported.
    async fn send_many(&self, messages: &[QueueMessage]) -> Result<(), QueueError> {
        for chunk in messages.chunks(10) {
            let mut pending: Vec<(usize, &QueueMessage)> = chunk.iter().enumerate().collect();
            for attempt in 1..=3 {
                let entries = pending
                    .iter()
                    .map(|(n, message)| {
                        aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                            .id(n.to_string())
                            .message_body(&message.body)
                            .message_group_id(&message.group)
                            .message_deduplication_id(&message.deduplication_id)
                            .set_message_attributes(
                                Self::correlation(&message.correlation_id)?.map(|value| {
                                    HashMap::from([(CORRELATION_ID_ATTRIBUTE.to_owned(), value)])
                                }),
                            )
                            .build()
                            .map_err(|e| {
                                QueueError::Unavailable(format!("building the batch: {e}"))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let output = self
                    .client
                    .send_message_batch()
                    .queue_url(&self.queue_url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .map_err(|e| unavailable("SendMessageBatch", &self.queue_url, e))?;
                let failed: Vec<&aws_sdk_sqs::types::BatchResultErrorEntry> =
                    output.failed().iter().collect();
                if failed.is_empty() {
                    break;
                }
                if attempt == 3 {
                    return Err(QueueError::Unavailable(format!(
                        "SQS SendMessageBatch on {}: {} of {} refused ({}: {})",
                        self.queue_url,
                        failed.len(),
                        chunk.len(),
                        failed[0].code(),
                        failed[0].message().unwrap_or_default()
                    )));
                }
                pending.retain(|(n, _)| failed.iter().any(|f| f.id() == n.to_string()));
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl QueueControl for SqsQueue {
    async fn retry_in(&self, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(visibility_seconds(delay))
            .send()
            .await
            .map_err(|e| unavailable("ChangeMessageVisibility", &self.queue_url, e))?;
        Ok(())
    }

    async fn dead_letter(&self, record: &SqsMessage) -> Result<(), QueueError> {
        let body = record.body.clone().unwrap_or_default();
        let group = record
            .attributes
            .get("MessageGroupId")
            .cloned()
            .or_else(|| DeliveryMessage::from_body(&body).ok().map(|m| m.group()))
            .unwrap_or_else(|| "dead-letters".to_owned());
        let correlation = record
            .message_attributes
            .get(CORRELATION_ID_ATTRIBUTE)
            .and_then(|a| a.string_value.clone())
            .unwrap_or_default();
        self.client
            .send_message()
            .queue_url(&self.dead_letter_url)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(record.message_id.clone().unwrap_or_default())
            .set_message_attributes(
                Self::correlation(&correlation)?
                    .map(|value| HashMap::from([(CORRELATION_ID_ATTRIBUTE.to_owned(), value)])),
            )
            .send()
            .await
            .map_err(|e| unavailable("SendMessage", &self.dead_letter_url, e))?;
        Ok(())
    }
}

#[async_trait]
impl QueueConsumer for SqsQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<SqsMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| unavailable("ReceiveMessage", &self.queue_url, e))?;
        Ok(output.messages().iter().map(to_event_message).collect())
    }

    async fn delete_all(&self, receipt_handles: &[String]) -> Result<(), QueueError> {
        for chunk in receipt_handles.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(n, receipt)| {
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(n.to_string())
                        .receipt_handle(receipt)
                        .build()
                        .map_err(|e| QueueError::Unavailable(format!("building the batch: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let output = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| unavailable("DeleteMessageBatch", &self.queue_url, e))?;
            if let Some(failed) = output.failed().first() {
                return Err(QueueError::Unavailable(format!(
                    "SQS DeleteMessageBatch on {}: {} of {} failed ({})",
                    self.queue_url,
                    output.failed().len(),
                    chunk.len(),
                    failed.code()
                )));
            }
        }
        Ok(())
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(|e| unavailable("DeleteMessage", &self.queue_url, e))?;
        Ok(())
    }
}

/// A received message as Lambda's SQS event source presents it.
fn to_event_message(message: &Message) -> SqsMessage {
    let attributes: HashMap<String, String> = message
        .attributes()
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
        .collect();
    let message_attributes: HashMap<String, SqsMessageAttribute> = message
        .message_attributes()
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.clone(), to_event_attribute(value)))
        .collect();

    // The event types are #[non_exhaustive]: built from Default, field by field.
    let mut event = SqsMessage::default();
    event.message_id = message.message_id().map(str::to_owned);
    event.receipt_handle = message.receipt_handle().map(str::to_owned);
    event.body = message.body().map(str::to_owned);
    event.md5_of_body = message.md5_of_body().map(str::to_owned);
    event.md5_of_message_attributes = message.md5_of_message_attributes().map(str::to_owned);
    event.attributes = attributes;
    event.message_attributes = message_attributes;
    event.event_source = Some("aws:sqs".to_owned());
    event
}

fn to_event_attribute(value: &MessageAttributeValue) -> SqsMessageAttribute {
    let mut attribute = SqsMessageAttribute::default();
    attribute.data_type = Some(value.data_type().to_owned());
    attribute.string_value = value.string_value().map(str::to_owned);
    attribute.binary_value = value.binary_value().map(|b| base64_data(b.as_ref()));
    attribute.string_list_values = value.string_list_values().to_vec();
    attribute.binary_list_values = value
        .binary_list_values()
        .iter()
        .map(|b| base64_data(b.as_ref()))
        .collect();
    attribute
}

fn base64_data(bytes: &[u8]) -> Base64Data {
    // #[non_exhaustive] too; it derefs to its bytes.
    let mut data = Base64Data::default();
    data.extend_from_slice(bytes);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visibility_is_whole_seconds_rounded_up_and_capped() {
        assert_eq!(visibility_seconds(Duration::ZERO), 0);
        assert_eq!(visibility_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(visibility_seconds(Duration::from_secs(1)), 1);
        assert_eq!(visibility_seconds(Duration::from_secs(10 * 86_400)), 43_140);
    }
}
