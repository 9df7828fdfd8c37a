//! Folding held notifications into the bot's answer to the user's next message.
//!
//! While the user is talking to the bot, the engine holds non-urgent notifications and notes
//! their ids in the conversation's registration ([`ConversationRegistry::hold`]). The next
//! turn's registry write returns those ids; [`Folder::take`] claims each notification (the
//! same claim the engine makes, so exactly one of them sends it), the bot appends them to its
//! reply — one activity, not a second bubble — and [`Folder::sent`] records them Sent with the
//! reply's activity id. If the reply fails, [`Folder::unsent`] gives them back to the engine,
//! which delivers them once the conversation is quiet.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::digest;
use super::notification::{
    Claim, Content, Notification, NotificationId, NotificationStore, Outcome,
};
use crate::registry::ConversationRegistry;
use crate::schema::{Activity, text_format_of};

/// How long the bot holds a notification it is folding: long enough to send one reply.
const FOLD_LEASE: Duration = Duration::from_secs(30);

/// Folds held notifications into replies. Built once per process.
pub struct Folder {
    store: Arc<dyn NotificationStore>,
    registry: Arc<dyn ConversationRegistry>,
}

/// Notifications claimed for one reply.
#[derive(Debug, Default)]
pub struct Folded {
    conversation: String,
    notifications: Vec<Notification>,
    /// Every id read from the held set that is settled by this reply (folded, or found sent
    /// already): removed from the set once the reply is sent.
    settled: Vec<String>,
}

impl Folded {
    pub fn is_empty(&self) -> bool {
        self.notifications.is_empty()
    }

    /// The notifications' ids, for logs and tests.
    pub fn ids(&self) -> Vec<&NotificationId> {
        self.notifications.iter().map(|n| &n.id).collect()
    }

    /// Appends the notifications to `reply`: their text (summarised as a digest when several
    /// are of one kind) as a paragraph after the reply's own, their attachments after its own.
    pub fn append_to(&self, reply: &mut Activity) {
        if self.notifications.is_empty() {
            return;
        }
        let contents: Vec<&Content> = self.notifications.iter().map(|n| &n.content).collect();
        let folded = digest::merge(&contents).to_activity();
        if let Some(text) = folded.text.filter(|t| !t.is_empty()) {
            let markdown = [reply.text_format.as_deref(), folded.text_format.as_deref()]
                .contains(&Some("markdown"));
            let combined = match reply.text.take().filter(|t| !t.is_empty()) {
                Some(own) => format!("{own}\n\n{text}"),
                None => text,
            };
            reply.text_format = Some(if markdown {
                "markdown".to_owned()
            } else {
                text_format_of(&combined).to_owned()
            });
            reply.text = Some(combined);
        }
        if let Some(serde_json::Value::Array(added)) = folded.extra.get("attachments") {
            match reply.extra.get_mut("attachments") {
                Some(serde_json::Value::Array(own)) => own.extend(added.iter().cloned()),
                _ => {
                    reply.extra.insert(
                        "attachments".to_owned(),
                        serde_json::Value::Array(added.clone()),
                    );
                }
            }
        }
    }
}

impl Folder {
    pub fn new(store: Arc<dyn NotificationStore>, registry: Arc<dyn ConversationRegistry>) -> Self {
        Folder { store, registry }
    }

    /// Claims the notifications `held` for `conversation`. One the engine is sending right now
    /// (a live lease) is left to it; one already sent or failed, or unknown, is only dropped
    /// from the held set. Store errors are logged and the reply goes out without them: the
    /// engine still delivers them after the quiet period.
    pub async fn take(&self, conversation: &str, held: &[String]) -> Folded {
        let mut folded = Folded {
            conversation: conversation.to_owned(),
            ..Folded::default()
        };
        let now = Utc::now();
        let lease_until = now + chrono::Duration::from_std(FOLD_LEASE).unwrap_or_default();
        for id in held {
            let Ok(parsed) = NotificationId::parse(id) else {
                folded.settled.push(id.clone());
                continue;
            };
            match self.store.claim(&parsed, now, lease_until).await {
                Ok(Claim::Claimed(notification)) => {
                    let belongs = notification.target.conversation.id == conversation
                        && notification.update_of.is_none();
                    if belongs {
                        folded.settled.push(id.clone());
                        folded.notifications.push(notification);
                    } else {
                        // Not this conversation's to fold: back to the engine untouched.
                        self.record(&parsed, Outcome::Released).await;
                    }
                }
                Ok(Claim::Final(_) | Claim::NotFound) => folded.settled.push(id.clone()),
                Ok(Claim::Busy(_)) => {}
                Err(error) => {
                    tracing::warn!(error = %error, notification = %id, "could not claim a held notification; the engine will deliver it");
                }
            }
        }
        folded
    }

    /// The reply carrying `folded` was sent as `activity_id`: each notification is Sent, and
    /// the settled ids leave the held set.
    pub async fn sent(&self, folded: Folded, activity_id: Option<String>) {
        for notification in &folded.notifications {
            self.record(
                &notification.id,
                Outcome::Sent {
                    activity_id: activity_id.clone(),
                },
            )
            .await;
            tracing::info!(
                notification = %notification.id,
                correlation_id = %notification.correlation_id,
                "held notification sent with the reply"
            );
        }
        if let Err(error) = self
            .registry
            .release(&folded.conversation, &folded.settled)
            .await
        {
            // Harmless: a stale id is dropped the next time it is read.
            tracing::warn!(error = %error, "could not clear the held notifications");
        }
    }

    /// The reply failed: the notifications go back to the engine, unattempted.
    pub async fn unsent(&self, folded: Folded) {
        for notification in &folded.notifications {
            self.record(&notification.id, Outcome::Released).await;
        }
    }

    async fn record(&self, id: &NotificationId, outcome: Outcome) {
        if let Err(error) = self.store.record(id, outcome.clone(), Utc::now()).await {
            // A Sent lost here leaves the claim to lapse: the engine then sends it again, once.
            tracing::error!(error = %error, notification = %id, ?outcome, "could not record a folded notification");
        }
    }
}
