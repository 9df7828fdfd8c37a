//! DynamoDB item vocabulary shared by the adapters: typed, error-reporting reads of an item's
//! attributes ([`Attributes`]) and the few ways values are written (numbers, epoch
//! milliseconds, JSON strings).

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
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
