//! The SQS [`CompletionQueue`], and [`SqsPoller`], the local runner's stand-in for Lambda's
//! SQS event source.
//!
//! A completion is one message on `CompletionsQueue` (see `template.yaml`): the body is
//! [`Completion::to_body`] (versioned JSON), the message attribute `correlationId` repeats the
//! correlation id so it can be logged before the body is parsed, and the delay before the
//! worker sees it is SQS's per-message `DelaySeconds` (0–900 s; longer is refused here,
//! without a request). SQS delivers at least once — after a crash, after the visibility
//! timeout, or twice by itself — which the worker tolerates through the store's conditional
//! transitions; after `maxReceiveCount` receives the message goes to the dead-letter queue.
//!
//! [`SqsPoller`] receives messages and hands them over in the very shape Lambda's event source
//! would ([`SqsMessage`]), so the local runner runs the SQS function's handler unchanged, then
//! deletes what the handler processed (as the event source does for a successful batch).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::event::sqs::{SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};

use crate::jobs::{Completion, CompletionQueue, MAX_QUEUE_DELAY, QueueError};

/// The message attribute carrying [`Completion::correlation_id`].
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

/// Sends completions to an SQS queue.
#[derive(Clone, Debug)]
pub struct SqsCompletionQueue {
    client: Client,
    queue_url: String,
}

impl SqsCompletionQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsCompletionQueue {
            client,
            queue_url: queue_url.into(),
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

/// SQS counts delays in whole seconds; a fraction is rounded up so a message never becomes
/// visible before its delay.
fn delay_seconds(delay: Duration) -> Result<i32, QueueError> {
    if delay > MAX_QUEUE_DELAY {
        return Err(QueueError::DelayTooLong(delay));
    }
    let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    // ≤ 900 after the check above.
    Ok(i32::try_from(seconds).unwrap_or(i32::MAX))
}

#[async_trait]
impl CompletionQueue for SqsCompletionQueue {
    async fn send(&self, completion: &Completion, delay: Duration) -> Result<(), QueueError> {
        let delay_seconds = delay_seconds(delay)?;
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(completion.to_body())
            .delay_seconds(delay_seconds);
        // SQS refuses empty attribute values; an absent correlation id is simply not sent.
        if !completion.correlation_id.is_empty() {
            let attribute = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(&completion.correlation_id)
                .build()
                .map_err(|e| QueueError::Unavailable(format!("building the message: {e}")))?;
            request = request.message_attributes(CORRELATION_ID_ATTRIBUTE, attribute);
        }
        request
            .send()
            .await
            .map_err(|e| unavailable("SendMessage", &self.queue_url, e))?;
        Ok(())
    }
}

/// Receives and deletes messages of an SQS queue for an in-process consumer (the local
/// runner), in the shape of the Lambda SQS event.
#[derive(Clone, Debug)]
pub struct SqsPoller {
    client: Client,
    queue_url: String,
}

impl SqsPoller {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsPoller {
            client,
            queue_url: queue_url.into(),
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Up to `max` (1–10) messages, long-polling for up to `wait_seconds` (0–20) when none is
    /// visible. The messages stay in flight for the queue's visibility timeout: delete each
    /// one processed, or it comes back (with a higher `ApproximateReceiveCount`).
    pub async fn receive(
        &self,
        max: i32,
        wait_seconds: i32,
    ) -> Result<Vec<SqsMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait_seconds.clamp(0, 20))
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| unavailable("ReceiveMessage", &self.queue_url, e))?;
        Ok(output.messages().iter().map(to_event_message).collect())
    }

    /// Deletes a received message (its processing succeeded).
    pub async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
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
    fn delays_are_whole_seconds_rounded_up_and_at_most_900() {
        assert_eq!(delay_seconds(Duration::ZERO).ok(), Some(0));
        assert_eq!(delay_seconds(Duration::from_millis(1500)).ok(), Some(2));
        assert_eq!(delay_seconds(Duration::from_secs(900)).ok(), Some(900));
        assert!(matches!(
            delay_seconds(Duration::from_secs(901)),
            Err(QueueError::DelayTooLong(_))
        ));
        assert!(matches!(
            delay_seconds(Duration::from_millis(900_001)),
            Err(QueueError::DelayTooLong(_))
        ));
    }
}
