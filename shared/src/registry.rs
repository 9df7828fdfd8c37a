//! The conversation registry: every conversation that talked to the bot, where it lives now
//! (its latest reference, so a changed serviceUrl is followed), and whether the bot may still
//! message it.
//!
//! The rule it enforces is the product's: **never message people who did not talk to the
//! bot.** Only an [`Active`](Status::Active) record can receive notifications; the delivery
//! engine looks the conversation up before every send and uses the reference found there.
//!
//! ```text
//!   any accepted activity ──► Active ──uninstall / bot removed / 403 roster, blocked / 404──► Retired{reason}
//!                               ▲                                                              │
//!                               └──────────────── any later activity ─────────────────────────┘
//! ```
//!
//! Retired records expire after the retired retention, active ones after the inactivity
//! retention counted from their last write ([`RegistryRetention`]).
//!
//! [`Registrar`] is the bot's side: it turns each accepted activity into at most one write,
//! and skips the write when the same conversation was written recently with the same
//! serviceUrl and status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::schema::{Activity, ConversationReference, activity_types};

/// Whether the bot may message a registered conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum Status {
    Active,
    #[serde(rename_all = "camelCase")]
    Retired {
        retired_at: DateTime<Utc>,
        /// Why: `uninstalled`, `bot removed`, or the Connector's answer (`403
        /// BotNotInConversationRoster`, `404 …`).
        reason: String,
    },
}

impl Status {
    pub fn is_active(&self) -> bool {
        matches!(self, Status::Active)
    }
}

/// One registered conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// The reference of the latest activity seen from it: its serviceUrl is the one to use.
    pub reference: ConversationReference,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    #[serde(flatten)]
    pub status: Status,
    /// Notifications the delivery engine is holding until the user stops talking (see
    /// [`crate::delivery::fold`]): the bot's answer to the user's next message carries them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
}

impl Registration {
    pub fn conversation_id(&self) -> &str {
        &self.reference.conversation.id
    }

    pub fn channel_id(&self) -> &str {
        &self.reference.channel_id
    }

    pub fn tenant_id(&self) -> Option<&str> {
        self.reference.tenant_id()
    }

    /// `personal`, `groupChat`, `channel` on Teams; often absent elsewhere.
    pub fn conversation_type(&self) -> Option<&str> {
        self.reference.conversation.conversation_type.as_deref()
    }

    /// The user of the latest activity.
    pub fn user_id(&self) -> &str {
        &self.reference.user.id
    }
}

/// Errors of the registry port.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The backing service failed or could not be reached; retrying may succeed.
    #[error("conversation registry unavailable: {0}")]
    Unavailable(String),
    /// A stored record cannot be read back.
    #[error("{key} is stored in a form this version cannot read: {detail}")]
    Corrupt { key: String, detail: String },
    /// A bounded in-memory registry is full of active conversations.
    #[error("conversation registry full: {0}")]
    Full(String),
    /// `list_active` was given a cursor this registry did not return (or one of another
    /// tenant's listing): the caller's mistake, not the store's.
    #[error("not a cursor of this listing: {0}")]
    BadCursor(String),
}

/// A page of active conversations.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActivePage {
    pub conversations: Vec<Registration>,
    /// Pass it as `after` for the next page; `None` when this was the last one.
    pub next: Option<String>,
}

/// How long records are kept once nothing happens to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryRetention {
    /// An active conversation not seen for this long expires (it would have to talk to the
    /// bot again to be messaged). Default 365 days.
    pub inactive: chrono::Duration,
    /// A retired conversation expires this long after it was retired. Default 30 days.
    pub retired: chrono::Duration,
}

impl Default for RegistryRetention {
    fn default() -> Self {
        RegistryRetention {
            inactive: chrono::Duration::days(365),
            retired: chrono::Duration::days(30),
        }
    }
}

/// The registered conversations.
///
/// Contract, for every adapter:
/// - `seen` creates the record (Active, first = last seen = `now`) or updates it: the
///   reference replaced by `reference`, last seen `now`, status Active again (a retired
///   conversation that talks again is revived), first seen kept. One write, which returns the
///   notifications held for the conversation (`held`, unchanged by it).
/// - `hold` adds a notification id to the conversation's `held` set (a set: adding one twice
///   keeps one), if the conversation is registered (`Ok(false)` otherwise); `release` removes
///   ids from it (unknown ones are ignored). Neither touches anything else.
/// - `retire` sets Retired with `reason` and `now`, if the conversation is registered and
///   active; an unknown or already retired conversation is left as it is (`Ok(false)`).
/// - `get` returns `Ok(None)` for an unknown conversation; `get_many` returns the ones that
///   exist, in any order (up to 100 ids per backend request).
/// - `list_active` pages through the **active** conversations, optionally of one tenant, in a
///   stable order (tenant, then conversation id), `limit` at most per page, resuming after
///   the cursor `after` a previous page returned (anything else: `BadCursor`, never a panic).
///   It reads an index, never the whole store at once; on DynamoDB the index is eventually
///   consistent, so a conversation registered or retired a moment ago may be missing or still
///   listed.
/// - Expiry follows [`RegistryRetention`], counted from each write; a record past its expiry
///   reads as absent even before the store deletes it. (The in-memory adapter, which loses
///   everything on exit anyway, is bounded in size instead.)
#[async_trait]
pub trait ConversationRegistry: Send + Sync {
    async fn seen(
        &self,
        reference: &ConversationReference,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, RegistryError>;
    async fn hold(&self, conversation_id: &str, notification: &str) -> Result<bool, RegistryError>;
    async fn release(
        &self,
        conversation_id: &str,
        notifications: &[String],
    ) -> Result<(), RegistryError>;
    async fn retire(
        &self,
        conversation_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, RegistryError>;
    async fn get(&self, conversation_id: &str) -> Result<Option<Registration>, RegistryError>;
    async fn get_many(
        &self,
        conversation_ids: &[String],
    ) -> Result<Vec<Registration>, RegistryError>;
    async fn list_active(
        &self,
        tenant: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ActivePage, RegistryError>;
}

/// What an accepted activity means for its conversation's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// It talked to the bot (or the bot was added): record it, active.
    Seen,
    /// The bot was uninstalled or removed from it: retire it with this reason.
    Gone(&'static str),
}

/// Reads what `activity` says about its conversation.
pub fn observe(activity: &Activity) -> Observation {
    match activity.kind.as_str() {
        activity_types::INSTALLATION_UPDATE => {
            let action = activity
                .extra
                .get("action")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default();
            if action.starts_with("remove") {
                return Observation::Gone("uninstalled");
            }
            Observation::Seen
        }
        activity_types::CONVERSATION_UPDATE => {
            let bot_id = activity.recipient.as_ref().map(|r| r.id.as_str());
            let bot_removed = activity
                .members_removed
                .iter()
                .flatten()
                .any(|member| Some(member.id.as_str()) == bot_id);
            if bot_removed {
                Observation::Gone("bot removed")
            } else {
                Observation::Seen
            }
        }
        _ => Observation::Seen,
    }
}

/// How long a write is skipped for a conversation written with the same serviceUrl.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(10 * 60);

/// How many conversations a process remembers having written; beyond, the memory is cleared.
const REMEMBERED: usize = 10_000;

/// What a registrar remembers: per conversation, the serviceUrl it wrote and when.
type Written = Arc<Mutex<HashMap<String, (String, Instant)>>>;

/// What [`Registrar::record`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    pub wrote: bool,
    /// Ids of the notifications held for the conversation until the user's next message.
    pub held: Vec<String>,
}

/// The bot's side of the registry: one write per accepted activity at most.
///
/// A message from a conversation this process wrote less than `refresh` ago, with the same
/// serviceUrl, writes nothing: last seen is then up to `refresh` old, which the inactivity
/// retention (months) does not notice. Lifecycle activities (conversationUpdate,
/// installationUpdate) always write, so adding the bot back revives a retired conversation at
/// once. A conversation the delivery engine retires (a 403 or 404 from the Connector) through
/// [`Registrar::forgetting_registry`] — in the same process, as in the local runner — is
/// forgotten here, so its next message revives it at once; retired by an engine in another
/// process (the delivery function, on AWS), it is revived by its next message at most
/// `refresh` after this process last wrote it.
pub struct Registrar {
    registry: Arc<dyn ConversationRegistry>,
    refresh: Duration,
    written: Written,
}

impl Registrar {
    pub fn new(registry: Arc<dyn ConversationRegistry>, refresh: Duration) -> Self {
        Registrar {
            registry,
            refresh,
            written: Arc::default(),
        }
    }

    pub fn registry(&self) -> &Arc<dyn ConversationRegistry> {
        &self.registry
    }

    /// The registry, for the delivery engine of this process: every retirement made through it
    /// also makes this registrar forget the conversation, so the conversation's next message
    /// is written — and revives it — at once.
    pub fn forgetting_registry(&self) -> Arc<dyn ConversationRegistry> {
        Arc::new(Forgetting {
            inner: self.registry.clone(),
            written: self.written.clone(),
        })
    }

    /// Records what `activity` says about its conversation: whether it wrote, and the
    /// notifications held for the conversation (read by the write; none when skipped).
    pub async fn record(&self, activity: &Activity) -> Result<Recorded, RegistryError> {
        let Some(conversation) = activity.conversation_id().filter(|id| !id.is_empty()) else {
            return Ok(Recorded::default());
        };
        let now = Utc::now();
        match observe(activity) {
            Observation::Gone(reason) => {
                self.forget(conversation);
                self.registry.retire(conversation, reason, now).await?;
                tracing::info!(conversation, reason, "conversation retired");
                Ok(Recorded {
                    wrote: true,
                    held: Vec::new(),
                })
            }
            Observation::Seen => {
                let reference = ConversationReference::from_incoming(activity);
                // Typing indicators, events, invokes… skip like messages: only the activities
                // that change the bot's membership must always reach the store.
                let lifecycle = matches!(
                    activity.kind.as_str(),
                    activity_types::CONVERSATION_UPDATE | activity_types::INSTALLATION_UPDATE
                );
                if !lifecycle && self.written_recently(conversation, &reference.service_url) {
                    return Ok(Recorded::default());
                }
                let held = self.registry.seen(&reference, now).await?;
                self.remember(conversation, &reference.service_url);
                Ok(Recorded { wrote: true, held })
            }
        }
    }

    fn written_recently(&self, conversation: &str, service_url: &str) -> bool {
        let written = self.written.lock().expect("registrar lock");
        written
            .get(conversation)
            .is_some_and(|(url, at)| url == service_url && at.elapsed() < self.refresh)
    }

    fn remember(&self, conversation: &str, service_url: &str) {
        let mut written = self.written.lock().expect("registrar lock");
        if written.len() >= REMEMBERED && !written.contains_key(conversation) {
            written.clear();
        }
        written.insert(
            conversation.to_owned(),
            (service_url.to_owned(), Instant::now()),
        );
    }

    fn forget(&self, conversation: &str) {
        forget(&self.written, conversation);
    }
}

fn forget(written: &Written, conversation: &str) {
    written.lock().expect("registrar lock").remove(conversation);
}

/// A registry whose retirements a [`Registrar`] hears of.
struct Forgetting {
    inner: Arc<dyn ConversationRegistry>,
    written: Written,
}

#[async_trait]
impl ConversationRegistry for Forgetting {
    async fn seen(
        &self,
        reference: &ConversationReference,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, RegistryError> {
        self.inner.seen(reference, now).await
    }

    async fn hold(&self, conversation_id: &str, notification: &str) -> Result<bool, RegistryError> {
        self.inner.hold(conversation_id, notification).await
    }

    async fn release(
        &self,
        conversation_id: &str,
        notifications: &[String],
    ) -> Result<(), RegistryError> {
        self.inner.release(conversation_id, notifications).await
    }

    async fn retire(
        &self,
        conversation_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        let retired = self.inner.retire(conversation_id, reason, now).await;
        // After the write, so a message arriving meanwhile cannot be remembered past it; and
        // even if the write failed: the next message then writes, which is harmless.
        forget(&self.written, conversation_id);
        retired
    }

    async fn get(&self, conversation_id: &str) -> Result<Option<Registration>, RegistryError> {
        self.inner.get(conversation_id).await
    }

    async fn get_many(
        &self,
        conversation_ids: &[String],
    ) -> Result<Vec<Registration>, RegistryError> {
        self.inner.get_many(conversation_ids).await
    }

    async fn list_active(
        &self,
        tenant: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ActivePage, RegistryError> {
        self.inner.list_active(tenant, after, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn activity(value: serde_json::Value) -> Activity {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn lifecycle_activities_are_read() {
        assert_eq!(
            observe(&activity(json!({"type": "message", "text": "hi"}))),
            Observation::Seen
        );
        assert_eq!(
            observe(&activity(
                json!({"type": "installationUpdate", "action": "remove"})
            )),
            Observation::Gone("uninstalled")
        );
        assert_eq!(
            observe(&activity(
                json!({"type": "installationUpdate", "action": "remove-upgrade"})
            )),
            Observation::Gone("uninstalled")
        );
        assert_eq!(
            observe(&activity(
                json!({"type": "installationUpdate", "action": "add"})
            )),
            Observation::Seen
        );
        let removed = json!({"type": "conversationUpdate", "recipient": {"id": "bot"},
            "membersRemoved": [{"id": "bot"}]});
        assert_eq!(
            observe(&activity(removed)),
            Observation::Gone("bot removed")
        );
        let user_left = json!({"type": "conversationUpdate", "recipient": {"id": "bot"},
            "membersRemoved": [{"id": "user"}]});
        assert_eq!(observe(&activity(user_left)), Observation::Seen);
    }

    fn from(conversation: &str, kind: &str, service_url: &str) -> Activity {
        activity(json!({
            "type": kind, "text": "hi", "serviceUrl": service_url, "channelId": "msteams",
            "from": {"id": "user"}, "recipient": {"id": "bot"},
            "conversation": {"id": conversation},
        }))
    }

    #[tokio::test]
    async fn the_registrar_writes_once_per_conversation_unless_something_changed() {
        let registry: Arc<dyn ConversationRegistry> =
            Arc::new(crate::adapters::memory_registry::MemoryConversationRegistry::new());
        let registrar = Registrar::new(registry.clone(), DEFAULT_REFRESH);
        let message = from("c1", "message", "https://a/");
        assert!(
            registrar.record(&message).await.unwrap().wrote,
            "first message"
        );
        assert!(
            !registrar.record(&message).await.unwrap().wrote,
            "nothing changed"
        );
        assert!(
            registrar
                .record(&from("c2", "message", "https://a/"))
                .await
                .unwrap()
                .wrote,
            "another conversation"
        );
        assert!(
            registrar
                .record(&from("c1", "message", "https://b/"))
                .await
                .unwrap()
                .wrote,
            "a new serviceUrl"
        );
        assert_eq!(
            registry
                .get("c1")
                .await
                .unwrap()
                .unwrap()
                .reference
                .service_url,
            "https://b/"
        );
        assert!(
            registrar
                .record(&from("c1", "conversationUpdate", "https://b/"))
                .await
                .unwrap()
                .wrote,
            "lifecycle activities always write"
        );
        let mut uninstall = from("c1", "installationUpdate", "https://b/");
        uninstall.extra.insert("action".into(), json!("remove"));
        assert!(registrar.record(&uninstall).await.unwrap().wrote);
        assert!(
            !registry
                .get("c1")
                .await
                .unwrap()
                .unwrap()
                .status
                .is_active()
        );
        assert!(
            registrar
                .record(&from("c1", "message", "https://b/"))
                .await
                .unwrap()
                .wrote,
            "a retired conversation's next message writes"
        );
        assert!(
            registry
                .get("c1")
                .await
                .unwrap()
                .unwrap()
                .status
                .is_active()
        );

        let typing = from("c2", "typing", "https://a/");
        assert!(
            !registrar.record(&typing).await.unwrap().wrote,
            "a typing indicator in a conversation written moments ago writes nothing"
        );
        let no_conversation = activity(json!({"type": "message", "text": "hi"}));
        assert!(!registrar.record(&no_conversation).await.unwrap().wrote);
        assert_eq!(
            Registrar::new(registry.clone(), Duration::ZERO)
                .record(&message)
                .await
                .ok()
                .map(|recorded| recorded.wrote),
            Some(true),
            "a zero refresh writes every time"
        );
    }

    #[tokio::test]
    async fn a_retirement_through_the_forgetting_registry_lets_the_next_message_revive() {
        let registry: Arc<dyn ConversationRegistry> =
            Arc::new(crate::adapters::memory_registry::MemoryConversationRegistry::new());
        let registrar = Registrar::new(registry.clone(), DEFAULT_REFRESH);
        let message = from("c1", "message", "https://a/");
        registrar.record(&message).await.unwrap();
        // The engine of another process: the registrar cannot know, and skips.
        registry.retire("c1", "404", Utc::now()).await.unwrap();
        assert!(!registrar.record(&message).await.unwrap().wrote);
        registrar.forget("c1");
        registrar.record(&message).await.unwrap();
        // The engine of this process.
        let engine_side = registrar.forgetting_registry();
        assert!(engine_side.retire("c1", "404", Utc::now()).await.unwrap());
        assert!(
            registrar.record(&message).await.unwrap().wrote,
            "written at once"
        );
        assert!(
            registry
                .get("c1")
                .await
                .unwrap()
                .unwrap()
                .status
                .is_active()
        );
        assert!(engine_side.get("c1").await.unwrap().is_some());
    }

    #[test]
    fn status_serializes_flat() {
        let status = Status::Retired {
            retired_at: DateTime::from_timestamp(0, 0).unwrap(),
            reason: "uninstalled".into(),
        };
        let value = serde_json::to_value(&status).unwrap();
        assert_eq!(value["status"], "retired");
        assert_eq!(value["reason"], "uninstalled");
        assert!(!status.is_active());
    }
}
