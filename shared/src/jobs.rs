//! Jobs: the model, and the two ports the conversation and the worker use to keep them — a
//! [`JobStore`] shaped for DynamoDB's conditional writes and a [`CompletionQueue`] shaped for
//! SQS's at-least-once delivery.
//!
//! # A job's life (its [`JobStatus`])
//!
//! ```text
//!   run ──► Running ──complete_if_running──► Completing{lease} ──record_delivery──► Notified
//!                                               │   ▲                         └──► Failed{reason}
//!                                               └───┘ lease expired: a redelivered completion
//!                                                     takes it over and sends again
//! ```
//!
//! - **Running**: created by `run`; nobody has completed it.
//! - **Completing**: marked complete; the worker holding the lease (until `lease_until`) is
//!   sending the proactive message. If that worker crashes between "marked complete" and
//!   "message sent", SQS redelivers the completion after its visibility timeout (longer than
//!   the lease), the lease has expired, `complete_if_running` hands the job to the new worker
//!   and the message is sent. While the lease is live a second delivery backs off (retryable),
//!   so two concurrent deliveries do not both send.
//! - **Notified**: the message was accepted by the channel. A redelivery sends nothing.
//! - **Failed**: delivery is impossible (the conversation is gone, the bot was removed, the
//!   serviceUrl is not allowed); the reason is kept for `show`. A redelivery sends nothing.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::schema::{ChannelAccount, ConversationReference};

/// The number users type after `done`. Random, not sequential or time-based: two `run`s in
/// the same millisecond must not collide (the reference sample's bug), and the store's
/// conditional create turns the rare random collision into a retry, never an overwrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobNumber(u32);

impl JobNumber {
    /// Six digits: short enough to type, a million-wide space.
    pub const MIN: u32 = 100_000;
    pub const MAX: u32 = 999_999;

    pub fn random() -> Self {
        JobNumber(fastrand::u32(Self::MIN..=Self::MAX))
    }

    /// Any positive number a user could have been given (also ones from older schemes).
    pub fn new(value: u32) -> Option<Self> {
        (value > 0).then_some(JobNumber(value))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for JobNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a typed job number is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a job number")]
pub struct InvalidJobNumber(pub String);

impl FromStr for JobNumber {
    type Err = InvalidJobNumber;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = text.trim().trim_start_matches('#');
        digits
            .parse::<u32>()
            .ok()
            .and_then(JobNumber::new)
            .ok_or_else(|| InvalidJobNumber(text.to_owned()))
    }
}

/// Where a job is in its life; see the module doc for the transitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum JobStatus {
    Running,
    #[serde(rename_all = "camelCase")]
    Completing {
        completed_at: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        attempts: u32,
    },
    #[serde(rename_all = "camelCase")]
    Notified {
        completed_at: DateTime<Utc>,
        notified_at: DateTime<Utc>,
    },
    #[serde(rename_all = "camelCase")]
    Failed {
        completed_at: DateTime<Utc>,
        reason: String,
    },
}

impl JobStatus {
    pub fn is_running(&self) -> bool {
        matches!(self, JobStatus::Running)
    }

    pub fn completed_at(&self) -> Option<DateTime<Utc>> {
        match self {
            JobStatus::Running => None,
            JobStatus::Completing { completed_at, .. }
            | JobStatus::Notified { completed_at, .. }
            | JobStatus::Failed { completed_at, .. } => Some(*completed_at),
        }
    }

    /// The word `show` prints.
    pub fn label(&self) -> String {
        match self {
            JobStatus::Running => "running".to_owned(),
            JobStatus::Completing { .. } => "completing".to_owned(),
            JobStatus::Notified { .. } => "complete, notified".to_owned(),
            JobStatus::Failed { reason, .. } => format!("complete, notification failed: {reason}"),
        }
    }
}

/// A long-running piece of work started by `run`, holding where to report its completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub number: JobNumber,
    pub created_at: DateTime<Utc>,
    /// Who typed `run` (the reference's user, kept apart for display and auditing).
    pub requester: ChannelAccount,
    /// The conversation the completion is reported to.
    pub reference: ConversationReference,
    pub status: JobStatus,
}

impl Job {
    pub fn new_running(
        number: JobNumber,
        reference: ConversationReference,
        now: DateTime<Utc>,
    ) -> Self {
        Job {
            number,
            created_at: now,
            requester: reference.user.clone(),
            reference,
            status: JobStatus::Running,
        }
    }
}

/// The most recent jobs, and how many exist in all.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub total: usize,
}

/// What `complete_if_running` did.
#[derive(Debug, Clone, PartialEq)]
pub enum CompleteOutcome {
    /// The job was Running (or Completing with an expired lease) and is now Completing with a
    /// lease held by the caller, who must deliver the message and then `record_delivery`.
    Completed(Job),
    /// The job was already complete: Completing under someone else's live lease, Notified or
    /// Failed. The job as stored is returned so the caller can tell which.
    AlreadyComplete(Job),
    NotFound,
}

/// How a delivery ended, for `record_delivery`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Notified,
    Failed { reason: String },
}

/// Errors of the store port.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job {0} already exists")]
    Duplicate(JobNumber),
    /// The stored item cannot be read back as a job (written by something else, or corrupt).
    #[error("job {number} is stored in a form this version cannot read: {detail}")]
    Corrupt { number: String, detail: String },
    /// The backing service failed or could not be reached; retrying may succeed.
    #[error("job store unavailable: {0}")]
    Unavailable(String),
}

/// Durable job storage.
///
/// Contract, for every adapter:
/// - `create` MUST write the job only if no job with its number exists, and MUST return
///   [`StoreError::Duplicate`] otherwise — a number is never reused and a job never
///   overwritten, so callers can retry with a fresh number.
/// - `get` returns `Ok(None)` for an unknown number, never an error.
/// - `list_recent` returns at most `limit` jobs, most recently created first, and the total
///   number of jobs; it MUST NOT load every job to build the page.
/// - `complete_if_running` is one atomic conditional transition: Running → Completing, or
///   Completing with `lease_until < now` → Completing with the new lease (a crashed delivery
///   taken over; `attempts` counts takeovers). Otherwise it changes nothing and returns
///   `AlreadyComplete` with the stored job, or `NotFound`.
/// - `record_delivery` moves a Completing job to Notified or Failed, and does nothing (Ok)
///   for a job that is not Completing, so a late or repeated call cannot undo a result.
/// - Any adapter failure is [`StoreError::Unavailable`] (retryable) or
///   [`StoreError::Corrupt`] (not).
#[async_trait]
pub trait JobStore: Send + Sync {
    async fn create(&self, job: &Job) -> Result<(), StoreError>;
    async fn get(&self, number: JobNumber) -> Result<Option<Job>, StoreError>;
    async fn list_recent(&self, limit: usize) -> Result<JobPage, StoreError>;
    async fn complete_if_running(
        &self,
        number: JobNumber,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<CompleteOutcome, StoreError>;
    async fn record_delivery(
        &self,
        number: JobNumber,
        outcome: DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;
}

/// "Job N finished": the message on the completion queue.
///
/// The body is versioned JSON, `{"v":1,"kind":"jobCompleted","job":N,"conversation":"…",
/// "correlationId":"…"}`; the conversation id lets a batch be ordered per conversation
/// without reading the job first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Completion {
    pub job: JobNumber,
    #[serde(default)]
    pub conversation: String,
    #[serde(default)]
    pub correlation_id: String,
}

#[derive(Serialize, Deserialize)]
struct CompletionEnvelope {
    v: u32,
    kind: String,
    #[serde(flatten)]
    completion: Completion,
}

/// A queue message that is not a completion this version understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed completion message: {0}")]
pub struct MalformedMessage(pub String);

impl Completion {
    pub const VERSION: u32 = 1;
    pub const KIND: &'static str = "jobCompleted";

    pub fn new(job: JobNumber, conversation: impl Into<String>) -> Self {
        Completion {
            job,
            conversation: conversation.into(),
            correlation_id: new_correlation_id(),
        }
    }

    pub fn to_body(&self) -> String {
        let envelope = CompletionEnvelope {
            v: Self::VERSION,
            kind: Self::KIND.to_owned(),
            completion: self.clone(),
        };
        serde_json::to_string(&envelope).expect("a completion always serializes")
    }

    pub fn from_body(body: &str) -> Result<Self, MalformedMessage> {
        let envelope: CompletionEnvelope =
            serde_json::from_str(body).map_err(|e| MalformedMessage(e.to_string()))?;
        if envelope.v != Self::VERSION || envelope.kind != Self::KIND {
            return Err(MalformedMessage(format!(
                "unknown version/kind {}/{}",
                envelope.v, envelope.kind
            )));
        }
        Ok(envelope.completion)
    }
}

/// A short random id tying the `done` turn, the queue message and the delivery together in
/// logs.
pub fn new_correlation_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Errors of the queue port.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("delay {0:?} is longer than the queue allows (900 s)")]
    DelayTooLong(Duration),
    #[error("completion queue unavailable: {0}")]
    Unavailable(String),
}

/// The longest delay SQS accepts.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_secs(900);

/// Where completions wait for the worker.
///
/// Contract, for every adapter:
/// - `send` returns Ok only once the message is durably accepted; it becomes visible to the
///   consumer after `delay` (0–900 s; longer is [`QueueError::DelayTooLong`]).
/// - Delivery is at least once: the consumer may see a message twice, or again after a
///   crash, so it MUST be idempotent (the store's conditional transitions make it so).
#[async_trait]
pub trait CompletionQueue: Send + Sync {
    async fn send(&self, completion: &Completion, delay: Duration) -> Result<(), QueueError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_numbers_parse_from_what_users_type() {
        assert_eq!("123456".parse::<JobNumber>().unwrap().get(), 123_456);
        assert_eq!(" #42 ".parse::<JobNumber>().unwrap().get(), 42);
        assert!("abc".parse::<JobNumber>().is_err());
        assert!("0".parse::<JobNumber>().is_err());
        assert!("-5".parse::<JobNumber>().is_err());
        assert!("99999999999".parse::<JobNumber>().is_err());
    }

    #[test]
    fn random_numbers_have_six_digits() {
        for _ in 0..1000 {
            let n = JobNumber::random().get();
            assert!((100_000..=999_999).contains(&n), "{n}");
        }
    }

    #[test]
    fn completion_body_round_trips_and_is_versioned() {
        let completion = Completion::new(JobNumber::new(7).unwrap(), "a:1;messageid=2");
        let body = completion.to_body();
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["v"], 1);
        assert_eq!(value["kind"], "jobCompleted");
        assert_eq!(value["job"], 7);
        assert_eq!(Completion::from_body(&body).unwrap(), completion);
        assert!(Completion::from_body("not json").is_err());
        assert!(Completion::from_body(r#"{"v":2,"kind":"jobCompleted","job":7}"#).is_err());
        assert!(Completion::from_body(r#"{"v":1,"kind":"jobCompleted"}"#).is_err());
    }
}
