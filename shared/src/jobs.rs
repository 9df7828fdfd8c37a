//! Jobs: the model and the [`JobStore`] port the conversation keeps them in, shaped for
//! DynamoDB's conditional writes.
//!
//! The job bot is one *producer* of proactive notifications: completing a job creates a
//! notification ("Job N is complete.") and hands it to the [`crate::delivery`] engine, which
//! knows nothing about jobs. The job only remembers which notification reports it, so `show`
//! can say how that delivery went.
//!
//! # A job's life (its [`JobStatus`])
//!
//! ```text
//!   run ──► Running ──complete (conditional)──► Complete { notification }
//! ```
//!
//! `done N` creates the notification (its id is derived from the job, so a retry creates the
//! same one), enqueues it, then completes the job. A crash between those steps leaves the job
//! Running, and the next `done N` or `jobComplete` event finishes the work without sending
//! twice: the notification's id makes its creation idempotent and its delivery is claimed
//! once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::delivery::NotificationId;
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

/// Where a job is in its life; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum JobStatus {
    Running,
    #[serde(rename_all = "camelCase")]
    Complete {
        completed_at: DateTime<Utc>,
        /// The notification that reports the completion.
        notification: NotificationId,
    },
}

impl JobStatus {
    pub fn is_running(&self) -> bool {
        matches!(self, JobStatus::Running)
    }

    pub fn completed_at(&self) -> Option<DateTime<Utc>> {
        match self {
            JobStatus::Running => None,
            JobStatus::Complete { completed_at, .. } => Some(*completed_at),
        }
    }

    pub fn notification(&self) -> Option<&NotificationId> {
        match self {
            JobStatus::Running => None,
            JobStatus::Complete { notification, .. } => Some(notification),
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
    /// The id the Connector gave the bot's "Job N is running…" reply: updated in place when
    /// the job completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announcement: Option<String>,
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
            announcement: None,
        }
    }

    /// The id of the notification reporting this job's completion: derived from the job (its
    /// number and creation time, since a number may be drawn again once an old job expired),
    /// so every retry of `done` names the same notification.
    pub fn completion_notification_id(&self) -> NotificationId {
        NotificationId::parse(&format!(
            "job-{}-{}",
            self.number,
            self.created_at.timestamp_millis()
        ))
        .expect("digits and dashes form a notification id")
    }

    /// The id of the notification updating the "running" reply in place.
    pub fn announcement_update_id(&self) -> NotificationId {
        NotificationId::parse(&format!(
            "job-{}-{}-update",
            self.number,
            self.created_at.timestamp_millis()
        ))
        .expect("digits and dashes form a notification id")
    }

    /// The tenant whose `show` lists this job (`None`: channels without tenants).
    pub fn tenant(&self) -> Option<&str> {
        self.reference.tenant_id()
    }
}

/// The most recent jobs, and how many exist in all.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub total: usize,
}

/// What [`JobStore::complete`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CompleteOutcome {
    /// The job was Running and is now Complete.
    Completed(Job),
    /// The job was already complete; here it is, as stored.
    AlreadyComplete(Job),
    NotFound,
}

/// Errors of the job store port.
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
    /// The bounded in-memory store is full of running jobs.
    #[error("job store full: {0}")]
    Full(String),
}

/// Durable job storage.
///
/// Contract, for every adapter:
/// - `create` MUST write the job only if no job with its number exists, and MUST return
///   [`StoreError::Duplicate`] otherwise — a number is never reused while its job exists and a
///   job is never overwritten, so callers can retry with a fresh number.
/// - `get` returns `Ok(None)` for an unknown number, never an error.
/// - `list_recent` returns at most `limit` jobs **of `tenant`** (the tenant of the job's
///   conversation; `None`: the jobs of conversations without one), most recently created
///   first, and the total number of that tenant's jobs; it MUST NOT load every job to build
///   the page. One tenant never sees another's jobs.
/// - `announce` records the activity id of the job's "running" reply, if the job exists
///   (`Ok(false)` otherwise); it changes nothing else.
/// - `complete` is one atomic conditional transition Running → Complete (recording the
///   notification id); otherwise it changes nothing and returns `AlreadyComplete` with the
///   stored job, or `NotFound`. Complete jobs get the store's retention (TTL).
/// - Any adapter failure is [`StoreError::Unavailable`] (retryable) or
///   [`StoreError::Corrupt`] (not).
#[async_trait]
pub trait JobStore: Send + Sync {
    async fn create(&self, job: &Job) -> Result<(), StoreError>;
    async fn get(&self, number: JobNumber) -> Result<Option<Job>, StoreError>;
    async fn list_recent(&self, tenant: Option<&str>, limit: usize) -> Result<JobPage, StoreError>;
    async fn announce(&self, number: JobNumber, activity_id: &str) -> Result<bool, StoreError>;
    async fn complete(
        &self,
        number: JobNumber,
        notification: &NotificationId,
        now: DateTime<Utc>,
    ) -> Result<CompleteOutcome, StoreError>;
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
    fn the_completion_notification_is_named_after_the_job() {
        let reference = ConversationReference {
            conversation: crate::schema::ConversationAccount {
                id: "c".into(),
                ..Default::default()
            },
            service_url: "http://127.0.0.1:1/".into(),
            ..Default::default()
        };
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let job = Job::new_running(JobNumber::new(123_456).unwrap(), reference, at);
        assert_eq!(
            job.completion_notification_id().as_str(),
            "job-123456-1700000000123"
        );
    }
}
