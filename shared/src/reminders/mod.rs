//! Reminders: `remind me in 10 minutes to stretch`, `remind me at 17:30 to call Bob`,
//! `reminders`, `cancel reminder N`.
//!
//! A reminder is a producer of the [`crate::delivery`] engine, and the engine knows nothing
//! of it. When the user asks, [`Reminders`] creates the reminder's [`Notification`] (text
//! `Reminder: stretch`, target = this turn's conversation) in the notification store, state
//! Queued, **without queueing it**, and asks a [`ReminderScheduler`] to put the notification's
//! delivery message on the notifications queue at the due time. From then on it is an
//! ordinary notification: the engine delivers it when the message arrives, in order and
//! within the channel's limits.
//!
//! Cancelling records the notification `Failed { reason: "cancelled" }` first — so a fire
//! that races the cancel finds it final and sends nothing — then forgets the reminder and
//! deletes its schedule.
//!
//! - [`parse`]: the time expressions (`in 10 minutes`, `at 17:30`, `at 5pm`, …).
//! - [`service`]: [`Reminders`], what the three commands do and answer.
//! - The ports, here: [`ReminderStore`] (each conversation's reminders and its next number)
//!   and [`ReminderScheduler`] (a one-time "put this message on the queue at T").
//!
//! Adapters: [`crate::adapters::local_reminders`] (in memory, and an in-process timer) and
//! [`crate::adapters::dynamodb_reminders`] and [`crate::adapters::eventbridge`] (AWS).

pub mod parse;
pub mod service;

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::delivery::Notification;
use crate::delivery::{DeliveryMessage, NotificationId, StoreError};

pub use service::{ReminderError, Reminders};

/// The `rem-` prefix of a reminder's notification id and schedule name.
pub const ID_PREFIX: &str = "rem-";

/// A reminder's id: 32 random hex digits, unique across conversations. Its notification id
/// and its schedule name are both `rem-<id>` ([`Reminder::notification_id`],
/// [`Reminder::schedule_name`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReminderId(String);

/// Why a string is not a reminder id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a reminder id (1–32 characters of a-z 0-9)")]
pub struct InvalidReminderId;

impl ReminderId {
    pub fn random() -> Self {
        ReminderId(format!(
            "{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        ))
    }

    pub fn parse(text: &str) -> Result<Self, InvalidReminderId> {
        let valid = !text.is_empty()
            && text.len() <= 32
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        if valid {
            Ok(ReminderId(text.to_owned()))
        } else {
            Err(InvalidReminderId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReminderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ReminderId {
    type Error = InvalidReminderId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ReminderId::parse(&value)
    }
}

impl From<ReminderId> for String {
    fn from(id: ReminderId) -> String {
        id.0
    }
}

/// The name of a one-time schedule: 1–64 characters of `[0-9a-zA-Z-_.]` (EventBridge
/// Scheduler's rule, which the local timer keeps too).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScheduleName(String);

/// Why a string is not a schedule name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a schedule name (1–64 characters of 0-9 a-z A-Z - _ .)")]
pub struct InvalidScheduleName;

impl ScheduleName {
    pub const MAX_LEN: usize = 64;

    pub fn parse(text: &str) -> Result<Self, InvalidScheduleName> {
        let valid = !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if valid {
            Ok(ScheduleName(text.to_owned()))
        } else {
            Err(InvalidScheduleName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ScheduleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One pending (or recently due) reminder of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reminder {
    /// "Reminder N": sequential within its conversation, never reused there.
    pub number: u32,
    pub id: ReminderId,
    /// When it goes off.
    pub due: DateTime<Utc>,
    /// What the user asked to be reminded of, as typed.
    pub text: String,
    /// The user's UTC offset when they asked, in seconds east (from the activity's
    /// `localTimestamp`), to say "your time" when the asker's own is not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_seconds: Option<i32>,
    pub created_at: DateTime<Utc>,
}

impl Reminder {
    /// The id of the notification that delivers it: `rem-<id>`.
    pub fn notification_id(&self) -> NotificationId {
        NotificationId::parse(&format!("{ID_PREFIX}{}", self.id))
            .expect("rem- and 32 hex digits is a notification id")
    }

    /// The name of its one-time schedule: `rem-<id>`.
    pub fn schedule_name(&self) -> ScheduleName {
        ScheduleName::parse(&format!("{ID_PREFIX}{}", self.id))
            .expect("rem- and 32 hex digits is a schedule name")
    }

    pub fn offset(&self) -> Option<FixedOffset> {
        self.offset_seconds.and_then(FixedOffset::east_opt)
    }
}

/// The key of a conversation's reminders: its channel and its id. A conversation's
/// reminders are only ever read and written under its own key, so `cancel reminder N` can
/// only reach the reminders of the conversation it is typed in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationKey {
    pub channel: String,
    pub conversation: String,
}

impl fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.channel, self.conversation)
    }
}

/// A conversation's reminders, as stored: the pending ones (and those due within the last
/// hour, pruned lazily), the next number to give, and the version the store compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationReminders {
    pub next_number: u32,
    pub reminders: Vec<Reminder>,
    /// How many times the record was written; 0 for one never stored.
    pub version: u64,
}

impl Default for ConversationReminders {
    fn default() -> Self {
        ConversationReminders {
            next_number: 1,
            reminders: Vec::new(),
            version: 0,
        }
    }
}

impl ConversationReminders {
    /// The reminders still to go off at `now`, soonest first.
    pub fn pending(&self, now: DateTime<Utc>) -> Vec<&Reminder> {
        let mut pending: Vec<&Reminder> = self.reminders.iter().filter(|r| r.due > now).collect();
        pending.sort_by_key(|r| (r.due, r.number));
        pending
    }

    pub fn find(&self, number: u32) -> Option<&Reminder> {
        self.reminders.iter().find(|r| r.number == number)
    }
}

/// Each conversation's reminders.
///
/// Contract, for every adapter:
/// - `load` returns the conversation's record, or for a conversation with none the empty
///   record (next number 1, version 0).
/// - `save` writes `record` only if the stored record's version is still `record.version`
///   (0: none is stored), storing it with version + 1, and returns `true`; otherwise it
///   writes nothing and returns `false` (another turn wrote first: load again and redo).
/// - A record is only reachable through its own [`ConversationKey`].
/// - Failures are [`StoreError::Unavailable`] (retryable), [`StoreError::Corrupt`], or
///   [`StoreError::Full`] (a bounded in-memory store).
#[async_trait]
pub trait ReminderStore: Send + Sync {
    async fn load(&self, key: &ConversationKey) -> Result<ConversationReminders, StoreError>;
    async fn save(
        &self,
        key: &ConversationKey,
        record: &ConversationReminders,
    ) -> Result<bool, StoreError>;
}

/// Errors of the scheduler port.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The scheduler failed or could not be reached; retrying may succeed.
    #[error("reminder scheduler unavailable: {0}")]
    Unavailable(String),
    /// No more schedules can be held (the local timer's bound, a service quota).
    #[error("reminder scheduler full: {0}")]
    Full(String),
}

/// One-time schedules that put a delivery message on the notifications queue.
///
/// Contract, for every adapter:
/// - `schedule` returns Ok once the schedule is durably held (EventBridge) or armed (the
///   local timer): at `at` — or as soon after as the backend's precision allows — `message`
///   is put on the notifications queue, in its conversation's message group, once. A time
///   already past fires as soon as possible. Scheduling a name that exists is Ok and changes
///   nothing (a retried turn).
/// - `cancel` removes the schedule so it never fires. A name that is unknown, or whose
///   schedule already fired, is Ok: the caller stops a fire that races the cancel through
///   the notification's state, not through this call.
/// - A fired schedule leaves nothing behind (EventBridge deletes it after completion).
#[async_trait]
pub trait ReminderScheduler: Send + Sync {
    async fn schedule(
        &self,
        name: &ScheduleName,
        at: DateTime<Utc>,
        message: &DeliveryMessage,
    ) -> Result<(), ScheduleError>;
    async fn cancel(&self, name: &ScheduleName) -> Result<(), ScheduleError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_names_and_notification_ids_agree() {
        let id = ReminderId::random();
        assert_eq!(id.as_str().len(), 32);
        let reminder = Reminder {
            number: 1,
            id: id.clone(),
            due: Utc::now(),
            text: "stretch".into(),
            offset_seconds: None,
            created_at: Utc::now(),
        };
        assert_eq!(reminder.notification_id().as_str(), format!("rem-{id}"));
        assert_eq!(reminder.schedule_name().as_str(), format!("rem-{id}"));
        assert!(ReminderId::parse("ABC").is_err());
        assert!(ReminderId::parse("").is_err());
        assert!(ScheduleName::parse(&"a".repeat(64)).is_ok());
        assert!(ScheduleName::parse(&"a".repeat(65)).is_err());
        assert!(ScheduleName::parse("a:b").is_err());
        assert!(ScheduleName::parse("rem-0f.x_Y").is_ok());
    }

    #[test]
    fn pending_is_what_is_still_to_come_soonest_first() {
        let now = Utc::now();
        let at = |secs: i64, number: u32| Reminder {
            number,
            id: ReminderId::random(),
            due: now + chrono::Duration::seconds(secs),
            text: format!("r{number}"),
            offset_seconds: None,
            created_at: now,
        };
        let record = ConversationReminders {
            next_number: 4,
            reminders: vec![at(60, 1), at(-5, 2), at(10, 3)],
            version: 3,
        };
        let numbers: Vec<u32> = record.pending(now).iter().map(|r| r.number).collect();
        assert_eq!(numbers, vec![3, 1]);
        assert_eq!(record.find(2).map(|r| r.text.as_str()), Some("r2"));
        assert!(record.find(4).is_none());
    }
}
