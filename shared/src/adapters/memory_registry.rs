//! The in-memory [`ConversationRegistry`]: the local runner's registry and the unit tests'.
//! Atomic under one lock, bounded like the other memory stores (retired conversations are
//! evicted first, then the longest inactive), with the active ones indexed in (tenant,
//! conversation) order so [`ConversationRegistry::list_active`] pages as the DynamoDB index
//! does.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::registry::{ActivePage, ConversationRegistry, Registration, RegistryError, Status};
use crate::schema::ConversationReference;

/// How many conversations the memory registry keeps by default.
pub const DEFAULT_REGISTRY_CAPACITY: usize = 100_000;

#[derive(Default)]
struct State {
    records: HashMap<String, Registration>,
    /// (tenant sort key, conversation id) of the active records.
    active: BTreeSet<(String, String)>,
}

pub struct MemoryConversationRegistry {
    state: Mutex<State>,
    capacity: usize,
}

impl Default for MemoryConversationRegistry {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_REGISTRY_CAPACITY)
    }
}

/// The index's sort key of a tenant: conversations without one sort after every tenant.
pub fn tenant_key(tenant: Option<&str>) -> String {
    match tenant {
        Some(tenant) => tenant.to_owned(),
        None => "~".to_owned(),
    }
}

/// The cursor of a page ending at `(tenant key, conversation)`.
fn cursor(key: &(String, String)) -> String {
    serde_json::json!([key.0, key.1]).to_string()
}

fn parse_cursor(text: &str) -> Result<(String, String), RegistryError> {
    serde_json::from_str::<(String, String)>(text)
        .map_err(|_| RegistryError::BadCursor("not a cursor this registry returned".to_owned()))
}

impl MemoryConversationRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(capacity: usize) -> Self {
        MemoryConversationRegistry {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every write is a single insert or field update: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn index_key(record: &Registration) -> (String, String) {
        (
            tenant_key(record.tenant_id()),
            record.conversation_id().to_owned(),
        )
    }

    fn make_room(&mut self, capacity: usize) -> Result<(), RegistryError> {
        if self.records.len() < capacity {
            return Ok(());
        }
        let victim = self
            .records
            .values()
            .min_by_key(|r| (r.status.is_active(), r.last_seen))
            .map(|r| r.conversation_id().to_owned());
        match victim {
            Some(id) => {
                if let Some(record) = self.records.remove(&id) {
                    self.active.remove(&Self::index_key(&record));
                }
                Ok(())
            }
            None => Err(RegistryError::Full(format!(
                "{} conversations registered",
                self.records.len()
            ))),
        }
    }
}

#[async_trait]
impl ConversationRegistry for MemoryConversationRegistry {
    async fn seen(
        &self,
        reference: &ConversationReference,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, RegistryError> {
        let mut state = self.lock();
        let id = reference.conversation.id.clone();
        let (first_seen, held) = match state.records.get(&id) {
            Some(existing) => {
                let key = State::index_key(existing);
                let kept = (existing.first_seen, existing.held.clone());
                state.active.remove(&key);
                kept
            }
            None => {
                state.make_room(self.capacity)?;
                (now, Vec::new())
            }
        };
        let record = Registration {
            reference: reference.clone(),
            first_seen,
            last_seen: now,
            status: Status::Active,
            held: held.clone(),
        };
        state.active.insert(State::index_key(&record));
        state.records.insert(id, record);
        Ok(held)
    }

    async fn hold(&self, conversation_id: &str, notification: &str) -> Result<bool, RegistryError> {
        let mut state = self.lock();
        let Some(record) = state.records.get_mut(conversation_id) else {
            return Ok(false);
        };
        if !record.held.iter().any(|id| id == notification) {
            record.held.push(notification.to_owned());
        }
        Ok(true)
    }

    async fn release(
        &self,
        conversation_id: &str,
        notifications: &[String],
    ) -> Result<(), RegistryError> {
        if let Some(record) = self.lock().records.get_mut(conversation_id) {
            record.held.retain(|id| !notifications.contains(id));
        }
        Ok(())
    }

    async fn retire(
        &self,
        conversation_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        let mut state = self.lock();
        let Some(record) = state.records.get_mut(conversation_id) else {
            return Ok(false);
        };
        if !record.status.is_active() {
            return Ok(false);
        }
        record.status = Status::Retired {
            retired_at: now,
            reason: reason.to_owned(),
        };
        let key = State::index_key(record);
        state.active.remove(&key);
        Ok(true)
    }

    async fn get(&self, conversation_id: &str) -> Result<Option<Registration>, RegistryError> {
        Ok(self.lock().records.get(conversation_id).cloned())
    }

    async fn get_many(
        &self,
        conversation_ids: &[String],
    ) -> Result<Vec<Registration>, RegistryError> {
        let state = self.lock();
        Ok(conversation_ids
            .iter()
            .filter_map(|id| state.records.get(id).cloned())
            .collect())
    }

    async fn list_active(
        &self,
        tenant: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ActivePage, RegistryError> {
        let after = after.map(parse_cursor).transpose()?;
        if let (Some((cursor_tenant, _)), Some(tenant)) = (&after, tenant)
            && cursor_tenant != tenant
        {
            return Err(RegistryError::BadCursor(
                "the cursor belongs to another tenant's listing".to_owned(),
            ));
        }
        let state = self.lock();
        let start = match (&after, tenant) {
            (Some(key), _) => std::ops::Bound::Excluded(key.clone()),
            (None, Some(tenant)) => std::ops::Bound::Included((tenant.to_owned(), String::new())),
            (None, None) => std::ops::Bound::Unbounded,
        };
        let limit = limit.max(1);
        let mut keys = state
            .active
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|(t, _)| tenant.is_none_or(|tenant| t == tenant))
            .take(limit + 1)
            .cloned()
            .collect::<Vec<_>>();
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next = more.then(|| keys.last().map(cursor)).flatten();
        let conversations = keys
            .iter()
            .filter_map(|(_, id)| state.records.get(id).cloned())
            .collect();
        Ok(ActivePage {
            conversations,
            next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ChannelAccount, ConversationAccount};

    fn reference_in(conversation: &str, tenant: Option<&str>, url: &str) -> ConversationReference {
        ConversationReference {
            user: ChannelAccount {
                id: "user".into(),
                ..Default::default()
            },
            conversation: ConversationAccount {
                id: conversation.into(),
                tenant_id: tenant.map(str::to_owned),
                ..Default::default()
            },
            channel_id: "msteams".into(),
            service_url: url.into(),
            ..Default::default()
        }
    }

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    #[tokio::test]
    async fn lifecycle_register_retire_revive() {
        let registry = MemoryConversationRegistry::new();
        let first = now();
        registry
            .seen(&reference_in("c1", Some("t1"), "https://a"), first)
            .await
            .unwrap();
        let record = registry.get("c1").await.unwrap().unwrap();
        assert!(record.status.is_active());
        assert_eq!(record.first_seen, first);
        assert!(registry.retire("c1", "uninstalled", now()).await.unwrap());
        assert!(!registry.retire("c1", "again", now()).await.unwrap());
        assert!(!registry.retire("unknown", "x", now()).await.unwrap());
        let record = registry.get("c1").await.unwrap().unwrap();
        assert!(
            matches!(&record.status, Status::Retired { reason, .. } if reason == "uninstalled")
        );
        assert!(
            registry
                .list_active(None, None, 10)
                .await
                .unwrap()
                .conversations
                .is_empty()
        );
        registry
            .seen(&reference_in("c1", Some("t1"), "https://b"), now())
            .await
            .unwrap();
        let record = registry.get("c1").await.unwrap().unwrap();
        assert!(record.status.is_active());
        assert_eq!(record.first_seen, first, "first seen is kept");
        assert_eq!(
            record.reference.service_url, "https://b",
            "latest serviceUrl"
        );
    }

    #[tokio::test]
    async fn pages_through_active_conversations_by_tenant() {
        let registry = MemoryConversationRegistry::new();
        for i in 0..25 {
            let tenant = if i % 2 == 0 { Some("t1") } else { Some("t2") };
            registry
                .seen(
                    &reference_in(&format!("c{i:02}"), tenant, "https://a"),
                    now(),
                )
                .await
                .unwrap();
        }
        registry
            .seen(&reference_in("no-tenant", None, "https://a"), now())
            .await
            .unwrap();
        registry.retire("c00", "uninstalled", now()).await.unwrap();

        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = registry
                .list_active(None, after.as_deref(), 4)
                .await
                .unwrap();
            assert!(page.conversations.len() <= 4);
            all.extend(
                page.conversations
                    .iter()
                    .map(|r| r.conversation_id().to_owned()),
            );
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(all.len(), 25, "24 active with a tenant and one without");
        assert!(!all.contains(&"c00".to_owned()));
        assert_eq!(all.last().unwrap(), "no-tenant");

        let page = registry.list_active(Some("t2"), None, 100).await.unwrap();
        assert_eq!(page.conversations.len(), 12);
        assert!(
            page.conversations
                .iter()
                .all(|r| r.tenant_id() == Some("t2"))
        );
        assert!(page.next.is_none());
        assert!(matches!(
            registry.list_active(None, Some("garbage"), 1).await,
            Err(RegistryError::BadCursor(_))
        ));
    }

    #[tokio::test]
    async fn bounded_evicting_retired_first() {
        let registry = MemoryConversationRegistry::with_capacity(2);
        registry
            .seen(&reference_in("a", None, "https://a"), now())
            .await
            .unwrap();
        registry
            .seen(&reference_in("b", None, "https://a"), now())
            .await
            .unwrap();
        registry.retire("b", "uninstalled", now()).await.unwrap();
        registry
            .seen(&reference_in("c", None, "https://a"), now())
            .await
            .unwrap();
        assert_eq!(registry.len(), 2);
        assert!(registry.get("b").await.unwrap().is_none());
        assert!(registry.get("a").await.unwrap().is_some());
    }
}
