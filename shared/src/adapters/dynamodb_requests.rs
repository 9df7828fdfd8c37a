//! The DynamoDB [`RequestStore`]: notify requests in the delivery table, beside their
//! notifications.
//!
//! | item           | `pk`        | attributes                                            |
//! |----------------|-------------|-------------------------------------------------------|
//! | notify request | `req#<id>`  | `request` S (JSON), `fanOut` S (JSON), `expiresAt` N  |
//!
//! The request is written once (conditional on its absence: the idempotency guarantee) and
//! never changed; `fanOut` is the only part that moves, replaced after each fan-out page. Both
//! are JSON: nothing queries inside them, and a request of up to 1000 named conversations and
//! a 256 KiB body stays inside DynamoDB's 400 KB item limit. The request expires the store's
//! retention after its creation, as its notifications do after they end.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::dynamodb_delivery::DynamoDeliveryStore;
use super::item::{Attributes, json, string};
use crate::delivery::StoreError;
use crate::notify::{CreatedRequest, FanOut, NotifyRequest, RequestStore};

const PREFIX: &str = "req#";
const PK: &str = "pk";
const REQUEST: &str = "request";
const FAN_OUT: &str = "fanOut";
const EXPIRES_AT: &str = "expiresAt";

fn key(id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([(PK.to_owned(), string(format!("{PREFIX}{id}")))])
}

fn read(item: &HashMap<String, AttributeValue>) -> Result<NotifyRequest, StoreError> {
    let attributes = Attributes(item);
    let parsed = attributes
        .json::<NotifyRequest>(REQUEST)
        .and_then(|mut request| {
            request.fan_out = attributes.json::<FanOut>(FAN_OUT)?;
            Ok(request)
        });
    parsed.map_err(|detail| StoreError::Corrupt {
        key: attributes
            .string(PK)
            .unwrap_or("a notify request")
            .to_owned(),
        detail,
    })
}

#[async_trait]
impl RequestStore for DynamoDeliveryStore {
    async fn create(&self, request: &NotifyRequest) -> Result<CreatedRequest, StoreError> {
        let mut item = key(&request.id);
        item.insert(REQUEST.to_owned(), json(request));
        item.insert(FAN_OUT.to_owned(), json(&request.fan_out));
        item.insert(
            EXPIRES_AT.to_owned(),
            super::item::expires_at(request.created_at, self.retention),
        );
        let result = self
            .client
            .put_item()
            .table_name(&self.table_name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(CreatedRequest::New),
            Err(error) => match error.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(refusal)) => {
                    match refusal.item() {
                        Some(item) => read(item).map(|r| CreatedRequest::Existing(Box::new(r))),
                        None => Err(StoreError::Unavailable(format!(
                            "DynamoDB PutItem on table {} refused notify request {} without \
                             returning the stored one",
                            self.table_name, request.id
                        ))),
                    }
                }
                _ => Err(self.unavailable("PutItem", error)),
            },
        }
    }

    async fn get(&self, id: &str) -> Result<Option<NotifyRequest>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .set_key(Some(key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.unavailable("GetItem", e))?;
        output.item().map(read).transpose()
    }

    async fn save_fan_out(&self, id: &str, fan_out: &FanOut) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(key(id)))
            .update_expression("SET #fanOut = :fanOut")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#fanOut", FAN_OUT)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":fanOut", json(fan_out))
            .send()
            .await
            .map_err(|e| self.unavailable("UpdateItem", e))?;
        Ok(())
    }
}
