//! The DynamoDB [`ReminderStore`]: one item per conversation in the delivery table
//! (`DeliveryTable`, see [`super::dynamodb_delivery`] for its layout), written with a version
//! condition.
//!
//! | attribute    | type | meaning                                                             |
//! |--------------|------|---------------------------------------------------------------------|
//! | `pk`         | S    | `rem#<channel id>#<conversation id>`                                |
//! | `reminders`  | S    | the conversation's pending and recently due reminders, a JSON array |
//! | `nextNumber` | N    | the number the next reminder gets                                   |
//! | `version`    | N    | how many times the item was written (the condition of every write)  |
//! | `expiresAt`  | N    | epoch seconds, the TTL: a week after its last reminder is due       |
//!
//! One item a conversation, not one a reminder: `reminders` and the next number are read in
//! one `GetItem` and changed in one conditional `PutItem`, with no index and no query; the
//! service bounds the list (50 pending, 100 kept), so the item stays far below DynamoDB's
//! 400 KB.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;

use super::item::{Attributes, json, number, string};
use crate::delivery::StoreError;
use crate::reminders::{ConversationKey, ConversationReminders, ReminderStore};

mod attr {
    pub const PK: &str = "pk";
    pub const PREFIX: &str = "rem#";
    pub const REMINDERS: &str = "reminders";
    pub const NEXT_NUMBER: &str = "nextNumber";
    pub const VERSION: &str = "version";
    pub const EXPIRES_AT: &str = "expiresAt";
}

/// How long a conversation's item outlives its last reminder.
const KEEP: chrono::Duration = chrono::Duration::days(7);

/// Each conversation's reminders in the delivery table.
#[derive(Debug, Clone)]
pub struct DynamoReminderStore {
    client: Client,
    table_name: String,
}

impl DynamoReminderStore {
    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        DynamoReminderStore {
            client,
            table_name: table_name.into(),
        }
    }

    fn key(&self, key: &ConversationKey) -> HashMap<String, AttributeValue> {
        HashMap::from([(
            attr::PK.to_owned(),
            string(format!("{}{key}", attr::PREFIX)),
        )])
    }

    fn corrupt(&self, key: &ConversationKey, detail: String) -> StoreError {
        StoreError::Corrupt {
            key: format!("{}{key}", attr::PREFIX),
            detail,
        }
    }
}

#[async_trait]
impl ReminderStore for DynamoReminderStore {
    async fn load(&self, key: &ConversationKey) -> Result<ConversationReminders, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .set_key(Some(self.key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                StoreError::Unavailable(super::item::failure("GetItem", &self.table_name, e))
            })?;
        let Some(item) = output.item() else {
            return Ok(ConversationReminders::default());
        };
        let item = Attributes(item);
        let read = || -> Result<ConversationReminders, String> {
            Ok(ConversationReminders {
                next_number: item.number(attr::NEXT_NUMBER)?,
                reminders: item.json(attr::REMINDERS)?,
                version: item.number(attr::VERSION)?,
            })
        };
        read().map_err(|detail| self.corrupt(key, detail))
    }

    async fn save(
        &self,
        key: &ConversationKey,
        record: &ConversationReminders,
    ) -> Result<bool, StoreError> {
        let last_due = record
            .reminders
            .iter()
            .map(|r| r.due)
            .max()
            .unwrap_or_else(Utc::now)
            .max(Utc::now());
        let mut item = self.key(key);
        item.extend([
            (attr::REMINDERS.to_owned(), json(&record.reminders)),
            (attr::NEXT_NUMBER.to_owned(), number(record.next_number)),
            (attr::VERSION.to_owned(), number(record.version + 1)),
            (
                attr::EXPIRES_AT.to_owned(),
                number((last_due + KEEP).timestamp()),
            ),
        ]);
        let request = self
            .client
            .put_item()
            .table_name(&self.table_name)
            .set_item(Some(item));
        let request = if record.version == 0 {
            request
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", attr::PK)
        } else {
            request
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", attr::VERSION)
                .expression_attribute_values(":expected", number(record.version))
        };
        match request.send().await {
            Ok(_) => Ok(true),
            // Another turn wrote the record since it was read.
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(error) => Err(StoreError::Unavailable(super::item::failure(
                "PutItem",
                &self.table_name,
                error,
            ))),
        }
    }
}
