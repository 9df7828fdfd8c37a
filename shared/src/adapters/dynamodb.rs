//! The DynamoDB [`JobStore`]: one item per job in the table `template.yaml` defines
//! (`JobsTable`), every transition a single conditional write.
//!
//! # Table layout
//!
//! | attribute       | type | meaning                                                        |
//! |-----------------|------|----------------------------------------------------------------|
//! | `jobNumber`     | N    | partition key                                                  |
//! | `listKey`       | S    | `job#<tenant>`, or `job` without a tenant: the partition key of the `byCreatedAt` index (one tenant's `show` reads only its own) |
//! | `createdAt`     | N    | epoch milliseconds: the sort key of the `byCreatedAt` index    |
//! | `state`         | S    | `running` \| `complete`                                      |
//! | `completedAt`   | N    | epoch ms, once complete                                        |
//! | `notificationId`| S    | once complete: the notification reporting it (delivery table)  |
//! | `reference`     | S    | the conversation reference as JSON (unknown fields survive)    |
//! | `requester`     | S    | the requesting user's ChannelAccount as JSON                   |
//! | `announcement`  | S    | the activity id of the "running" reply, once known             |
//! | `expiresAt`     | N    | epoch **seconds**: the table's TTL, set only when a job completes |
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
//!   [`StoreError::Duplicate`], never an overwrite); `complete` is one UpdateItem conditional
//!   on `running` that asks for the stored item on failure
//!   (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), so deciding between Completed,
//!   AlreadyComplete and NotFound never needs a second read.
//! - **Delivery lives elsewhere.** How the completion's notification is doing is the delivery
//!   engine's record (its own table); the job keeps only the notification's id.
//! - **Retention.** Complete jobs get `expiresAt` = completion + retention and DynamoDB's TTL
//!   deletes them; running jobs never expire.
//!
//! Times are stored in whole milliseconds, so a job read back has its instants truncated to
//! the millisecond.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure, Select,
};
use chrono::{DateTime, Utc};

use super::item::{Attributes, applied, json, millis, number};
use crate::delivery::NotificationId;
use crate::jobs::{CompleteOutcome, Job, JobNumber, JobPage, JobStatus, JobStore, StoreError};

/// Attribute names, the index name and the state words: the item's vocabulary, in one place.
mod attr {
    pub const JOB_NUMBER: &str = "jobNumber";
    pub const LIST_KEY: &str = "listKey";
    pub const CREATED_AT: &str = "createdAt";
    pub const STATE: &str = "state";
    pub const COMPLETED_AT: &str = "completedAt";
    pub const NOTIFICATION_ID: &str = "notificationId";
    pub const REFERENCE: &str = "reference";
    pub const REQUESTER: &str = "requester";
    pub const EXPIRES_AT: &str = "expiresAt";
    pub const ANNOUNCEMENT: &str = "announcement";

    /// The `listKey` of jobs without a tenant, and the prefix of the others'.
    pub const LIST_KEY_VALUE: &str = "job";
    pub const BY_CREATED_AT: &str = "byCreatedAt";

    pub const RUNNING: &str = "running";
    pub const COMPLETE: &str = "complete";
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
        super::item::expires_at(finished, self.retention)
    }

    fn unavailable<E, R>(&self, operation: &str, error: SdkError<E, R>) -> StoreError
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        StoreError::Unavailable(super::item::failure(operation, &self.table_name, error))
    }
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
            AttributeValue::S(list_key(job.tenant())),
        ),
        (attr::CREATED_AT.to_owned(), millis(job.created_at)),
        (attr::REFERENCE.to_owned(), json(&job.reference)),
        (attr::REQUESTER.to_owned(), json(&job.requester)),
    ]);
    let state = match &job.status {
        JobStatus::Running => attr::RUNNING,
        JobStatus::Complete {
            completed_at,
            notification,
        } => {
            item.insert(attr::COMPLETED_AT.to_owned(), millis(*completed_at));
            item.insert(
                attr::NOTIFICATION_ID.to_owned(),
                AttributeValue::S(notification.to_string()),
            );
            attr::COMPLETE
        }
    };
    item.insert(attr::STATE.to_owned(), AttributeValue::S(state.to_owned()));
    if let Some(activity_id) = &job.announcement {
        item.insert(
            attr::ANNOUNCEMENT.to_owned(),
            AttributeValue::S(activity_id.clone()),
        );
    }
    item
}

/// The `byCreatedAt` partition of a tenant's jobs.
fn list_key(tenant: Option<&str>) -> String {
    match tenant {
        Some(tenant) => format!("{}#{tenant}", attr::LIST_KEY_VALUE),
        None => attr::LIST_KEY_VALUE.to_owned(),
    }
}

/// Reads a job from its item.
trait JobItem {
    fn job(&self) -> Result<Job, String>;
}

impl JobItem for Attributes<'_> {
    fn job(&self) -> Result<Job, String> {
        let number = JobNumber::new(self.number(attr::JOB_NUMBER)?)
            .ok_or_else(|| format!("{} is 0", attr::JOB_NUMBER))?;
        let status = match self.string(attr::STATE)? {
            attr::RUNNING => JobStatus::Running,
            attr::COMPLETE => JobStatus::Complete {
                completed_at: self.millis(attr::COMPLETED_AT)?,
                notification: NotificationId::parse(self.string(attr::NOTIFICATION_ID)?)
                    .map_err(|e| format!("{}: {e}", attr::NOTIFICATION_ID))?,
            },
            other => return Err(format!("unknown {} {other:?}", attr::STATE)),
        };
        Ok(Job {
            number,
            created_at: self.millis(attr::CREATED_AT)?,
            requester: self.json(attr::REQUESTER)?,
            reference: self.json(attr::REFERENCE)?,
            status,
            announcement: self.optional_string(attr::ANNOUNCEMENT)?,
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
        if let JobStatus::Complete { completed_at, .. } = &job.status {
            item.insert(attr::EXPIRES_AT.to_owned(), self.expires_at(*completed_at));
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
    async fn list_recent(&self, tenant: Option<&str>, limit: usize) -> Result<JobPage, StoreError> {
        let list_key = AttributeValue::S(list_key(tenant));
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

    async fn announce(&self, number: JobNumber, activity_id: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(key(number)))
            .condition_expression("attribute_exists(#number)")
            .update_expression("SET #announcement = :id")
            .expression_attribute_names("#number", attr::JOB_NUMBER)
            .expression_attribute_names("#announcement", attr::ANNOUNCEMENT)
            .expression_attribute_values(":id", AttributeValue::S(activity_id.to_owned()))
            .send()
            .await;
        applied(result, |e| self.unavailable("UpdateItem", e))
    }

    async fn complete(
        &self,
        number: JobNumber,
        notification: &NotificationId,
        now: DateTime<Utc>,
    ) -> Result<CompleteOutcome, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(key(number)))
            .update_expression(
                "SET #state = :complete, #completedAt = :now, #notificationId = :notification, \
                     #expiresAt = :expiresAt",
            )
            .condition_expression("attribute_exists(#number) AND #state = :running")
            .expression_attribute_names("#number", attr::JOB_NUMBER)
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#completedAt", attr::COMPLETED_AT)
            .expression_attribute_names("#notificationId", attr::NOTIFICATION_ID)
            .expression_attribute_names("#expiresAt", attr::EXPIRES_AT)
            .expression_attribute_values(":running", AttributeValue::S(attr::RUNNING.to_owned()))
            .expression_attribute_values(":complete", AttributeValue::S(attr::COMPLETE.to_owned()))
            .expression_attribute_values(":now", millis(now))
            .expression_attribute_values(
                ":notification",
                AttributeValue::S(notification.to_string()),
            )
            .expression_attribute_values(":expiresAt", self.expires_at(now))
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
}
