//! DynamoDB item vocabulary shared by the adapters: typed, error-reporting reads of an item's
//! attributes ([`Attributes`]), the few ways values are written (numbers, epoch
//! milliseconds, JSON strings), and [`batch_get`], BatchGetItem done right.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

pub(crate) fn number(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn string(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// An instant as whole epoch milliseconds.
pub(crate) fn millis(at: DateTime<Utc>) -> AttributeValue {
    number(at.timestamp_millis())
}

/// A value as a JSON string attribute (unknown fields of schema types survive).
pub(crate) fn json(value: &impl serde::Serialize) -> AttributeValue {
    // The schema types serialize infallibly (string keys, no custom serializers).
    AttributeValue::S(serde_json::to_string(value).expect("schema types always serialize"))
}

/// `expiresAt` (the tables' TTL, epoch seconds) for something that ended at `ended`.
pub(crate) fn expires_at(ended: DateTime<Utc>, retention: chrono::Duration) -> AttributeValue {
    number((ended + retention).timestamp())
}

/// What a failed request says: the operation, the table and the SDK's whole error chain.
pub(crate) fn failure<E, R>(operation: &str, table: &str, error: SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    format!(
        "DynamoDB {operation} on table {table}: {}",
        DisplayErrorContext(&error)
    )
}

/// What a conditional UpdateItem did: `Ok(true)` applied, `Ok(false)` its condition did not
/// hold (nothing written); any other failure goes through `unavailable`.
pub(crate) fn applied<O, R, E>(
    result: Result<O, SdkError<UpdateItemError, R>>,
    unavailable: impl FnOnce(SdkError<UpdateItemError, R>) -> E,
) -> Result<bool, E> {
    match result {
        Ok(_) => Ok(true),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok(false)
        }
        Err(error) => Err(unavailable(error)),
    }
}

/// An item, as the SDK hands it over.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// BatchGetItem's limit of keys per request.
const BATCH_GET_LIMIT: usize = 100;
/// How many times keys BatchGetItem left unprocessed (throttling, the 16 MB response limit)
/// are asked for again before giving up.
const UNPROCESSED_RETRIES: u32 = 4;

/// The items of `keys` that exist in `table` (strongly consistent reads), in any order: one
/// BatchGetItem per 100 keys; keys DynamoDB leaves unprocessed (throttling, its 16 MB
/// response limit) are asked for again, with a short backoff, a few times. The keys must be
/// distinct: BatchGetItem refuses a request that names a key twice. The error is the
/// failure's description, for the adapter's own error type.
pub(crate) async fn batch_get(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
) -> Result<Vec<Item>, String> {
    let mut found = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(BATCH_GET_LIMIT) {
        let mut pending = chunk.to_vec();
        let mut retries = 0;
        while !pending.is_empty() {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(pending))
                .consistent_read(true)
                .build()
                .expect("keys are set");
            let output = client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(|e| failure("BatchGetItem", table, e))?;
            if let Some(items) = output.responses().and_then(|tables| tables.get(table)) {
                found.extend(items.iter().cloned());
            }
            pending = output
                .unprocessed_keys()
                .and_then(|tables| tables.get(table))
                .map(|unprocessed| unprocessed.keys().to_vec())
                .unwrap_or_default();
            if !pending.is_empty() {
                if retries == UNPROCESSED_RETRIES {
                    return Err(format!(
                        "DynamoDB BatchGetItem on table {table} left {} keys unprocessed after \
                         {retries} retries",
                        pending.len()
                    ));
                }
                retries += 1;
                tokio::time::sleep(Duration::from_millis(50 << retries)).await;
            }
        }
    }
    Ok(found)
}

/// Typed, error-reporting access to an item's attributes; the error says which attribute and
/// why, for a `Corrupt` store error.
pub(crate) struct Attributes<'a>(pub(crate) &'a HashMap<String, AttributeValue>);

impl Attributes<'_> {
    pub(crate) fn string(&self, name: &str) -> Result<&str, String> {
        match self.0.get(name) {
            Some(AttributeValue::S(value)) => Ok(value),
            Some(other) => Err(format!("{name} is not a string: {other:?}")),
            None => Err(format!("{name} is missing")),
        }
    }

    pub(crate) fn optional_string(&self, name: &str) -> Result<Option<String>, String> {
        match self.0.get(name) {
            None => Ok(None),
            Some(_) => self.string(name).map(|s| Some(s.to_owned())),
        }
    }

    pub(crate) fn number<T: FromStr>(&self, name: &str) -> Result<T, String> {
        match self.0.get(name) {
            Some(AttributeValue::N(value)) => value
                .parse()
                .map_err(|_| format!("{name} is not a valid number: {value:?}")),
            Some(other) => Err(format!("{name} is not a number: {other:?}")),
            None => Err(format!("{name} is missing")),
        }
    }

    pub(crate) fn millis(&self, name: &str) -> Result<DateTime<Utc>, String> {
        let value: i64 = self.number(name)?;
        DateTime::from_timestamp_millis(value).ok_or_else(|| format!("{name} is out of range"))
    }

    pub(crate) fn json<T: DeserializeOwned>(&self, name: &str) -> Result<T, String> {
        serde_json::from_str(self.string(name)?).map_err(|e| format!("{name} is not valid: {e}"))
    }
}
