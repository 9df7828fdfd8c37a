//! The conversation: what each incoming activity does (the table in `product.md`).
//!
//! | input | behaviour |
//! |---|---|
//! | every activity | first, its conversation is registered ([`Registrar`]): only registered, active conversations can be notified |
//! | installationUpdate remove, conversationUpdate removing the bot | the conversation is retired; no reply |
//! | conversationUpdate, members added (not the bot) | [`Bot::welcome`] |
//! | `run` / `run job` | [`Bot::run_job`] |
//! | `show` / `show jobs` | [`Bot::show_jobs`]: this tenant's jobs; an Adaptive Card on Teams, a Markdown table elsewhere |
//! | `done <number>` and its variants | [`Bot::done`] |
//! | event `jobComplete` / `jobCompleted` | [`Bot::job_complete_event`] |
//! | `remind me …`, `reminders`, `cancel reminder N` | [`Bot::reminder`] ([`crate::reminders`]) |
//! | anything else | help text |
//! | an error inside a turn | logged; "Sorry, it looks like something went wrong." |
//!
//! Completing a job never sends the proactive message from here: `done` and the event hand a
//! notification to the [`crate::delivery`] engine through its [`Notifier`], so a turn answers
//! within the channel's time limit and a delivery can be retried without the user. With it goes
//! a second notification that updates the job's "running" reply in place. A completion is not
//! urgent: the engine may hold it while the user is talking, and then the bot's answer to the
//! user's next message carries it ([`Folder`]).

use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::{Value, json};

use crate::connector::{ConnectorClient, ConnectorError};
use crate::delivery::fold::Folder;
use crate::delivery::{
    Content, DeliveryState, DigestLine, Notification, NotificationId, Notifier, NotifyError, Source,
};
use crate::jobs::{CompleteOutcome, Job, JobNumber, JobStatus, JobStore, StoreError};
use crate::registry::{Observation, Registrar, observe};
use crate::reminders::service::ReminderCommand;
use crate::reminders::{ReminderError, Reminders};
use crate::schema::{Activity, ConversationReference, activity_types};

pub const HELP_TEXT: &str = "Type **run** to start a job, **show** to list the jobs, or \
**done** followed by a job number to complete one. When a job completes I'll tell you in the \
conversation where you started it, even if you've moved on. Reminders: **remind me in 10 \
minutes to stretch** or **remind me at 17:30 to call Bob** (seconds to a year ahead); \
**reminders** lists this conversation's, **cancel reminder N** cancels one.";
pub const WELCOME_TEXT: &str = "Welcome to the proactive job bot!";
pub const SORRY_TEXT: &str = "Sorry, it looks like something went wrong.";
pub const EMPTY_LOG_TEXT: &str = "The job log is empty.";

/// Names of the event activity an external job system sends when a job finishes.
pub const JOB_COMPLETE_EVENTS: [&str; 2] = ["jobComplete", "jobCompleted"];

/// How many jobs `show` lists.
pub const SHOW_LIMIT: usize = 10;

/// How often `run` draws a fresh number after a collision before giving up.
const CREATE_ATTEMPTS: usize = 8;

/// What the user asked for, parsed from a message's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run,
    Show,
    Done(DoneArgument),
    /// `remind me …`, `reminders`, `cancel reminder N` ([`crate::reminders`]).
    Reminder(ReminderCommand),
    Help,
}

/// What followed `done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoneArgument {
    Number(JobNumber),
    Missing,
    NotANumber(String),
}

impl Command {
    /// Parses a message's text. Teams prefixes channel messages with `<at>Bot</at>`; mentions
    /// are dropped first. Case and surrounding spaces do not matter.
    pub fn parse(text: &str) -> Command {
        let text = strip_mentions(text);
        if let Some(command) = ReminderCommand::parse(&text) {
            return Command::Reminder(command);
        }
        let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["run"] | ["run", "job"] => Command::Run,
            ["show"] | ["show", "jobs"] => Command::Show,
            ["done"] | ["done", "job"] => Command::Done(DoneArgument::Missing),
            ["done", arg] | ["done", "job", arg] => Command::Done(match arg.parse() {
                Ok(number) => DoneArgument::Number(number),
                Err(_) => DoneArgument::NotANumber((*arg).to_owned()),
            }),
            ["done", ..] => Command::Done(DoneArgument::NotANumber(words[1..].join(" "))),
            _ => Command::Help,
        }
    }
}

fn strip_mentions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<at>") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</at>") {
            Some(end) => rest = &rest[start + end + "</at>".len()..],
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Why a turn failed.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error(transparent)]
    Delivery(#[from] crate::delivery::StoreError),
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Reminders(#[from] ReminderError),
    #[error("no unused job number found after {0} attempts")]
    NoFreeNumber(usize),
}

/// The conversation logic, with its ports. Built once per process.
pub struct Bot {
    store: Arc<dyn JobStore>,
    notifier: Arc<Notifier>,
    connector: ConnectorClient,
    reminders: Option<Arc<Reminders>>,
    registrar: Option<Registrar>,
    folder: Option<Folder>,
}

/// One incoming activity being answered.
struct Turn<'a> {
    activity: &'a Activity,
    /// Held notifications the first reply carries (message turns only).
    held: Mutex<Vec<String>>,
}

impl Bot {
    pub fn new(
        store: Arc<dyn JobStore>,
        notifier: Arc<Notifier>,
        connector: ConnectorClient,
    ) -> Self {
        Bot {
            store,
            notifier,
            connector,
            reminders: None,
            registrar: None,
            folder: None,
        }
    }

    /// Folds the notifications the engine holds for a conversation into the bot's answer to
    /// its next message (without, they wait for the quiet period).
    pub fn with_folder(mut self, folder: Folder) -> Self {
        self.folder = Some(folder);
        self
    }

    /// The bot with reminders (without, the reminder commands get the help text).
    pub fn with_reminders(mut self, reminders: Arc<Reminders>) -> Self {
        self.reminders = Some(reminders);
        self
    }

    /// Registers the conversation of every activity through `registrar` (without one, as in
    /// unit tests of the conversation alone, nothing is registered).
    pub fn with_registrar(mut self, registrar: Registrar) -> Self {
        self.registrar = Some(registrar);
        self
    }

    /// Handles one validated incoming activity. Errors inside the turn are logged and the user
    /// is told something went wrong; only a failure to tell them is returned.
    pub async fn on_turn(&self, activity: &Activity) -> Result<(), TurnError> {
        let (observation, held) = self.register(activity).await;
        if let Observation::Gone(_) = observation {
            // Uninstalled or removed: there is no one left to answer.
            return Ok(());
        }
        // Only a user's message is answered with held notifications folded in.
        let held = match activity.kind == activity_types::MESSAGE {
            true => held,
            false => Vec::new(),
        };
        let turn = Turn {
            activity,
            held: Mutex::new(held),
        };
        let Err(error) = self.dispatch(&turn).await else {
            return Ok(());
        };
        tracing::error!(
            error = %error,
            activity_type = %activity.kind,
            activity_id = activity.id.as_deref().unwrap_or_default(),
            conversation = activity.conversation_id().unwrap_or_default(),
            channel = activity.channel_id.as_deref().unwrap_or_default(),
            "turn failed"
        );
        if matches!(error, TurnError::Connector(_)) {
            // The channel itself failed us; an apology would fail the same way.
            return Err(error);
        }
        self.reply(&turn, Activity::message(SORRY_TEXT)).await?;
        Ok(())
    }

    /// Records what `activity` says about its conversation. A registry failure is logged and
    /// the turn goes on: the user still gets an answer, and the next activity writes again.
    /// Also returns the notifications held for the conversation, which the registry's write
    /// reads back.
    async fn register(&self, activity: &Activity) -> (Observation, Vec<String>) {
        let observation = observe(activity);
        let Some(registrar) = &self.registrar else {
            return (observation, Vec::new());
        };
        match registrar.record(activity).await {
            Ok(recorded) => (observation, recorded.held),
            Err(error) => {
                tracing::warn!(
                    error = %error,
                    activity_type = %activity.kind,
                    conversation = activity.conversation_id().unwrap_or_default(),
                    "could not register the conversation; the turn goes on"
                );
                (observation, Vec::new())
            }
        }
    }

    async fn dispatch(&self, turn: &Turn<'_>) -> Result<(), TurnError> {
        let activity = turn.activity;
        match activity.kind.as_str() {
            activity_types::MESSAGE => {
                let text = activity.text.as_deref().unwrap_or_default();
                match Command::parse(text) {
                    Command::Run => self.run_job(turn).await,
                    Command::Show => self.show_jobs(turn).await,
                    Command::Done(argument) => self.done(turn, argument).await,
                    Command::Reminder(command) => self.reminder(turn, command).await,
                    Command::Help => self.answer(turn, Activity::message(HELP_TEXT)).await,
                }
            }
            activity_types::CONVERSATION_UPDATE => self.welcome(turn).await,
            activity_types::EVENT
                if activity
                    .name
                    .as_deref()
                    .is_some_and(|n| JOB_COMPLETE_EVENTS.contains(&n)) =>
            {
                self.job_complete_event(activity).await
            }
            // Other activity types and event names are not for this bot.
            _ => Ok(()),
        }
    }

    /// Replies in the turn; the first reply carries the notifications held for the
    /// conversation ([`Folder`]). Returns the id the Connector gave the reply.
    async fn reply(
        &self,
        turn: &Turn<'_>,
        mut reply: Activity,
    ) -> Result<Option<String>, TurnError> {
        let activity = turn.activity;
        let held = std::mem::take(&mut *turn.held.lock().unwrap_or_else(|p| p.into_inner()));
        let folding = match (&self.folder, activity.conversation_id()) {
            (Some(folder), Some(conversation)) if !held.is_empty() => {
                Some((folder, folder.take(conversation, &held).await))
            }
            _ => None,
        };
        if let Some((_, folded)) = &folding {
            folded.append_to(&mut reply);
        }
        let sent = self
            .connector
            .reply_to_activity(&activity.reply_with(reply))
            .await;
        if let Some((folder, folded)) = folding {
            match &sent {
                Ok(response) => folder.sent(folded, response.id.clone()).await,
                Err(_) => folder.unsent(folded).await,
            }
        }
        Ok(sent?.id)
    }

    /// [`Bot::reply`], when the reply's id is not needed.
    async fn answer(&self, turn: &Turn<'_>, reply: Activity) -> Result<(), TurnError> {
        self.reply(turn, reply).await.map(drop)
    }

    /// Members other than the bot joined: welcome them and say what the bot does.
    async fn welcome(&self, turn: &Turn<'_>) -> Result<(), TurnError> {
        let activity = turn.activity;
        let bot_id = activity.recipient.as_ref().map(|r| r.id.as_str());
        let humans_added = activity
            .members_added
            .iter()
            .flatten()
            .any(|member| Some(member.id.as_str()) != bot_id);
        if humans_added {
            let text = format!("{WELCOME_TEXT} {HELP_TEXT}");
            self.answer(turn, Activity::message(text)).await?;
        }
        Ok(())
    }

    /// `remind me …`, `reminders`, `cancel reminder N`: answered by [`Reminders`].
    async fn reminder(&self, turn: &Turn<'_>, command: ReminderCommand) -> Result<(), TurnError> {
        let Some(reminders) = &self.reminders else {
            return self.answer(turn, Activity::message(HELP_TEXT)).await;
        };
        let text = reminders.answer(turn.activity, command, Utc::now()).await?;
        self.answer(turn, Activity::markdown(text)).await
    }

    /// `run`: create a job holding this turn's conversation reference and say its number. The
    /// reply's activity id is kept with the job, which updates the reply when it completes.
    async fn run_job(&self, turn: &Turn<'_>) -> Result<(), TurnError> {
        let reference = ConversationReference::from_incoming(turn.activity);
        let job = self.create_job(reference).await?;
        tracing::info!(job = %job.number, conversation = %job.reference.conversation.id, "job created");
        let n = job.number;
        let text = format!(
            "Job {n} is running. We'll notify you when it's complete. (To complete it now, type **done {n}**.)"
        );
        let Some(activity_id) = self.reply(turn, Activity::markdown(text)).await? else {
            return Ok(());
        };
        // Best effort: without it the completion is still notified, only not shown in place.
        if let Err(error) = self.store.announce(n, &activity_id).await {
            tracing::warn!(error = %error, job = %n, "could not keep the running reply's id");
        }
        Ok(())
    }

    async fn create_job(&self, reference: ConversationReference) -> Result<Job, TurnError> {
        for _ in 0..CREATE_ATTEMPTS {
            let job = Job::new_running(JobNumber::random(), reference.clone(), Utc::now());
            match self.store.create(&job).await {
                Ok(()) => return Ok(job),
                Err(StoreError::Duplicate(number)) => {
                    tracing::debug!(%number, "job number taken, drawing another");
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(TurnError::NoFreeNumber(CREATE_ATTEMPTS))
    }

    /// `show`: the most recent jobs of this conversation's tenant, as an Adaptive Card on
    /// Teams (which renders no Markdown tables) and a Markdown table elsewhere; or "The job
    /// log is empty."
    async fn show_jobs(&self, turn: &Turn<'_>) -> Result<(), TurnError> {
        let activity = turn.activity;
        let tenant = ConversationReference::from_incoming(activity)
            .tenant_id()
            .map(str::to_owned);
        let page = self
            .store
            .list_recent(tenant.as_deref(), SHOW_LIMIT)
            .await?;
        if page.jobs.is_empty() {
            return self.answer(turn, Activity::message(EMPTY_LOG_TEXT)).await;
        }
        let notifications = self
            .notifier
            .find(
                &page
                    .jobs
                    .iter()
                    .filter_map(|job| job.status.notification().cloned())
                    .collect::<Vec<_>>(),
            )
            .await?;
        let rows: Vec<[String; 3]> = page
            .jobs
            .iter()
            .map(|job| {
                let conversation = &job.reference.conversation;
                let place = match conversation.name.as_deref() {
                    Some(name) if !name.is_empty() => name,
                    _ => conversation.id.as_str(),
                };
                [
                    job.number.to_string(),
                    format!("{place} ({})", job.reference.channel_id),
                    job_state(job, &notifications),
                ]
            })
            .collect();
        let more = (page.total > page.jobs.len()).then(|| {
            format!(
                "Showing the {} most recent of {} jobs; {} more not shown.",
                page.jobs.len(),
                page.total,
                page.total - page.jobs.len()
            )
        });
        let reply = match activity.channel_id.as_deref() {
            Some("msteams") => jobs_card(&rows, more.as_deref()),
            _ => Activity::markdown(jobs_table(&rows, more.as_deref())),
        };
        self.answer(turn, reply).await
    }

    /// `done …`: every variant answered; a running job gets a completion on the queue.
    async fn done(&self, turn: &Turn<'_>, argument: DoneArgument) -> Result<(), TurnError> {
        let text = match argument {
            DoneArgument::Missing => {
                "Which job? Type **done** followed by the job number, for example **done 123456**. Type **show** to see the jobs.".to_owned()
            }
            DoneArgument::NotANumber(word) => format!(
                "\"{}\" is not a job number. Type **done** followed by the job number, for example **done 123456**.",
                word.chars().take(40).collect::<String>()
            ),
            DoneArgument::Number(number) => match self.request_completion(number).await? {
                CompletionRequest::Queued => format!("Completing job {number}."),
                CompletionRequest::NotFound => {
                    format!("There is no job {number}. Type **show** to see the jobs.")
                }
                CompletionRequest::AlreadyComplete => format!("Job {number} is already complete."),
            },
        };
        self.answer(turn, Activity::markdown(text)).await
    }

    /// The job system's own completion: like `done`, without a reply.
    async fn job_complete_event(&self, activity: &Activity) -> Result<(), TurnError> {
        let number = activity.value.as_ref().and_then(job_number_from_value);
        let Some(number) = number else {
            tracing::warn!(value = ?activity.value, "job completion event without a job number; ignored");
            return Ok(());
        };
        let outcome = self.request_completion(number).await?;
        tracing::info!(job = %number, ?outcome, "job completion event");
        Ok(())
    }

    /// Completes a running job: its notification is handed to the engine first (idempotent by
    /// id, so a retry after a crash creates no second one), then the job is marked complete.
    async fn request_completion(&self, number: JobNumber) -> Result<CompletionRequest, TurnError> {
        let Some(job) = self.store.get(number).await? else {
            return Ok(CompletionRequest::NotFound);
        };
        if !job.status.is_running() {
            return Ok(CompletionRequest::AlreadyComplete);
        }
        let now = Utc::now();
        let source = Source::Job {
            number: number.get(),
        };
        // Not urgent (the default): held while the user is talking, digested with others.
        let notification = Notification::new(
            job.completion_notification_id(),
            source.clone(),
            job.reference.clone(),
            Content::text(format!("Job {number} is complete.")).with_digest(DigestLine {
                key: "job-complete".to_owned(),
                item: number.to_string(),
                summary: "{count} jobs are complete: {items}.".to_owned(),
            }),
            now,
        );
        let notification = self.notifier.notify(notification).await?;
        if let Some(activity_id) = &job.announcement {
            let mut update = Notification::new(
                job.announcement_update_id(),
                source,
                job.reference.clone(),
                Content::text(format!(
                    "Job {number} is complete (started {}, completed {} UTC).",
                    job.created_at.format("%Y-%m-%d %H:%M:%S"),
                    now.format("%H:%M:%S")
                )),
                now,
            );
            update.update_of = Some(activity_id.clone());
            self.notifier.notify(update).await?;
        }
        match self.store.complete(number, &notification.id, now).await? {
            CompleteOutcome::Completed(_) => {
                tracing::info!(job = %number, notification = %notification.id, correlation_id = %notification.correlation_id, "job complete; notification queued");
                Ok(CompletionRequest::Queued)
            }
            // A concurrent `done` got there first; its notification is this one.
            CompleteOutcome::AlreadyComplete(_) => Ok(CompletionRequest::AlreadyComplete),
            CompleteOutcome::NotFound => Ok(CompletionRequest::NotFound),
        }
    }
}

/// The state `show` prints: the job's, and for a complete job how its notification is doing.
fn job_state(
    job: &Job,
    notifications: &std::collections::HashMap<NotificationId, Notification>,
) -> String {
    let JobStatus::Complete { notification, .. } = &job.status else {
        return "running".to_owned();
    };
    let Some(notification) = notifications.get(notification) else {
        return "complete".to_owned();
    };
    match &notification.state {
        DeliveryState::Sent { .. } => "complete, notified".to_owned(),
        DeliveryState::Failed { reason, .. } => format!("complete, notification failed: {reason}"),
        DeliveryState::GaveUp { last_error, .. } => {
            format!("complete, notification gave up: {last_error}")
        }
        DeliveryState::Queued | DeliveryState::Sending { .. } => match &notification.last_error {
            Some(error) => format!(
                "complete, notifying (attempt {} failed: {error})",
                notification.attempts
            ),
            None => "complete, notifying".to_owned(),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CompletionRequest {
    Queued,
    NotFound,
    AlreadyComplete,
}

/// The event's value: a number, a numeric string, or `{"jobNumber"|"job"|"number": …}`.
fn job_number_from_value(value: &Value) -> Option<JobNumber> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .and_then(JobNumber::new),
        Value::String(s) => s.parse().ok(),
        Value::Object(map) => ["jobNumber", "job", "number"]
            .iter()
            .find_map(|key| map.get(*key))
            .and_then(job_number_from_value),
        _ => None,
    }
}

/// The job list as a Markdown table (Web Chat, the Emulator, Direct Line clients).
fn jobs_table(rows: &[[String; 3]], more: Option<&str>) -> String {
    let mut text = String::from("| Job | Conversation | State |\n|---|---|---|\n");
    for [number, place, state] in rows {
        text.push_str(&format!(
            "| {number} | {} | {} |\n",
            escape_cell(place),
            escape_cell(state)
        ));
    }
    if let Some(more) = more {
        text.push_str(&format!("\n{more}"));
    }
    text
}

/// The job list as an Adaptive Card (Teams renders no Markdown tables). Rows are column sets,
/// which every Teams client renders (the `Table` element needs schema 1.5).
fn jobs_card(rows: &[[String; 3]], more: Option<&str>) -> Activity {
    let row = |cells: [&str; 3], header: bool| {
        json!({
            "type": "ColumnSet",
            "spacing": if header { "None" } else { "Small" },
            "separator": !header,
            "columns": cells.iter().zip(["auto", "stretch", "stretch"]).map(|(text, width)| json!({
                "type": "Column",
                "width": width,
                "items": [{
                    "type": "TextBlock",
                    "text": text,
                    "wrap": true,
                    "weight": if header { "Bolder" } else { "Default" },
                }],
            })).collect::<Vec<_>>(),
        })
    };
    let mut body = vec![row(["Job", "Conversation", "State"], true)];
    body.extend(
        rows.iter()
            .map(|[number, place, state]| row([number, place, state], false)),
    );
    if let Some(more) = more {
        body.push(json!({"type": "TextBlock", "text": more, "isSubtle": true, "wrap": true}));
    }
    let mut activity = Activity::message("");
    activity.text = None;
    activity.text_format = None;
    activity.extra.insert(
        "attachments".to_owned(),
        json!([{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            },
        }]),
    );
    activity
}

/// Keeps user-controlled names from breaking the Markdown table.
fn escape_cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn n(value: u32) -> JobNumber {
        JobNumber::new(value).unwrap()
    }

    #[test]
    fn commands_parse_like_the_sample_and_forgive_case_and_mentions() {
        assert_eq!(Command::parse("run"), Command::Run);
        assert_eq!(Command::parse("  Run Job "), Command::Run);
        assert_eq!(Command::parse("<at>Job Bot</at> run"), Command::Run);
        assert_eq!(Command::parse("show"), Command::Show);
        assert_eq!(Command::parse("SHOW JOBS"), Command::Show);
        assert_eq!(
            Command::parse("done 123456"),
            Command::Done(DoneArgument::Number(n(123_456)))
        );
        assert_eq!(
            Command::parse("done job 42"),
            Command::Done(DoneArgument::Number(n(42)))
        );
        assert_eq!(Command::parse("done"), Command::Done(DoneArgument::Missing));
        assert_eq!(
            Command::parse("done abc"),
            Command::Done(DoneArgument::NotANumber("abc".into()))
        );
        assert_eq!(
            Command::parse("done 1 2"),
            Command::Done(DoneArgument::NotANumber("1 2".into()))
        );
        assert_eq!(
            Command::parse("done 0"),
            Command::Done(DoneArgument::NotANumber("0".into()))
        );
        assert_eq!(Command::parse("hello"), Command::Help);
        assert_eq!(Command::parse(""), Command::Help);
        assert_eq!(Command::parse("running"), Command::Help);
    }

    #[test]
    fn reminder_commands_keep_the_text_and_lose_the_mention() {
        assert_eq!(
            Command::parse("<at>Job Bot</at> Remind me in 5 seconds to Stretch"),
            Command::Reminder(ReminderCommand::Remind(
                "Remind me in 5 seconds to Stretch".into()
            ))
        );
        assert_eq!(
            Command::parse("reminders"),
            Command::Reminder(ReminderCommand::List)
        );
        assert_eq!(
            Command::parse("<at>Job Bot</at> cancel reminder 2"),
            Command::Reminder(ReminderCommand::Cancel(
                crate::reminders::service::CancelArgument::Number(2)
            ))
        );
        assert_eq!(Command::parse("show"), Command::Show);
        assert!(HELP_TEXT.contains("remind me") && HELP_TEXT.contains("cancel reminder"));
    }

    #[test]
    fn event_values_name_the_job_in_several_shapes() {
        assert_eq!(job_number_from_value(&json!(42)), Some(n(42)));
        assert_eq!(job_number_from_value(&json!("42")), Some(n(42)));
        assert_eq!(
            job_number_from_value(&json!({"jobNumber": 42})),
            Some(n(42))
        );
        assert_eq!(job_number_from_value(&json!(-1)), None);
        assert_eq!(job_number_from_value(&json!(1e20)), None);
        assert_eq!(job_number_from_value(&json!(null)), None);
    }

    #[test]
    fn table_cells_cannot_break_the_table() {
        assert_eq!(escape_cell("a|b\nc"), "a\\|b c");
    }
}
