//! The completion worker: takes completions off the queue, marks the job complete and sends
//! the proactive "Job N is complete." into the job's original conversation.
//!
//! The SQS function runs [`CompletionWorker::handle_sqs_event`]; the local runner feeds it the
//! same [`SqsEvent`]s built from its in-memory queue or from SQS polling, so the code that runs
//! locally is the code that runs in Lambda.
//!
//! # Batches
//! - Records for different conversations are processed concurrently; records for one
//!   conversation in order, one at a time, with [`WorkerConfig::pacing`] between two sends so a
//!   burst stays under the channels' per-conversation rate (Teams: 7 per second).
//! - The response lists only records that failed for a retryable reason (the Connector or the
//!   store was unavailable, another delivery holds the job's lease). Once a record of a
//!   conversation fails, the later records of that conversation in the batch are failed too,
//!   unprocessed, so a retry cannot overtake them.
//! - A malformed record (not a version-1 completion) is logged with its message id and
//!   **acknowledged**, not failed: it can never become valid, and retrying it would only delay
//!   its arrival in the dead-letter queue while costing a receive each time. It is counted in
//!   [`BatchReport::malformed`] and logged at error level, which is what to alarm on.
//!
//! # Idempotency
//! Delivery is at least once. The store's conditional transition (see [`crate::jobs`]) makes
//! a duplicate a no-op: a job already Notified or Failed is acknowledged without sending.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;

use crate::connector::ConnectorClient;
use crate::jobs::{CompleteOutcome, Completion, DeliveryOutcome, JobNumber, JobStatus, JobStore};
use crate::schema::Activity;

/// Worker settings.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// How long a delivery owns a job. Shorter than the queue's visibility timeout, so a
    /// redelivery after a crash finds the lease expired and takes over.
    pub lease: Duration,
    /// Pause between two sends into the same conversation within a batch.
    pub pacing: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            lease: Duration::from_secs(60),
            pacing: Duration::from_millis(200),
        }
    }
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// The proactive message was sent and the job marked Notified.
    Notified(JobNumber),
    /// The job was already Notified or Failed: a duplicate, nothing sent.
    Duplicate(JobNumber),
    /// No such job (deleted, expired, or never existed): nothing to do.
    UnknownJob(JobNumber),
    /// Delivery is impossible (conversation gone, serviceUrl not allowed…); job marked Failed.
    DeliveryFailed(JobNumber, String),
    /// Not a completion this version understands; acknowledged.
    Malformed(String),
    /// Try again later: the record is reported as a batch item failure.
    Retry(String),
    /// Not attempted because an earlier record of the same conversation must be retried first.
    Deferred,
}

impl RecordOutcome {
    fn is_failure(&self) -> bool {
        matches!(self, RecordOutcome::Retry(_) | RecordOutcome::Deferred)
    }
}

/// Counts of one batch, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub notified: usize,
    pub duplicates: usize,
    pub unknown: usize,
    pub delivery_failed: usize,
    pub malformed: usize,
    pub retried: usize,
}

pub struct CompletionWorker {
    store: Arc<dyn JobStore>,
    connector: ConnectorClient,
    config: WorkerConfig,
}

impl CompletionWorker {
    pub fn new(store: Arc<dyn JobStore>, connector: ConnectorClient, config: WorkerConfig) -> Self {
        CompletionWorker {
            store,
            connector,
            config,
        }
    }

    /// When a failed record should come back: just after the lease it may hold has lapsed, as
    /// the queue's visibility timeout (longer than the lease) ensures in SQS.
    pub fn retry_after(&self) -> Duration {
        self.config.lease + Duration::from_secs(1)
    }

    /// The SQS function's handler: processes a batch and lists the records to retry.
    pub async fn handle_sqs_event(&self, event: SqsEvent) -> SqsBatchResponse {
        let (response, _) = self.handle_batch(&event.records).await;
        response
    }

    /// [`Self::handle_sqs_event`], also returning what became of each record.
    pub async fn handle_batch(
        &self,
        records: &[SqsMessage],
    ) -> (SqsBatchResponse, Vec<(String, RecordOutcome)>) {
        // Group by conversation, keeping arrival order within each group.
        let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; records.len()];
        let mut groups: Vec<Vec<(usize, Completion)>> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        for (index, record) in records.iter().enumerate() {
            let message_id = record.message_id.as_deref().unwrap_or_default();
            match Completion::from_body(record.body.as_deref().unwrap_or_default()) {
                Ok(mut completion) => {
                    // The attribute is what the sender logged; prefer it to the body's copy.
                    if let Some(id) = correlation_attribute(record) {
                        completion.correlation_id = id;
                    }
                    let group = *group_of
                        .entry(completion.conversation.clone())
                        .or_insert_with(|| {
                            groups.push(Vec::new());
                            groups.len() - 1
                        });
                    groups[group].push((index, completion));
                }
                Err(error) => {
                    let correlation_id = correlation_attribute(record).unwrap_or_default();
                    tracing::error!(message_id, correlation_id, error = %error, "malformed completion record acknowledged");
                    outcomes[index] = Some(RecordOutcome::Malformed(error.to_string()));
                }
            }
        }

        let results = futures_util::future::join_all(
            groups
                .into_iter()
                .map(|group| self.process_conversation(group, records)),
        )
        .await;
        for (index, outcome) in results.into_iter().flatten() {
            outcomes[index] = Some(outcome);
        }

        let mut response = SqsBatchResponse::default();
        let mut report = BatchReport::default();
        let mut listed = Vec::with_capacity(records.len());
        for (record, outcome) in records.iter().zip(outcomes) {
            let message_id = record.message_id.clone().unwrap_or_default();
            let outcome = outcome.unwrap_or(RecordOutcome::Deferred);
            match &outcome {
                RecordOutcome::Notified(_) => report.notified += 1,
                RecordOutcome::Duplicate(_) => report.duplicates += 1,
                RecordOutcome::UnknownJob(_) => report.unknown += 1,
                RecordOutcome::DeliveryFailed(..) => report.delivery_failed += 1,
                RecordOutcome::Malformed(_) => report.malformed += 1,
                RecordOutcome::Retry(_) | RecordOutcome::Deferred => report.retried += 1,
            }
            if outcome.is_failure() {
                response.add_failure(message_id.clone());
            }
            listed.push((message_id, outcome));
        }
        tracing::info!(
            records = records.len(),
            ?report,
            "completion batch processed"
        );
        (response, listed)
    }

    async fn process_conversation(
        &self,
        group: Vec<(usize, Completion)>,
        records: &[SqsMessage],
    ) -> Vec<(usize, RecordOutcome)> {
        let mut results = Vec::with_capacity(group.len());
        let mut blocked = false;
        let mut sent_before = false;
        for (index, completion) in group {
            if blocked {
                results.push((index, RecordOutcome::Deferred));
                continue;
            }
            let message_id = records[index].message_id.as_deref().unwrap_or_default();
            if sent_before && !self.config.pacing.is_zero() {
                tokio::time::sleep(self.config.pacing).await;
            }
            let outcome = self.process(message_id, &completion).await;
            sent_before |= matches!(outcome, RecordOutcome::Notified(_));
            blocked = outcome.is_failure();
            results.push((index, outcome));
        }
        results
    }

    /// One completion: the conditional transition, then the proactive message.
    pub async fn process(&self, message_id: &str, completion: &Completion) -> RecordOutcome {
        let number = completion.job;
        let span = tracing::info_span!("completion", job = %number, message_id, correlation_id = %completion.correlation_id);
        let _enter = span.enter();
        let now = Utc::now();
        let lease_until = now
            + chrono::Duration::from_std(self.config.lease)
                .unwrap_or(chrono::Duration::seconds(60));
        let job = match self
            .store
            .complete_if_running(number, now, lease_until)
            .await
        {
            Ok(CompleteOutcome::Completed(job)) => job,
            Ok(CompleteOutcome::NotFound) => {
                tracing::warn!("completion for an unknown job acknowledged");
                return RecordOutcome::UnknownJob(number);
            }
            Ok(CompleteOutcome::AlreadyComplete(job)) => {
                return match job.status {
                    JobStatus::Completing { .. } => {
                        RecordOutcome::Retry("another delivery holds this job's lease".to_owned())
                    }
                    JobStatus::Running => RecordOutcome::Retry("job still running".to_owned()),
                    JobStatus::Notified { .. } | JobStatus::Failed { .. } => {
                        tracing::info!("duplicate completion acknowledged; nothing sent");
                        RecordOutcome::Duplicate(number)
                    }
                };
            }
            Err(error) => {
                tracing::warn!(error = %error, "job store unavailable; will retry");
                return RecordOutcome::Retry(error.to_string());
            }
        };

        let message = job
            .reference
            .address(Activity::message(format!("Job {number} is complete.")));
        let delivery = match self.connector.send_to_conversation(&message).await {
            Ok(_) => DeliveryOutcome::Notified,
            Err(error) if error.is_retryable() => {
                tracing::warn!(error = %error, service_url = %job.reference.service_url, "proactive send failed; will retry");
                return RecordOutcome::Retry(error.to_string());
            }
            Err(error) => {
                tracing::error!(error = %error, service_url = %job.reference.service_url, conversation = %job.reference.conversation.id, "proactive send impossible; job marked failed");
                DeliveryOutcome::Failed {
                    reason: error.to_string(),
                }
            }
        };
        if let Err(error) = self
            .store
            .record_delivery(number, delivery.clone(), Utc::now())
            .await
        {
            // The send already happened (or is known impossible). Retrying the record would
            // send again once the lease lapses, so acknowledge; `show` says "completing" until
            // the lease lapses and a later duplicate, if any, finds it Notified.
            tracing::error!(error = %error, ?delivery, "could not record the delivery");
        }
        match delivery {
            DeliveryOutcome::Notified => {
                tracing::info!(conversation = %job.reference.conversation.id, "job completion delivered");
                RecordOutcome::Notified(number)
            }
            DeliveryOutcome::Failed { reason } => RecordOutcome::DeliveryFailed(number, reason),
        }
    }
}

/// The `correlationId` message attribute, when the record carries one.
fn correlation_attribute(record: &SqsMessage) -> Option<String> {
    record
        .message_attributes
        .get(crate::adapters::sqs::CORRELATION_ID_ATTRIBUTE)
        .and_then(|attribute| attribute.string_value.clone())
        .filter(|id| !id.is_empty())
}

/// The Lambda-shaped record the local runner builds from a queued message.
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
