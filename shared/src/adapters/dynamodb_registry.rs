//! The DynamoDB [`ConversationRegistry`]: registered conversations as items of the delivery
//! table (`DeliveryTable` in `template.yaml`, beside notifications and rate-limit state; see
//! [`super::dynamodb_delivery`]), with a sparse index of the active ones.
//!
//! # Item layout
//!
//! `pk = conv#<conversation id>`:
//!
//! | attribute          | type | meaning                                                           |
//! |--------------------|------|-------------------------------------------------------------------|
//! | `reference`        | S    | the latest conversation reference as JSON (unknown fields survive) |
//! | `channelId`        | S    | from the reference, for people reading the table                  |
//! | `tenantId`         | S    | from the reference, when it names one                             |
//! | `conversationType` | S    | from the reference, when it names one (`personal`, `groupChat`…)  |
//! | `userId`           | S    | the user of the latest activity                                   |
//! | `firstSeen`        | N    | epoch ms of the first write                                       |
//! | `lastSeen`         | N    | epoch ms of the latest `seen`                                     |
//! | `status`           | S    | `active` \| `retired`                                             |
//! | `retiredAt`        | N    | epoch ms, once `retired`                                          |
//! | `reason`           | S    | once `retired`: why (`uninstalled`, `403 BotNotInConversationRoster`…) |
//! | `activePk`         | S    | `active`, only while active: the index's partition key            |
//! | `activeSk`         | S    | `<tenant or ~>#<conversation id>`, only while active: its sort key |
//! | `held`             | SS   | ids of notifications held until the user stops talking, while any |
//! | `expiresAt`        | N    | epoch **seconds**, the table's TTL: `lastSeen` + the inactivity retention while active, `retiredAt` + the retired retention once retired |
//!
//! The registration is read back from `reference`, `firstSeen`, `lastSeen`, `status`,
//! `retiredAt` and `reason`; `channelId`, `tenantId`, `conversationType` and `userId` repeat
//! what the reference says so the table can be read (and filtered in the console) without
//! parsing JSON.
//!
//! # Index `ActiveConversations`
//!
//! Partition key `activePk`, sort key `activeSk`, projection `ALL`. It is **sparse**: only
//! items that carry `activePk` are in it, and only active registrations do (`seen` sets it,
//! `retire` removes it), so notifications, send logs, slots and retired conversations never
//! enter it. `list_active` is one Query on `activePk = active`, narrowed to a tenant with
//! `begins_with(activeSk, "<tenant>#")`; the order is (tenant, conversation id) as the port
//! says, conversations without a tenant (`~`) after every tenant. In the tenant part `%`, `#`
//! and `~` are percent-encoded, so no tenant can reach into another's range or the no-tenant
//! one, and the first `#` of `activeSk` always ends the tenant.
//!
//! # Why this shape
//!
//! - **In the delivery table.** The engine reads a registration before every send and
//!   retires gone conversations: the delivery function's role already reaches this table and
//!   needs nothing more; the messages function writes only `conv#` items there (its role's
//!   UpdateItem is limited to those keys).
//! - **One request per write.** `seen` is one unconditional UpdateItem (`if_not_exists` keeps
//!   `firstSeen`; it revives a retired record by setting `status` and the index keys and
//!   removing `retiredAt` and `reason`); `retire` is one UpdateItem whose condition (exists and
//!   active) *is* the contract, a refusal meaning `Ok(false)`. Neither reads first.
//! - **A sparse index instead of a Scan.** Listing active conversations (a broadcast, a
//!   tenant's conversations) reads just them, a page at a time, however many other items the
//!   table holds.
//! - **Projection `ALL`.** A registration needs `reference` (the bulk of the item) and the
//!   times and status: an `INCLUDE` list would leave out only the few short attributes
//!   repeated from the reference and `expiresAt`, saving tens of bytes per item, while every
//!   later attribute `list_active` needed would mean rebuilding the index (a projection cannot
//!   be changed in place). With `ALL`, a listed item is the stored item, read by the same code
//!   as `get`.
//! - **One partition key value.** The index's partition is the constant `active`. DynamoDB
//!   sustains about 1,000 writes per second per partition key value before throttling (and an
//!   index throttle holds back the table write); the registrar writes a conversation at most
//!   once per refresh interval (10 minutes) on messages, so that is several hundred thousand
//!   conversations talking at once. Beyond that, shard it (`active#0`…`active#N` by a hash of
//!   the conversation, one Query per shard, merged).
//! - **Expiry.** TTL deletes an item within a few days of `expiresAt`; until then `get`,
//!   `get_many` and `list_active` treat an item past its `expiresAt` as gone, so expiry is
//!   exact for the engine.
//! - **Cursor.** `list_active`'s cursor is the last listed `activeSk`, base64url-encoded:
//!   opaque to callers, and enough to rebuild DynamoDB's `ExclusiveStartKey` (`pk` follows from
//!   the conversation id after the tenant). A cursor that does not decode, or that belongs to
//!   another tenant's listing, is [`RegistryError::BadCursor`]. A page is read with one item
//!   more than asked for, so the last page says so (`next: None`) instead of returning a
//!   cursor to an empty page.
//!
//! Times are stored in whole milliseconds, so a registration read back has its instants
//! truncated to the millisecond.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use super::item::{Attributes, Item, applied, batch_get, expires_at, json, millis, string};
use crate::registry::{
    ActivePage, ConversationRegistry, Registration, RegistryError, RegistryRetention, Status,
};
use crate::schema::ConversationReference;

/// The sparse index of active conversations on the delivery table.
pub const ACTIVE_INDEX: &str = "ActiveConversations";

/// The most registrations one `list_active` page returns, whatever the caller asks.
pub const MAX_PAGE: usize = 1000;

/// Attribute names, the key prefix and status words: the items' vocabulary, in one place.
mod attr {
    pub const PK: &str = "pk";
    pub const PREFIX: &str = "conv#";
    pub const REFERENCE: &str = "reference";
    pub const CHANNEL_ID: &str = "channelId";
    pub const TENANT_ID: &str = "tenantId";
    pub const CONVERSATION_TYPE: &str = "conversationType";
    pub const USER_ID: &str = "userId";
    pub const FIRST_SEEN: &str = "firstSeen";
    pub const LAST_SEEN: &str = "lastSeen";
    pub const STATUS: &str = "status";
    pub const RETIRED_AT: &str = "retiredAt";
    pub const REASON: &str = "reason";
    pub const ACTIVE_PK: &str = "activePk";
    pub const ACTIVE_SK: &str = "activeSk";
    pub const EXPIRES_AT: &str = "expiresAt";
    pub const HELD: &str = "held";

    pub const ACTIVE: &str = "active";
    pub const RETIRED: &str = "retired";
    /// `activePk` of every active registration.
    pub const ACTIVE_PARTITION: &str = "active";
    /// The tenant part of `activeSk` for a conversation without a tenant: after every
    /// (encoded) tenant.
    pub const NO_TENANT: &str = "~";
}

/// Registered conversations in the delivery table, shaped as the module doc describes.
#[derive(Debug, Clone)]
pub struct DynamoConversationRegistry {
    client: Client,
    table_name: String,
    retention: RegistryRetention,
}

impl DynamoConversationRegistry {
    pub fn new(
        client: Client,
        table_name: impl Into<String>,
        retention: RegistryRetention,
    ) -> Self {
        DynamoConversationRegistry {
            client,
            table_name: table_name.into(),
            retention,
        }
    }

    pub fn table_name(&self) -> &str {
        &self.table_name
    }

    fn unavailable<E, R>(&self, operation: &str, error: SdkError<E, R>) -> RegistryError
    where
        E: std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        RegistryError::Unavailable(super::item::failure(operation, &self.table_name, error))
    }
}

fn key(conversation_id: &str) -> Item {
    HashMap::from([(
        attr::PK.to_owned(),
        string(format!("{}{conversation_id}", attr::PREFIX)),
    )])
}

/// The tenant part of `activeSk`: the tenant with `%`, `#` and `~` percent-encoded, or `~`.
fn tenant_part(tenant: Option<&str>) -> String {
    match tenant {
        None => attr::NO_TENANT.to_owned(),
        Some(tenant) => {
            let mut encoded = String::with_capacity(tenant.len());
            for c in tenant.chars() {
                match c {
                    '%' => encoded.push_str("%25"),
                    '#' => encoded.push_str("%23"),
                    '~' => encoded.push_str("%7E"),
                    c => encoded.push(c),
                }
            }
            encoded
        }
    }
}

fn sort_key(reference: &ConversationReference) -> String {
    format!(
        "{}#{}",
        tenant_part(reference.tenant_id()),
        reference.conversation.id
    )
}

fn cursor(sort_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(sort_key)
}

/// The index position a cursor names, as DynamoDB's `ExclusiveStartKey`, checked against the
/// listing it is used with.
fn start_key(text: &str, tenant: Option<&str>) -> Result<Item, RegistryError> {
    let bad = |why: &str| RegistryError::BadCursor(why.to_owned());
    let sort_key = URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| bad("not a cursor this registry returned"))?;
    let (tenant_key, conversation) = sort_key
        .split_once('#')
        .filter(|(tenant_key, _)| !tenant_key.is_empty())
        .ok_or_else(|| bad("not a cursor this registry returned"))?;
    if let Some(tenant) = tenant
        && tenant_key != tenant_part(Some(tenant))
    {
        return Err(bad("the cursor belongs to another tenant's listing"));
    }
    let mut start = key(conversation);
    start.insert(attr::ACTIVE_PK.to_owned(), string(attr::ACTIVE_PARTITION));
    start.insert(attr::ACTIVE_SK.to_owned(), string(sort_key.clone()));
    Ok(start)
}

/// Whether DynamoDB's TTL should already have deleted `item` (it may take days to).
fn expired(item: &Item, now: DateTime<Utc>) -> bool {
    Attributes(item)
        .number::<i64>(attr::EXPIRES_AT)
        .is_ok_and(|expires_at| expires_at <= now.timestamp())
}

fn registration(item: &Item) -> Result<Registration, RegistryError> {
    let attributes = Attributes(item);
    let read = || -> Result<Registration, String> {
        let reference: ConversationReference = attributes.json(attr::REFERENCE)?;
        let pk = attributes.string(attr::PK)?;
        if pk.strip_prefix(attr::PREFIX) != Some(reference.conversation.id.as_str()) {
            return Err(format!(
                "{} is not the key of the reference's conversation",
                attr::PK
            ));
        }
        let status = match attributes.string(attr::STATUS)? {
            attr::ACTIVE => Status::Active,
            attr::RETIRED => Status::Retired {
                retired_at: attributes.millis(attr::RETIRED_AT)?,
                reason: attributes.string(attr::REASON)?.to_owned(),
            },
            other => return Err(format!("unknown {} {other:?}", attr::STATUS)),
        };
        Ok(Registration {
            reference,
            first_seen: attributes.millis(attr::FIRST_SEEN)?,
            last_seen: attributes.millis(attr::LAST_SEEN)?,
            status,
            held: held(item),
        })
    };
    read().map_err(|detail| RegistryError::Corrupt {
        key: attributes
            .string(attr::PK)
            .map(str::to_owned)
            .unwrap_or_else(|_| "(no pk)".to_owned()),
        detail,
    })
}

/// The `held` string set (absent: none).
fn held(item: &Item) -> Vec<String> {
    match item.get(attr::HELD) {
        Some(AttributeValue::Ss(ids)) => ids.clone(),
        _ => Vec::new(),
    }
}

/// The registrations among `items` that have not expired.
fn live(items: &[Item]) -> Result<Vec<Registration>, RegistryError> {
    let now = Utc::now();
    items
        .iter()
        .filter(|item| !expired(item, now))
        .map(registration)
        .collect()
}

#[async_trait]
impl ConversationRegistry for DynamoConversationRegistry {
    async fn seen(
        &self,
        reference: &ConversationReference,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, RegistryError> {
        let mut set = vec![
            "#reference = :reference",
            "#channelId = :channelId",
            "#userId = :userId",
            "#firstSeen = if_not_exists(#firstSeen, :now)",
            "#lastSeen = :now",
            "#status = :active",
            "#activePk = :activePk",
            "#activeSk = :activeSk",
            "#expiresAt = :expiresAt",
        ];
        let mut remove = vec!["#retiredAt", "#reason"];
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(key(&reference.conversation.id)))
            .expression_attribute_names("#reference", attr::REFERENCE)
            .expression_attribute_names("#channelId", attr::CHANNEL_ID)
            .expression_attribute_names("#userId", attr::USER_ID)
            .expression_attribute_names("#firstSeen", attr::FIRST_SEEN)
            .expression_attribute_names("#lastSeen", attr::LAST_SEEN)
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#activePk", attr::ACTIVE_PK)
            .expression_attribute_names("#activeSk", attr::ACTIVE_SK)
            .expression_attribute_names("#expiresAt", attr::EXPIRES_AT)
            .expression_attribute_names("#retiredAt", attr::RETIRED_AT)
            .expression_attribute_names("#reason", attr::REASON)
            .expression_attribute_names("#tenantId", attr::TENANT_ID)
            .expression_attribute_names("#conversationType", attr::CONVERSATION_TYPE)
            .expression_attribute_values(":reference", json(reference))
            .expression_attribute_values(":channelId", string(&reference.channel_id))
            .expression_attribute_values(":userId", string(&reference.user.id))
            .expression_attribute_values(":now", millis(now))
            .expression_attribute_values(":active", string(attr::ACTIVE))
            .expression_attribute_values(":activePk", string(attr::ACTIVE_PARTITION))
            .expression_attribute_values(":activeSk", string(sort_key(reference)))
            .expression_attribute_values(":expiresAt", expires_at(now, self.retention.inactive));
        match reference.tenant_id() {
            Some(tenant) => {
                set.push("#tenantId = :tenantId");
                request = request.expression_attribute_values(":tenantId", string(tenant));
            }
            None => remove.push("#tenantId"),
        }
        match reference
            .conversation
            .conversation_type
            .as_deref()
            .filter(|kind| !kind.is_empty())
        {
            Some(kind) => {
                set.push("#conversationType = :conversationType");
                request = request.expression_attribute_values(":conversationType", string(kind));
            }
            None => remove.push("#conversationType"),
        }
        let output = request
            .update_expression(format!(
                "SET {} REMOVE {}",
                set.join(", "),
                remove.join(", ")
            ))
            // The held notifications come back with the write: no second request per turn.
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| self.unavailable("UpdateItem", e))?;
        Ok(output.attributes().map(held).unwrap_or_default())
    }

    async fn hold(&self, conversation_id: &str, notification: &str) -> Result<bool, RegistryError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(key(conversation_id)))
            .condition_expression("attribute_exists(#pk)")
            .update_expression("ADD #held :id")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#held", attr::HELD)
            .expression_attribute_values(":id", AttributeValue::Ss(vec![notification.to_owned()]))
            .send()
            .await;
        applied(result, |e| self.unavailable("UpdateItem", e))
    }

    async fn release(
        &self,
        conversation_id: &str,
        notifications: &[String],
    ) -> Result<(), RegistryError> {
        if notifications.is_empty() {
            return Ok(());
        }
        // DELETE from a set of an item that does not exist would create the item: guarded.
        let result = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(key(conversation_id)))
            .condition_expression("attribute_exists(#pk)")
            .update_expression("DELETE #held :ids")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#held", attr::HELD)
            .expression_attribute_values(":ids", AttributeValue::Ss(notifications.to_vec()))
            .send()
            .await;
        // Unknown conversation: nothing to release.
        applied(result, |e| self.unavailable("UpdateItem", e)).map(drop)
    }

    async fn retire(
        &self,
        conversation_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .set_key(Some(key(conversation_id)))
            .condition_expression("attribute_exists(#pk) AND #status = :active")
            // Without the index keys the item leaves ActiveConversations.
            .update_expression(
                "SET #status = :retired, #retiredAt = :now, #reason = :reason, \
                     #expiresAt = :expiresAt \
                 REMOVE #activePk, #activeSk",
            )
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#retiredAt", attr::RETIRED_AT)
            .expression_attribute_names("#reason", attr::REASON)
            .expression_attribute_names("#expiresAt", attr::EXPIRES_AT)
            .expression_attribute_names("#activePk", attr::ACTIVE_PK)
            .expression_attribute_names("#activeSk", attr::ACTIVE_SK)
            .expression_attribute_values(":active", string(attr::ACTIVE))
            .expression_attribute_values(":retired", string(attr::RETIRED))
            .expression_attribute_values(":now", millis(now))
            .expression_attribute_values(":reason", string(reason))
            .expression_attribute_values(":expiresAt", expires_at(now, self.retention.retired))
            .send()
            .await;
        // Unknown, or retired already: left as it is.
        applied(result, |e| self.unavailable("UpdateItem", e))
    }

    async fn get(&self, conversation_id: &str) -> Result<Option<Registration>, RegistryError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .set_key(Some(key(conversation_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.unavailable("GetItem", e))?;
        Ok(live(output.item().map(std::slice::from_ref).unwrap_or_default())?.pop())
    }

    /// One BatchGetItem per 100 distinct ids; unprocessed keys are asked for again.
    async fn get_many(
        &self,
        conversation_ids: &[String],
    ) -> Result<Vec<Registration>, RegistryError> {
        let mut distinct: Vec<&String> = conversation_ids.iter().collect();
        distinct.sort();
        distinct.dedup();
        let keys = distinct.into_iter().map(|id| key(id)).collect();
        let items = batch_get(&self.client, &self.table_name, keys)
            .await
            .map_err(RegistryError::Unavailable)?;
        live(&items)
    }

    async fn list_active(
        &self,
        tenant: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ActivePage, RegistryError> {
        let start = after.map(|text| start_key(text, tenant)).transpose()?;
        let limit = limit.clamp(1, MAX_PAGE);
        let mut request = self
            .client
            .query()
            .table_name(&self.table_name)
            .index_name(ACTIVE_INDEX)
            .expression_attribute_names("#activePk", attr::ACTIVE_PK)
            .expression_attribute_values(":activePk", string(attr::ACTIVE_PARTITION))
            .set_exclusive_start_key(start)
            // One more than the page: whether another page exists, without a second Query.
            .limit(i32::try_from(limit + 1).expect("MAX_PAGE fits an i32"));
        request = match tenant {
            Some(tenant) => request
                .key_condition_expression(
                    "#activePk = :activePk AND begins_with(#activeSk, :tenant)",
                )
                .expression_attribute_names("#activeSk", attr::ACTIVE_SK)
                .expression_attribute_values(
                    ":tenant",
                    string(format!("{}#", tenant_part(Some(tenant)))),
                ),
            None => request.key_condition_expression("#activePk = :activePk"),
        };
        let output = request
            .send()
            .await
            .map_err(|e| self.unavailable("Query", e))?;
        let items = output.items();
        // More than the page, or cut short by DynamoDB's 1 MB response limit: another page.
        let more = items.len() > limit || output.last_evaluated_key().is_some();
        let page = &items[..items.len().min(limit)];
        let next = match page.last() {
            Some(last) if more => Some(cursor(Attributes(last).string(attr::ACTIVE_SK).map_err(
                |detail| RegistryError::Corrupt {
                    key: ACTIVE_INDEX.to_owned(),
                    detail,
                },
            )?)),
            _ => None,
        };
        Ok(ActivePage {
            conversations: live(page)?,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_cannot_reach_into_each_others_ranges() {
        assert_eq!(tenant_part(None), "~");
        assert_eq!(tenant_part(Some("t1")), "t1");
        assert_eq!(tenant_part(Some("a#b")), "a%23b");
        assert_eq!(tenant_part(Some("~")), "%7E");
        assert_eq!(tenant_part(Some("50%")), "50%25");
        assert!(!tenant_part(Some("a#b")).contains('#'));
    }

    #[test]
    fn cursors_round_trip_and_are_checked() {
        let sort_key = "t1#19:abc@thread.skype;messageid=1";
        let start = start_key(&cursor(sort_key), Some("t1")).unwrap();
        assert_eq!(
            start.get(attr::PK),
            Some(&string("conv#19:abc@thread.skype;messageid=1"))
        );
        assert_eq!(start.get(attr::ACTIVE_SK), Some(&string(sort_key)));
        assert_eq!(start.get(attr::ACTIVE_PK), Some(&string("active")));
        assert!(start_key(&cursor(sort_key), None).is_ok());
        for bad in [
            "",
            "!!",
            "not base64 at all",
            &cursor("no-separator"),
            &cursor("#c"),
        ] {
            assert!(
                matches!(start_key(bad, None), Err(RegistryError::BadCursor(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            start_key(&cursor(sort_key), Some("t2")),
            Err(RegistryError::BadCursor(_))
        ));
    }
}
