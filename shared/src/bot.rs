//! The conversation: what each incoming activity does (the table in `product.md`).
//!
//! | input | behaviour |
//! |---|---|
//! | every activity | first, its conversation is registered ([`Registrar`]): only registered, active conversations can be notified |
//! | installationUpdate remove, conversationUpdate removing the bot | the conversation is retired; no reply |
//! | conversationUpdate, members added (not the bot) | [`Bot::welcome`] |
//! | `run` / `run job` | [`Bot::run_job`] |
//! | `show` / `show jobs` | [`Bot::show_jobs`] |
//! | `done <number>` and its variants | [`Bot::done`] |
//! | event `jobComplete` / `jobCompleted` | [`Bot::job_complete_event`] |
//! | `remind me …`, `reminders`, `cancel reminder N` | [`Bot::reminder`] ([`crate::reminders`]) |
//! | anything else | help text |
//! | an error inside a turn | logged; "Sorry, it looks like something went wrong." |
//!
//! Completing a job never sends the proactive message from here: `done` and the event hand a
//! notification to the [`crate::delivery`] engine through its [`Notifier`], so a turn answers
//! within the channel's time limit and a delivery can be retried without the user.

use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;

use crate::connector::{ConnectorClient, ConnectorError};
use crate::delivery::{
    Content, DeliveryState, Notification, NotificationId, Notifier, NotifyError, Source,
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
        }
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
        if let Observation::Gone(_) = self.register(activity).await {
            // Uninstalled or removed: there is no one left to answer.
            return Ok(());
        }
        let Err(error) = self.dispatch(activity).await else {
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
        self.reply(activity, Activity::message(SORRY_TEXT)).await?;
        Ok(())
    }

    /// Records what `activity` says about its conversation. A registry failure is logged and
    /// the turn goes on: the user still gets an answer, and the next activity writes again.
    async fn register(&self, activity: &Activity) -> Observation {
        let observation = observe(activity);
        if let Some(registrar) = &self.registrar
            && let Err(error) = registrar.record(activity).await
        {
            tracing::warn!(
                error = %error,
                activity_type = %activity.kind,
                conversation = activity.conversation_id().unwrap_or_default(),
                "could not register the conversation; the turn goes on"
            );
        }
        observation
    }

    async fn dispatch(&self, activity: &Activity) -> Result<(), TurnError> {
        match activity.kind.as_str() {
            activity_types::MESSAGE => {
                let text = activity.text.as_deref().unwrap_or_default();
                match Command::parse(text) {
                    Command::Run => self.run_job(activity).await,
                    Command::Show => self.show_jobs(activity).await,
                    Command::Done(argument) => self.done(activity, argument).await,
                    Command::Reminder(command) => self.reminder(activity, command).await,
                    Command::Help => self.reply(activity, Activity::message(HELP_TEXT)).await,
                }
            }
            activity_types::CONVERSATION_UPDATE => self.welcome(activity).await,
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

    async fn reply(&self, activity: &Activity, reply: Activity) -> Result<(), TurnError> {
        self.connector
            .reply_to_activity(&activity.reply_with(reply))
            .await?;
        Ok(())
    }

    /// Members other than the bot joined: welcome them and say what the bot does.
    pub async fn welcome(&self, activity: &Activity) -> Result<(), TurnError> {
        let bot_id = activity.recipient.as_ref().map(|r| r.id.as_str());
        let humans_added = activity
            .members_added
            .iter()
            .flatten()
            .any(|member| Some(member.id.as_str()) != bot_id);
        if humans_added {
            let text = format!("{WELCOME_TEXT} {HELP_TEXT}");
            self.reply(activity, Activity::message(text)).await?;
        }
        Ok(())
    }

    /// `remind me …`, `reminders`, `cancel reminder N`: answered by [`Reminders`].
    pub async fn reminder(
        &self,
        activity: &Activity,
        command: ReminderCommand,
    ) -> Result<(), TurnError> {
        let Some(reminders) = &self.reminders else {
            return self.reply(activity, Activity::message(HELP_TEXT)).await;
        };
        let text = reminders.answer(activity, command, Utc::now()).await?;
        self.reply(activity, Activity::markdown(text)).await
    }

    /// `run`: create a job holding this turn's conversation reference and say its number.
    pub async fn run_job(&self, activity: &Activity) -> Result<(), TurnError> {
        let reference = ConversationReference::from_incoming(activity);
        let job = self.create_job(reference).await?;
        tracing::info!(job = %job.number, conversation = %job.reference.conversation.id, "job created");
        let n = job.number;
        let text = format!(
            "Job {n} is running. We'll notify you when it's complete. (To complete it now, type **done {n}**.)"
        );
        self.reply(activity, Activity::markdown(text)).await
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

    /// `show`: the most recent jobs as a table, or "The job log is empty."
    pub async fn show_jobs(&self, activity: &Activity) -> Result<(), TurnError> {
        let page = self.store.list_recent(SHOW_LIMIT).await?;
        if page.jobs.is_empty() {
            return self
                .reply(activity, Activity::message(EMPTY_LOG_TEXT))
                .await;
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
        let mut text = String::from("| Job | Conversation | State |\n|---|---|---|\n");
        for job in &page.jobs {
            let conversation = &job.reference.conversation;
            let place = match conversation.name.as_deref() {
                Some(name) if !name.is_empty() => name,
                _ => conversation.id.as_str(),
            };
            text.push_str(&format!(
                "| {} | {} ({}) | {} |\n",
                job.number,
                escape_cell(place),
                escape_cell(&job.reference.channel_id),
                escape_cell(&job_state(job, &notifications))
            ));
        }
        if page.total > page.jobs.len() {
            text.push_str(&format!(
                "\nShowing the {} most recent of {} jobs; {} more not shown.",
                page.jobs.len(),
                page.total,
                page.total - page.jobs.len()
            ));
        }
        self.reply(activity, Activity::markdown(text)).await
    }

    /// `done …`: every variant answered; a running job gets a completion on the queue.
    pub async fn done(&self, activity: &Activity, argument: DoneArgument) -> Result<(), TurnError> {
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
        self.reply(activity, Activity::markdown(text)).await
    }

    /// The job system's own completion: like `done`, without a reply.
    pub async fn job_complete_event(&self, activity: &Activity) -> Result<(), TurnError> {
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
        let notification = Notification::new(
            job.completion_notification_id(),
            Source::Job {
                number: number.get(),
            },
            job.reference.clone(),
            Content::text(format!("Job {number} is complete.")),
            now,
        );
        let notification = self.notifier.notify(notification).await?;
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
