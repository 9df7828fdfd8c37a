//! The DynamoDB [`JobStore`]: one item per job in the table `template.yaml` defines
//! (`JobsTable`), every transition a single conditional write.
//!
//! # Table layout
//!
//! | attribute       | type | meaning                                                        |
//! |-----------------|------|----------------------------------------------------------------|
//! | `jobNumber`     | N    | partition key                                                  |
//! | `listKey`       | S    | always `"job"`: the partition key of the `byCreatedAt` index   |
//! | `createdAt`     | N    | epoch milliseconds: the sort key of the `byCreatedAt` index    |
//! | `state`         | S    | `running` \| `completing` \| `notified` \| `failed`            |
//! | `completedAt`   | N    | epoch ms, once completed (kept across lease takeovers)         |
//! | `leaseUntil`    | N    | epoch ms, while `completing`: the deliverer's lease            |
//! | `attempts`      | N    | how many workers took the delivery (1 + takeovers)             |
//! | `notifiedAt`    | N    | epoch ms, once `notified`                                      |
//! | `failureReason` | S    | once `failed`                                                  |
//! | `reference`     | S    | the conversation reference as JSON (unknown fields survive)    |
//! | `requester`     | S    | the requesting user's ChannelAccount as JSON                   |
//! | `expiresAt`     | N    | epoch **seconds**: the table's TTL, set only when a job finishes |
//!
//! # Why this shape
//!
//! - **Bounded listing.** `list` must not read every job. The global secondary index
//!   `byCreatedAt` (hash `listKey`, range `createdAt`, projection ALL) lets one Query with
//!   `ScanIndexForward=false` and `Limit=n` return the n most recent jobs, and a `Select=COUNT`
//!   Query over the same index counts them without returning them — never a Scan. A single
//!   constant `listKey` is one hot partition, which is fine for a bot's handful of jobs per
//!   second; a busier table would shard it (`job#0`..`job#k`) and merge. The index is
//!   eventually consistent: a job created a moment ago may be missing from `list`.
//! - **Conditional writes.** Every transition is one request whose condition is the contract:
//!   `create` is `attribute_not_exists(jobNumber)` (a random-number collision is a
//!   [`StoreError::Duplicate`], never an overwrite); `complete_if_running` is one UpdateItem
//!   conditional on `running`, or `completing` with an expired lease, and asks for the stored
//!   item on failure (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), so deciding between
//!   Completed, AlreadyComplete and NotFound never needs a second read; `record_delivery` is
//!   conditional on `completing`. A completion therefore costs two requests.
//! - **Retention.** Finished jobs (notified or failed) get `expiresAt` = finish + retention and
//!   DynamoDB's TTL deletes them; running jobs never expire.
//!
//! Times are stored in whole milliseconds, so a job read back has its instants truncated to
//! the millisecond.

use std::collections::HashMap;
use std::str::FromStr;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure, Select,
};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use crate::jobs::{
    CompleteOutcome, DeliveryOutcome, Job, JobNumber, JobPage, JobStatus, JobStore, StoreError,
};

/// Attribute names, the index name and the state words: the item's vocabulary, in one place.
mod attr {
    pub const JOB_NUMBER: &str = "jobNumber";
    pub const LIST_KEY: &str = "listKey";
    pub const CREATED_AT: &str = "createdAt";
    pub const STATE: &str = "state";
    pub const COMPLETED_AT: &str = "completedAt";
    pub const LEASE_UNTIL: &str = "leaseUntil";
    pub const ATTEMPTS: &str = "attempts";
    pub const NOTIFIED_AT: &str = "notifiedAt";
    pub const FAILURE_REASON: &str = "failureReason";
    pub const REFERENCE: &str = "reference";
    pub const REQUESTER: &str = "requester";
    pub const EXPIRES_AT: &str = "expiresAt";

    /// The `listKey` of every job.
    pub const LIST_KEY_VALUE: &str = "job";
    pub const BY_CREATED_AT: &str = "byCreatedAt";

    pub const RUNNING: &str = "running";
    pub const COMPLETING: &str = "completing";
    pub const NOTIFIED: &str = "notified";
    pub const FAILED: &str = "failed";
}

/// Jobs in a DynamoDB table shaped as the module doc describes.
#[derive(Clone, Debug)]
pub struct DynamoJobStore {
    client: Client,
    table_name: String,
    retention: chrono::Duration,
}

impl DynamoJobStore {
    /// How long a finished job is kept before the table's TTL deletes it.
    pub const DEFAULT_RETENTION: chrono::Duration = chrono::Duration::days(30);

    pub fn new(client: Client, table_name: impl Into<String>, retention: chrono::Duration) -> Self {
        DynamoJobStore {
            client,
            table_name: table_name.into(),
            retention,
        }
    }

    pub fn table_name(&self) -> &str {
        &self.table_name
    }

    /// `expiresAt` for a job that finished at `finished`.
    fn expires_at(&self, finished: DateTime<Utc>) -> AttributeValue {
        number((finished + self.retention).timestamp())
    }

    fn unavailable<E, R>(&self, operation: &str, error: SdkError<E, R>) -> StoreError
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        StoreError::Unavailable(format!(
            "DynamoDB {operation} on table {}: {}",
            self.table_name,
            DisplayErrorContext(&error)
        ))
    }
}

fn number(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn millis(at: DateTime<Utc>) -> AttributeValue {
    number(at.timestamp_millis())
}

fn json(value: &impl serde::Serialize) -> AttributeValue {
    // The schema types serialize infallibly (string keys, no custom serializers).
    AttributeValue::S(serde_json::to_string(value).expect("schema types always serialize"))
}

fn key(number: JobNumber) -> HashMap<String, AttributeValue> {
    HashMap::from([(attr::JOB_NUMBER.to_owned(), self::number(number.get()))])
}

/// The item of `job` (without `expiresAt`, which is the store's retention policy, not part of
/// the job).
fn to_item(job: &Job) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        (attr::JOB_NUMBER.to_owned(), number(job.number.get())),
        (
            attr::LIST_KEY.to_owned(),
            AttributeValue::S(attr::LIST_KEY_VALUE.to_owned()),
        ),
        (attr::CREATED_AT.to_owned(), millis(job.created_at)),
        (attr::REFERENCE.to_owned(), json(&job.reference)),
        (attr::REQUESTER.to_owned(), json(&job.requester)),
    ]);
    let state = match &job.status {
        JobStatus::Running => attr::RUNNING,
        JobStatus::Completing {
            completed_at,
            lease_until,
            attempts,
        } => {
            item.insert(attr::COMPLETED_AT.to_owned(), millis(*completed_at));
            item.insert(attr::LEASE_UNTIL.to_owned(), millis(*lease_until));
            item.insert(attr::ATTEMPTS.to_owned(), number(attempts));
            attr::COMPLETING
        }
        JobStatus::Notified {
            completed_at,
            notified_at,
        } => {
            item.insert(attr::COMPLETED_AT.to_owned(), millis(*completed_at));
            item.insert(attr::NOTIFIED_AT.to_owned(), millis(*notified_at));
            attr::NOTIFIED
        }
        JobStatus::Failed {
            completed_at,
            reason,
        } => {
            item.insert(attr::COMPLETED_AT.to_owned(), millis(*completed_at));
            item.insert(
                attr::FAILURE_REASON.to_owned(),
                AttributeValue::S(reason.clone()),
            );
            attr::FAILED
        }
    };
    item.insert(attr::STATE.to_owned(), AttributeValue::S(state.to_owned()));
    item
}

/// Typed, error-reporting access to an item's attributes.
struct Attributes<'a>(&'a HashMap<String, AttributeValue>);

impl Attributes<'_> {
    fn string(&self, name: &str) -> Result<&str, String> {
        match self.0.get(name) {
            Some(AttributeValue::S(value)) => Ok(value),
            Some(other) => Err(format!("{name} is not a string: {other:?}")),
            None => Err(format!("{name} is missing")),
        }
    }

    fn number<T: FromStr>(&self, name: &str) -> Result<T, String> {
        match self.0.get(name) {
            Some(AttributeValue::N(value)) => value
                .parse()
                .map_err(|_| format!("{name} is not a valid number: {value:?}")),
            Some(other) => Err(format!("{name} is not a number: {other:?}")),
            None => Err(format!("{name} is missing")),
        }
    }

    fn millis(&self, name: &str) -> Result<DateTime<Utc>, String> {
        let value: i64 = self.number(name)?;
        DateTime::from_timestamp_millis(value).ok_or_else(|| format!("{name} is out of range"))
    }

    fn json<T: DeserializeOwned>(&self, name: &str) -> Result<T, String> {
        serde_json::from_str(self.string(name)?).map_err(|e| format!("{name} is not valid: {e}"))
    }

    fn job(&self) -> Result<Job, String> {
        let number = JobNumber::new(self.number(attr::JOB_NUMBER)?)
            .ok_or_else(|| format!("{} is 0", attr::JOB_NUMBER))?;
        let status = match self.string(attr::STATE)? {
            attr::RUNNING => JobStatus::Running,
            attr::COMPLETING => JobStatus::Completing {
                completed_at: self.millis(attr::COMPLETED_AT)?,
                lease_until: self.millis(attr::LEASE_UNTIL)?,
                attempts: self.number(attr::ATTEMPTS)?,
            },
            attr::NOTIFIED => JobStatus::Notified {
                completed_at: self.millis(attr::COMPLETED_AT)?,
                notified_at: self.millis(attr::NOTIFIED_AT)?,
            },
            attr::FAILED => JobStatus::Failed {
                completed_at: self.millis(attr::COMPLETED_AT)?,
                reason: self.string(attr::FAILURE_REASON)?.to_owned(),
            },
            other => return Err(format!("unknown {} {other:?}", attr::STATE)),
        };
        Ok(Job {
            number,
            created_at: self.millis(attr::CREATED_AT)?,
            requester: self.json(attr::REQUESTER)?,
            reference: self.json(attr::REFERENCE)?,
            status,
        })
    }
}

impl TryFrom<&HashMap<String, AttributeValue>> for Job {
    type Error = StoreError;

    fn try_from(item: &HashMap<String, AttributeValue>) -> Result<Self, Self::Error> {
        Attributes(item)
            .job()
            .map_err(|detail| StoreError::Corrupt {
                number: match item.get(attr::JOB_NUMBER) {
                    Some(AttributeValue::N(n)) => n.clone(),
                    Some(other) => format!("{other:?}"),
                    None => "(no jobNumber)".to_owned(),
                },
                detail,
            })
    }
}

#[async_trait]
impl JobStore for DynamoJobStore {
    async fn create(&self, job: &Job) -> Result<(), StoreError> {
        let mut item = to_item(job);
        let finished = match &job.status {
            JobStatus::Notified { notified_at, .. } => Some(*notified_at),
            JobStatus::Failed { completed_at, .. } => Some(*completed_at),
            JobStatus::Running | JobStatus::Completing { .. } => None,
        };
        if let Some(finished) = finished {
            item.insert(attr::EXPIRES_AT.to_owned(), self.expires_at(finished));
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.table_name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#number)")
            .expression_attribute_names("#number", attr::JOB_NUMBER)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Duplicate(job.number))
            }
            Err(error) => Err(self.unavailable("PutItem", error)),
        }
    }

    async fn get(&self, number: JobNumber) -> Result<Option<Job>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .set_key(Some(key(number)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.unavailable("GetItem", e))?;
        output.item().map(Job::try_from).transpose()
    }

    /// One Query for the page (more only if DynamoDB's 1 MB page limit cuts it short) and one
    /// `Select=COUNT` Query per 1 MB of jobs for the total. An item that cannot be read as a
    /// job is left out of the page (and logged) rather than making every `list` fail; `get`
    /// reports it as [`StoreError::Corrupt`].
    async fn list_recent(&self, limit: usize) -> Result<JobPage, StoreError> {
        let list_key = AttributeValue::S(attr::LIST_KEY_VALUE.to_owned());
        let query = || {
            self.client
                .query()
                .table_name(&self.table_name)
                .index_name(attr::BY_CREATED_AT)
                .key_condition_expression("#listKey = :listKey")
                .expression_attribute_names("#listKey", attr::LIST_KEY)
                .expression_attribute_values(":listKey", list_key.clone())
        };

        let mut jobs = Vec::new();
        let mut start = None;
        while jobs.len() < limit {
            let want = i32::try_from(limit - jobs.len()).unwrap_or(i32::MAX);
            let output = query()
                .scan_index_forward(false)
                .limit(want)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.unavailable("Query", e))?;
            for item in output.items() {
                match Job::try_from(item) {
                    Ok(job) => jobs.push(job),
                    Err(error) => tracing::warn!(%error, "skipping an unreadable job in list"),
                }
            }
            start = output.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        jobs.truncate(limit);

        let mut total = 0usize;
        let mut start = None;
        loop {
            let output = query()
                .select(Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.unavailable("Query (count)", e))?;
            total += usize::try_from(output.count()).unwrap_or(0);
            start = output.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        Ok(JobPage { jobs, total })
    }

    async fn complete_if_running(
        &self,
        number: JobNumber,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<CompleteOutcome, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(key(number)))
            .update_expression(
                "SET #state = :completing, \
                     #completedAt = if_not_exists(#completedAt, :now), \
                     #leaseUntil = :leaseUntil, \
                     #attempts = if_not_exists(#attempts, :zero) + :one",
            )
            .condition_expression(
                "attribute_exists(#number) AND \
                 (#state = :running OR (#state = :completing AND #leaseUntil < :now))",
            )
            .expression_attribute_names("#number", attr::JOB_NUMBER)
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#completedAt", attr::COMPLETED_AT)
            .expression_attribute_names("#leaseUntil", attr::LEASE_UNTIL)
            .expression_attribute_names("#attempts", attr::ATTEMPTS)
            .expression_attribute_values(":running", AttributeValue::S(attr::RUNNING.to_owned()))
            .expression_attribute_values(
                ":completing",
                AttributeValue::S(attr::COMPLETING.to_owned()),
            )
            .expression_attribute_values(":now", millis(now))
            .expression_attribute_values(":leaseUntil", millis(lease_until))
            .expression_attribute_values(":zero", self::number(0))
            .expression_attribute_values(":one", self::number(1))
            .return_values(ReturnValue::AllNew)
            // The stored item comes back with the refusal, so telling AlreadyComplete from
            // NotFound needs no second read (moto honours this too).
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => match output.attributes() {
                Some(item) => Job::try_from(item).map(CompleteOutcome::Completed),
                None => Err(StoreError::Unavailable(format!(
                    "DynamoDB UpdateItem on table {} returned no attributes for job {number}",
                    self.table_name
                ))),
            },
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(refusal)) => {
                    match refusal.item() {
                        Some(item) => Job::try_from(item).map(CompleteOutcome::AlreadyComplete),
                        None => Ok(CompleteOutcome::NotFound),
                    }
                }
                _ => Err(self.unavailable("UpdateItem", error)),
            },
        }
    }

    async fn record_delivery(
        &self,
        number: JobNumber,
        outcome: DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(key(number)))
            .condition_expression("#state = :completing")
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#leaseUntil", attr::LEASE_UNTIL)
            .expression_attribute_names("#expiresAt", attr::EXPIRES_AT)
            .expression_attribute_values(
                ":completing",
                AttributeValue::S(attr::COMPLETING.to_owned()),
            )
            .expression_attribute_values(":expiresAt", self.expires_at(now));
        let request = match outcome {
            DeliveryOutcome::Notified => request
                .update_expression(
                    "SET #state = :notified, #notifiedAt = :now, #expiresAt = :expiresAt \
                     REMOVE #leaseUntil",
                )
                .expression_attribute_names("#notifiedAt", attr::NOTIFIED_AT)
                .expression_attribute_values(
                    ":notified",
                    AttributeValue::S(attr::NOTIFIED.to_owned()),
                )
                .expression_attribute_values(":now", millis(now)),
            DeliveryOutcome::Failed { reason } => request
                .update_expression(
                    "SET #state = :failed, #failureReason = :reason, #expiresAt = :expiresAt \
                     REMOVE #leaseUntil",
                )
                .expression_attribute_names("#failureReason", attr::FAILURE_REASON)
                .expression_attribute_values(":failed", AttributeValue::S(attr::FAILED.to_owned()))
                .expression_attribute_values(":reason", AttributeValue::S(reason)),
        };
        match request.send().await {
            Ok(_) => Ok(()),
            // Not Completing (already Notified or Failed, or unknown): a late or repeated
            // report must not undo a result.
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(error) => Err(self.unavailable("UpdateItem", error)),
        }
    }
}
