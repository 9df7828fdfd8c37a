//! [`Reminders`]: what `remind me …`, `reminders` and `cancel reminder N` do, and what the
//! bot answers.
//!
//! | input | behaviour |
//! |---|---|
//! | `remind me in 10 minutes to stretch`, `remind me at 17:30 to call Bob` | [`Reminders::remind`]: "Reminder N is set: …" with the time in UTC and the user's |
//! | `reminders` / `list reminders` / `show reminders` | [`Reminders::pending`]: this conversation's pending reminders, or "There are no pending reminders …" |
//! | `cancel reminder N` / `cancel N` | [`Reminders::cancel`]: "Reminder N (…) is cancelled.", or why not |
//! | bad times, no text, too many, too long | a reply saying what to type; nothing stored or scheduled |

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};
use serde_json::Value;

use super::parse::{ParseError, parse_request};
use super::{
    ConversationKey, ConversationReminders, Reminder, ReminderId, ReminderScheduler, ReminderStore,
    ScheduleError,
};
use crate::delivery::{
    Content, DeliveryState, Notification, NotificationId, Notifier, Outcome, Source, StoreError,
};
use crate::schema::{Activity, ConversationReference};

/// The reason a cancelled reminder's notification is recorded Failed with.
pub const CANCELLED: &str = "cancelled";

/// How many times a write that lost a race with another turn is redone.
const UPDATE_ATTEMPTS: usize = 5;

/// Bounds of what a conversation may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReminderLimits {
    /// Pending reminders one conversation may have.
    pub max_pending: usize,
    /// The longest reminder text, in characters.
    pub max_text_chars: usize,
    /// How long a reminder stays in its conversation's record after it is due, so that
    /// `cancel reminder N` can still tell "went off" or stop a late fire (EventBridge
    /// Scheduler fires within the minute).
    pub keep_after_due: chrono::Duration,
    /// The most reminders a record keeps, pending or recently due: the item stays small.
    pub max_kept: usize,
}

impl Default for ReminderLimits {
    fn default() -> Self {
        ReminderLimits {
            max_pending: 50,
            max_text_chars: 1000,
            keep_after_due: chrono::Duration::hours(1),
            max_kept: 100,
        }
    }
}

/// A reminder command, parsed from a message's text (mentions already removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReminderCommand {
    /// `remind …`: the whole text, as typed.
    Remind(String),
    /// `reminders`, `list reminders`, `show reminders`, `my reminders`.
    List,
    /// `cancel reminder N`, `cancel N`, `cancel`.
    Cancel(CancelArgument),
}

/// What followed `cancel [reminder]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelArgument {
    Number(u32),
    Missing,
    NotANumber(String),
}

impl ReminderCommand {
    /// The reminder command `text` is, if it is one. Keywords in any case.
    pub fn parse(text: &str) -> Option<ReminderCommand> {
        let text = text.trim();
        let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let number = |word: &str| match word.trim_start_matches('#').parse() {
            Ok(number) => CancelArgument::Number(number),
            Err(_) => CancelArgument::NotANumber(word.chars().take(40).collect()),
        };
        Some(match words.as_slice() {
            ["remind", ..] => ReminderCommand::Remind(text.to_owned()),
            ["reminders"] | ["list" | "show" | "my", "reminders"] => ReminderCommand::List,
            ["cancel"] | ["cancel", "reminder"] => ReminderCommand::Cancel(CancelArgument::Missing),
            ["cancel", arg] | ["cancel", "reminder", arg] => ReminderCommand::Cancel(number(arg)),
            ["cancel", "reminder", rest @ ..] | ["cancel", rest @ ..] => ReminderCommand::Cancel(
                CancelArgument::NotANumber(rest.join(" ").chars().take(40).collect()),
            ),
            _ => return None,
        })
    }
}

/// Why a reminder command failed (the user is told something went wrong).
#[derive(Debug, thiserror::Error)]
pub enum ReminderError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("the conversation's reminders kept changing; gave up after {0} attempts")]
    Contention(usize),
}

/// What [`Reminders::remind`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Remind {
    /// Stored and scheduled.
    Set(Reminder),
    /// Not understood: nothing stored or scheduled.
    Invalid(ParseError),
    /// The text has this many characters, over the limit: nothing stored or scheduled.
    TooLong(usize),
    /// The conversation has this many pending reminders already: nothing stored or
    /// scheduled.
    Full(usize),
}

/// What [`Reminders::cancel`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancel {
    /// It will not go off.
    Cancelled(Reminder),
    /// It had gone off already.
    AlreadyWentOff(Reminder),
    /// It is being sent at this moment.
    GoingOff(Reminder),
    /// This conversation had a reminder with that number; it went off or was cancelled.
    NoLongerPending(u32),
    /// This conversation never had a reminder with that number.
    NoSuch(u32),
}

impl Cancel {
    /// The word logs use.
    pub fn name(&self) -> &'static str {
        match self {
            Cancel::Cancelled(_) => "cancelled",
            Cancel::AlreadyWentOff(_) => "alreadyWentOff",
            Cancel::GoingOff(_) => "goingOff",
            Cancel::NoLongerPending(_) => "noLongerPending",
            Cancel::NoSuch(_) => "noSuch",
        }
    }
}

/// Reminders over their ports. Built once per process.
pub struct Reminders {
    store: Arc<dyn ReminderStore>,
    scheduler: Arc<dyn ReminderScheduler>,
    notifier: Arc<Notifier>,
    limits: ReminderLimits,
}

impl Reminders {
    pub fn new(
        store: Arc<dyn ReminderStore>,
        scheduler: Arc<dyn ReminderScheduler>,
        notifier: Arc<Notifier>,
    ) -> Self {
        Reminders {
            store,
            scheduler,
            notifier,
            limits: ReminderLimits::default(),
        }
    }

    pub fn with_limits(mut self, limits: ReminderLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> &ReminderLimits {
        &self.limits
    }

    /// Runs `command` for the conversation `activity` came from; the reply's text (Markdown).
    pub async fn answer(
        &self,
        activity: &Activity,
        command: ReminderCommand,
        now: DateTime<Utc>,
    ) -> Result<String, ReminderError> {
        let offset = user_offset(activity);
        Ok(match command {
            ReminderCommand::Remind(text) => match self.remind(activity, &text, now).await? {
                Remind::Set(reminder) => {
                    let n = reminder.number;
                    format!(
                        "Reminder {n} is set: \"{}\", {}, in {}. To cancel it, type **cancel reminder {n}**.",
                        reminder.text,
                        when(reminder.due, offset),
                        relative(reminder.due - now)
                    )
                }
                Remind::Invalid(error) => error.to_string(),
                Remind::TooLong(chars) => format!(
                    "That reminder is too long ({chars} characters); keep it to {}.",
                    self.limits.max_text_chars
                ),
                Remind::Full(pending) => format!(
                    "This conversation already has {pending} pending reminders, the most it can have. Cancel one first: type **reminders** to see them."
                ),
            },
            ReminderCommand::List => {
                let pending = self.pending(activity, now).await?;
                if pending.is_empty() {
                    "There are no pending reminders in this conversation. Set one with **remind me in 10 minutes to stretch**.".to_owned()
                } else {
                    let mut text = String::from("Pending reminders in this conversation:\n\n");
                    for reminder in &pending {
                        text.push_str(&format!(
                            "- **Reminder {}**, {}, in {}: {}\n",
                            reminder.number,
                            when(reminder.due, offset.or(reminder.offset())),
                            relative(reminder.due - now),
                            reminder.text
                        ));
                    }
                    text.push_str("\nTo cancel one, type **cancel reminder** and its number.");
                    text
                }
            }
            ReminderCommand::Cancel(CancelArgument::Missing) => {
                "Which reminder? Type **cancel reminder** and its number, for example **cancel reminder 1**; **reminders** lists them.".to_owned()
            }
            ReminderCommand::Cancel(CancelArgument::NotANumber(word)) => format!(
                "\"{word}\" is not a reminder number. Type **cancel reminder** and its number, for example **cancel reminder 1**."
            ),
            ReminderCommand::Cancel(CancelArgument::Number(number)) => {
                match self.cancel(activity, number, now).await? {
                    Cancel::Cancelled(r) => format!("Reminder {} (\"{}\") is cancelled.", r.number, r.text),
                    Cancel::AlreadyWentOff(r) => {
                        format!("Reminder {} (\"{}\") already went off.", r.number, r.text)
                    }
                    Cancel::GoingOff(r) => {
                        format!("Reminder {} (\"{}\") is going off right now.", r.number, r.text)
                    }
                    Cancel::NoLongerPending(n) => format!(
                        "Reminder {n} is no longer pending: it went off or was cancelled. Type **reminders** to see the pending ones."
                    ),
                    Cancel::NoSuch(n) => format!(
                        "There is no reminder {n} in this conversation. Type **reminders** to see the pending ones."
                    ),
                }
            }
        })
    }

    /// `remind …`: parses the request; if it is valid and the conversation has room, creates
    /// the reminder's notification (Queued, not queued), records the reminder under the next
    /// number, and schedules the notification's delivery message for the due time.
    ///
    /// Costs one read and one conditional write of the conversation's record, one
    /// notification write and one schedule.
    pub async fn remind(
        &self,
        activity: &Activity,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<Remind, ReminderError> {
        let offset = user_offset(activity);
        let request = match parse_request(text, now, offset) {
            Ok(request) => request,
            Err(error) => return Ok(Remind::Invalid(error)),
        };
        let chars = request.text.chars().count();
        if chars > self.limits.max_text_chars {
            return Ok(Remind::TooLong(chars));
        }
        let key = conversation_key(activity);
        let mut record = self.load(&key, now).await?;
        let pending = record.pending(now).len();
        if pending >= self.limits.max_pending {
            return Ok(Remind::Full(pending));
        }

        let mut reminder = Reminder {
            number: 0,
            id: ReminderId::random(),
            due: request.due,
            text: request.text,
            offset_seconds: offset.map(|o| o.local_minus_utc()),
            created_at: now,
        };
        let mut notification = Notification::new(
            reminder.notification_id(),
            Source::Reminder {
                id: reminder.id.to_string(),
            },
            ConversationReference::from_incoming(activity),
            Content::text(format!("Reminder: {}", reminder.text)),
            now,
        );
        // A reminder is due now: it interrupts.
        notification.urgent = true;
        // Stored, not queued: the scheduler queues its message at the due time.
        self.notifier.store().create(&notification).await?;
        let mut attempts = 0;
        loop {
            let pending = record.pending(now).len();
            if pending >= self.limits.max_pending {
                // Another turn took the last place meanwhile.
                self.abandon(&notification.id, "not scheduled: too many reminders", now)
                    .await;
                return Ok(Remind::Full(pending));
            }
            reminder.number = record.next_number;
            record.next_number += 1;
            record.reminders.push(reminder.clone());
            if self.store.save(&key, &record).await? {
                break;
            }
            attempts += 1;
            if attempts == UPDATE_ATTEMPTS {
                self.abandon(&notification.id, "not scheduled: contention", now)
                    .await;
                return Err(ReminderError::Contention(attempts));
            }
            record = self.load(&key, now).await?;
        }

        if let Err(error) = self
            .scheduler
            .schedule(
                &reminder.schedule_name(),
                reminder.due,
                &notification.message(),
            )
            .await
        {
            tracing::error!(error = %error, reminder = %reminder.id, "could not schedule the reminder; undoing it");
            self.abandon(&notification.id, "not scheduled", now).await;
            if let Err(undo) = self.forget(&key, &reminder.id, None, now).await {
                tracing::error!(error = %undo, reminder = %reminder.id, "could not forget the unscheduled reminder");
            }
            return Err(error.into());
        }
        tracing::info!(
            reminder = %reminder.id,
            number = reminder.number,
            due = %reminder.due,
            notification = %notification.id,
            correlation_id = %notification.correlation_id,
            conversation = %key.conversation,
            "reminder scheduled"
        );
        Ok(Remind::Set(reminder))
    }

    /// This conversation's pending reminders, soonest first.
    pub async fn pending(
        &self,
        activity: &Activity,
        now: DateTime<Utc>,
    ) -> Result<Vec<Reminder>, ReminderError> {
        let record = self.load(&conversation_key(activity), now).await?;
        Ok(record.pending(now).into_iter().cloned().collect())
    }

    /// `cancel reminder N`, in this conversation only: the notification is recorded Failed
    /// ("cancelled") first, so a fire racing the cancel finds it final and sends nothing;
    /// then the reminder is forgotten and its schedule deleted.
    pub async fn cancel(
        &self,
        activity: &Activity,
        number: u32,
        now: DateTime<Utc>,
    ) -> Result<Cancel, ReminderError> {
        let key = conversation_key(activity);
        let record = self.load(&key, now).await?;
        let Some(reminder) = record.find(number).cloned() else {
            return Ok(if number >= 1 && number < record.next_number {
                Cancel::NoLongerPending(number)
            } else {
                Cancel::NoSuch(number)
            });
        };
        let id = reminder.notification_id();
        let state = self
            .notifier
            .store()
            .get(&id)
            .await?
            .map(|notification| notification.state);
        let outcome = match state {
            Some(DeliveryState::Sent { .. }) => Cancel::AlreadyWentOff(reminder.clone()),
            Some(DeliveryState::Sending { lease_until }) if lease_until > now => {
                Cancel::GoingOff(reminder.clone())
            }
            _ => {
                self.notifier
                    .store()
                    .record(
                        &id,
                        Outcome::Failed {
                            reason: CANCELLED.to_owned(),
                        },
                        now,
                    )
                    .await?;
                // The notification is final now: a schedule that still fires sends nothing,
                // so a failure here only leaves a harmless schedule behind.
                if let Err(error) = self.scheduler.cancel(&reminder.schedule_name()).await {
                    tracing::warn!(error = %error, reminder = %reminder.id, "could not delete the cancelled reminder's schedule; its fire will send nothing");
                }
                Cancel::Cancelled(reminder.clone())
            }
        };
        self.forget(&key, &reminder.id, Some(record), now).await?;
        tracing::info!(reminder = %reminder.id, number, outcome = outcome.name(), "reminder cancel");
        Ok(outcome)
    }

    /// The conversation's record, pruned of reminders long gone.
    async fn load(
        &self,
        key: &ConversationKey,
        now: DateTime<Utc>,
    ) -> Result<ConversationReminders, ReminderError> {
        let mut record = self.store.load(key).await?;
        prune(&mut record, now, &self.limits);
        Ok(record)
    }

    /// Removes reminder `id` from the conversation's record, if it is there; `loaded` is the
    /// record as last read, tried first.
    async fn forget(
        &self,
        key: &ConversationKey,
        id: &ReminderId,
        mut loaded: Option<ConversationReminders>,
        now: DateTime<Utc>,
    ) -> Result<(), ReminderError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let mut record = match loaded.take() {
                Some(record) => record,
                None => self.load(key, now).await?,
            };
            let Some(index) = record.reminders.iter().position(|r| &r.id == id) else {
                return Ok(());
            };
            record.reminders.remove(index);
            if self.store.save(key, &record).await? {
                return Ok(());
            }
        }
        Err(ReminderError::Contention(UPDATE_ATTEMPTS))
    }

    /// Marks a created notification that will never be scheduled Failed, so it is not left
    /// Queued forever (a Failed one gets the store's retention).
    async fn abandon(&self, id: &NotificationId, reason: &str, now: DateTime<Utc>) {
        if let Err(error) = self
            .notifier
            .store()
            .record(
                id,
                Outcome::Failed {
                    reason: reason.to_owned(),
                },
                now,
            )
            .await
        {
            tracing::warn!(error = %error, notification = %id, "could not mark an unscheduled reminder's notification failed");
        }
    }
}

/// Drops reminders due longer ago than the limits keep them, then, if the record is still
/// over its size, the longest-due ones (pending ones are at most `max_pending`, below it).
fn prune(record: &mut ConversationReminders, now: DateTime<Utc>, limits: &ReminderLimits) {
    record
        .reminders
        .retain(|r| r.due > now - limits.keep_after_due);
    if record.reminders.len() > limits.max_kept {
        record.reminders.sort_by_key(|r| (r.due, r.number));
        let excess = record.reminders.len() - limits.max_kept;
        let due: Vec<ReminderId> = record
            .reminders
            .iter()
            .filter(|r| r.due <= now)
            .take(excess)
            .map(|r| r.id.clone())
            .collect();
        record.reminders.retain(|r| !due.contains(&r.id));
    }
}

/// The key of the conversation `activity` came from.
pub fn conversation_key(activity: &Activity) -> ConversationKey {
    ConversationKey {
        channel: activity.channel_id.clone().unwrap_or_default(),
        conversation: activity.conversation_id().unwrap_or_default().to_owned(),
    }
}

/// The user's UTC offset, from the activity's `localTimestamp` (RFC 3339 with an offset, as
/// Teams, Web Chat and the Emulator send it). `localTimezone` (an IANA name) is not read: the
/// offset is enough for "the next 17:30", and only a daylight-saving change before the
/// reminder is due makes it an hour off.
pub fn user_offset(activity: &Activity) -> Option<FixedOffset> {
    let text = activity
        .extra
        .get("localTimestamp")
        .and_then(Value::as_str)?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|local| *local.offset())
}

/// `10:10:05 UTC on Sat 21 Nov 2026 (11:10:05 your time, UTC+01:00)`; the user's part only
/// when their offset is known and not UTC's, with their date when it differs.
pub fn when(due: DateTime<Utc>, offset: Option<FixedOffset>) -> String {
    let clock = |t: chrono::NaiveTime| {
        if chrono::Timelike::second(&t) == 0 {
            t.format("%H:%M").to_string()
        } else {
            t.format("%H:%M:%S").to_string()
        }
    };
    let utc = format!(
        "at {} UTC on {}",
        clock(due.time()),
        due.format("%a %-d %b %Y")
    );
    match offset {
        Some(offset) if offset.local_minus_utc() != 0 => {
            let local = due.with_timezone(&offset);
            let date = if local.date_naive() == due.date_naive() {
                String::new()
            } else {
                format!(" on {}", local.format("%a %-d %b"))
            };
            format!(
                "{utc} ({}{date} your time, UTC{offset})",
                clock(local.time())
            )
        }
        _ => utc,
    }
}

/// `10 minutes`, `1 hour 30 minutes`, `364 days 23 hours`: the two largest units, rounded up
/// to whole seconds.
pub fn relative(ahead: chrono::Duration) -> String {
    let seconds = (ahead.num_milliseconds().max(0) + 999) / 1000;
    let units = [
        (86_400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let mut parts = Vec::new();
    let mut rest = seconds;
    for (size, name) in units {
        let count = rest / size;
        rest %= size;
        if count > 0 {
            parts.push(format!(
                "{count} {name}{}",
                if count == 1 { "" } else { "s" }
            ));
        } else if !parts.is_empty() {
            // Stop at the first empty unit after the first: "1 hour", not "1 hour 0 minutes 5 seconds".
            break;
        }
        if parts.len() == 2 {
            break;
        }
    }
    if parts.is_empty() {
        "0 seconds".to_owned()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_recognised_in_any_case() {
        assert_eq!(
            ReminderCommand::parse("Remind me in 5 seconds to Stretch"),
            Some(ReminderCommand::Remind(
                "Remind me in 5 seconds to Stretch".into()
            ))
        );
        for list in [
            "reminders",
            "Reminders",
            "list reminders",
            "show reminders",
            "my reminders",
        ] {
            assert_eq!(
                ReminderCommand::parse(list),
                Some(ReminderCommand::List),
                "{list}"
            );
        }
        assert_eq!(
            ReminderCommand::parse("cancel reminder 3"),
            Some(ReminderCommand::Cancel(CancelArgument::Number(3)))
        );
        assert_eq!(
            ReminderCommand::parse("Cancel #3"),
            Some(ReminderCommand::Cancel(CancelArgument::Number(3)))
        );
        assert_eq!(
            ReminderCommand::parse("cancel reminder"),
            Some(ReminderCommand::Cancel(CancelArgument::Missing))
        );
        assert_eq!(
            ReminderCommand::parse("cancel reminder abc"),
            Some(ReminderCommand::Cancel(CancelArgument::NotANumber(
                "abc".into()
            )))
        );
        assert_eq!(
            ReminderCommand::parse("cancel all of them"),
            Some(ReminderCommand::Cancel(CancelArgument::NotANumber(
                "all of them".into()
            )))
        );
        for other in ["show", "show jobs", "run", "done 3", "reminder", "help", ""] {
            assert_eq!(ReminderCommand::parse(other), None, "{other}");
        }
    }

    #[test]
    fn times_are_said_in_utc_and_in_the_users_time() {
        let due = DateTime::parse_from_rfc3339("2026-11-21T10:10:05Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(when(due, None), "at 10:10:05 UTC on Sat 21 Nov 2026");
        assert_eq!(
            when(due, FixedOffset::east_opt(0)),
            "at 10:10:05 UTC on Sat 21 Nov 2026"
        );
        assert_eq!(
            when(due, FixedOffset::east_opt(3600)),
            "at 10:10:05 UTC on Sat 21 Nov 2026 (11:10:05 your time, UTC+01:00)"
        );
        let evening = DateTime::parse_from_rfc3339("2026-11-21T17:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            when(evening, FixedOffset::east_opt(-8 * 3600)),
            "at 17:30 UTC on Sat 21 Nov 2026 (09:30 your time, UTC-08:00)"
        );
        assert_eq!(
            when(evening, FixedOffset::east_opt(9 * 3600)),
            "at 17:30 UTC on Sat 21 Nov 2026 (02:30 on Sun 22 Nov your time, UTC+09:00)"
        );
    }

    #[test]
    fn durations_are_said_in_their_two_largest_units() {
        let s = chrono::Duration::seconds;
        assert_eq!(relative(s(5)), "5 seconds");
        assert_eq!(relative(s(1)), "1 second");
        assert_eq!(relative(chrono::Duration::milliseconds(4_001)), "5 seconds");
        assert_eq!(relative(s(600)), "10 minutes");
        assert_eq!(relative(s(5400)), "1 hour 30 minutes");
        assert_eq!(relative(s(3605)), "1 hour");
        assert_eq!(relative(s(86_400 + 7200 + 5)), "1 day 2 hours");
        assert_eq!(relative(s(365 * 86_400)), "365 days");
        assert_eq!(relative(s(-3)), "0 seconds");
    }

    #[test]
    fn the_offset_comes_from_local_timestamp() {
        let mut activity = Activity::message("x");
        assert_eq!(user_offset(&activity), None);
        activity.extra.insert(
            "localTimestamp".into(),
            Value::String("2026-11-21T02:00:00.1234567-08:00".into()),
        );
        assert_eq!(user_offset(&activity), FixedOffset::east_opt(-8 * 3600));
        activity
            .extra
            .insert("localTimestamp".into(), Value::String("yesterday".into()));
        assert_eq!(user_offset(&activity), None);
    }

    #[test]
    fn pruning_keeps_pending_ones_and_recent_ones() {
        let now = Utc::now();
        let limits = ReminderLimits {
            max_kept: 3,
            ..ReminderLimits::default()
        };
        let reminder = |number: u32, minutes: i64| Reminder {
            number,
            id: ReminderId::random(),
            due: now + chrono::Duration::minutes(minutes),
            text: String::new(),
            offset_seconds: None,
            created_at: now,
        };
        let mut record = ConversationReminders {
            next_number: 6,
            reminders: vec![
                reminder(1, -61),
                reminder(2, -30),
                reminder(3, -10),
                reminder(4, 5),
                reminder(5, 10),
            ],
            version: 1,
        };
        prune(&mut record, now, &limits);
        let mut kept: Vec<u32> = record.reminders.iter().map(|r| r.number).collect();
        kept.sort();
        assert_eq!(
            kept,
            vec![3, 4, 5],
            "an hour past due goes, then the oldest past due"
        );
    }
}
