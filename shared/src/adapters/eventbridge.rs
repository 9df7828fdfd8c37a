//! The AWS [`ReminderScheduler`]: one EventBridge Scheduler one-time schedule per reminder,
//! whose target is the notifications FIFO queue.
//!
//! `CreateSchedule` in the reminders' schedule group:
//!
//! | field | value |
//! |---|---|
//! | `ScheduleExpression` | `at(yyyy-mm-ddThh:mm:ss)`, the due time rounded up to the second |
//! | `ScheduleExpressionTimezone` | `UTC` |
//! | `FlexibleTimeWindow` | `OFF` |
//! | `ActionAfterCompletion` | `DELETE`: a fired schedule deletes itself |
//! | `Target.Arn` | the notifications queue (FIFO) |
//! | `Target.RoleArn` | the role EventBridge Scheduler assumes to send to it |
//! | `Target.Input` | the delivery message's body ([`DeliveryMessage::to_body`]) |
//! | `Target.SqsParameters.MessageGroupId` | [`DeliveryMessage::group`]: the conversation |
//! | `Target.RetryPolicy` | 185 attempts within 24 h (the service's most) |
//! | `Target.DeadLetterConfig` | a standard queue for invocations that never succeed |
//!
//! EventBridge Scheduler cannot set a deduplication id, so the FIFO queue has content-based
//! deduplication on (the bot's own sends still set the notification id explicitly, which
//! wins). Schedules fire with one minute's precision: `at(17:30:20)` sends between 17:30:00
//! and 17:30:59. `DeleteSchedule` cancels; a schedule that is gone (fired, or never made) is
//! fine.

use async_trait::async_trait;
use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::error::{DisplayErrorContext, SdkError};
use aws_sdk_scheduler::operation::create_schedule::CreateScheduleError;
use aws_sdk_scheduler::operation::delete_schedule::DeleteScheduleError;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode,
    RetryPolicy, SqsParameters, Target,
};
use chrono::{DateTime, DurationRound, Utc};

use crate::delivery::DeliveryMessage;
use crate::reminders::{ReminderScheduler, ScheduleError, ScheduleName};

/// Where the schedules live and what they target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBridgeTarget {
    /// The schedule group (`REMINDERS_SCHEDULE_GROUP`).
    pub group: String,
    /// The notifications FIFO queue's ARN (`NOTIFICATIONS_QUEUE_ARN`).
    pub queue_arn: String,
    /// The role EventBridge Scheduler assumes to send to the queue
    /// (`REMINDERS_SCHEDULER_ROLE_ARN`).
    pub role_arn: String,
    /// A standard SQS queue for invocations that failed every retry
    /// (`REMINDERS_DEAD_LETTER_QUEUE_ARN`).
    pub dead_letter_queue_arn: String,
}

/// The most retries EventBridge Scheduler allows, and the longest it may keep trying.
const MAX_RETRY_ATTEMPTS: i32 = 185;
const MAX_EVENT_AGE_SECONDS: i32 = 86_400;

/// One-time EventBridge schedules onto the notifications queue.
#[derive(Debug, Clone)]
pub struct EventBridgeScheduler {
    client: Client,
    target: EventBridgeTarget,
}

impl EventBridgeScheduler {
    pub fn new(client: Client, target: EventBridgeTarget) -> Self {
        EventBridgeScheduler { client, target }
    }

    pub fn target(&self) -> &EventBridgeTarget {
        &self.target
    }
}

/// The `at(…)` expression for `at`: whole seconds, rounded up (never early), UTC.
pub fn at_expression(at: DateTime<Utc>) -> String {
    let second = chrono::Duration::seconds(1);
    let truncated = at.duration_trunc(second).unwrap_or(at);
    let rounded = if truncated < at {
        truncated + second
    } else {
        truncated
    };
    format!("at({})", rounded.format("%Y-%m-%dT%H:%M:%S"))
}

fn unavailable<E, R>(operation: &str, error: SdkError<E, R>) -> ScheduleError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    ScheduleError::Unavailable(format!(
        "EventBridge Scheduler {operation}: {}",
        DisplayErrorContext(&error)
    ))
}

#[async_trait]
impl ReminderScheduler for EventBridgeScheduler {
    async fn schedule(
        &self,
        name: &ScheduleName,
        at: DateTime<Utc>,
        message: &DeliveryMessage,
    ) -> Result<(), ScheduleError> {
        let build = |e: aws_sdk_scheduler::error::BuildError| {
            ScheduleError::Unavailable(format!("EventBridge Scheduler request: {e}"))
        };
        let target = Target::builder()
            .arn(&self.target.queue_arn)
            .role_arn(&self.target.role_arn)
            .input(message.to_body())
            .sqs_parameters(
                SqsParameters::builder()
                    .message_group_id(message.group())
                    .build(),
            )
            .retry_policy(
                RetryPolicy::builder()
                    .maximum_retry_attempts(MAX_RETRY_ATTEMPTS)
                    .maximum_event_age_in_seconds(MAX_EVENT_AGE_SECONDS)
                    .build(),
            )
            .dead_letter_config(
                DeadLetterConfig::builder()
                    .arn(&self.target.dead_letter_queue_arn)
                    .build(),
            )
            .build()
            .map_err(build)?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(build)?;
        let result = self
            .client
            .create_schedule()
            .name(name.as_str())
            .group_name(&self.target.group)
            .schedule_expression(at_expression(at))
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .action_after_completion(ActionAfterCompletion::Delete)
            .target(target)
            // The same request again (a retried turn) is the same schedule.
            .client_token(name.as_str())
            .description(format!("reminder {}", message.id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // A schedule of this name exists: this reminder was scheduled already.
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(CreateScheduleError::ConflictException(_))
                ) =>
            {
                Ok(())
            }
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(CreateScheduleError::ServiceQuotaExceededException(_))
                ) =>
            {
                Err(ScheduleError::Full(format!(
                    "EventBridge Scheduler CreateSchedule: {}",
                    DisplayErrorContext(&error)
                )))
            }
            Err(error) => Err(unavailable("CreateSchedule", error)),
        }
    }

    async fn cancel(&self, name: &ScheduleName) -> Result<(), ScheduleError> {
        let result = self
            .client
            .delete_schedule()
            .name(name.as_str())
            .group_name(&self.target.group)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Fired (and deleted after completion), or never made.
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(DeleteScheduleError::ResourceNotFoundException(_))
                ) =>
            {
                Ok(())
            }
            Err(error) => Err(unavailable("DeleteSchedule", error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_expressions_round_up_to_the_second() {
        let at = |text: &str| {
            at_expression(
                DateTime::parse_from_rfc3339(text)
                    .unwrap()
                    .with_timezone(&Utc),
            )
        };
        assert_eq!(at("2026-11-21T10:10:05Z"), "at(2026-11-21T10:10:05)");
        assert_eq!(at("2026-11-21T10:10:05.001Z"), "at(2026-11-21T10:10:06)");
        assert_eq!(at("2026-12-31T23:59:59.5Z"), "at(2027-01-01T00:00:00)");
        assert_eq!(at("2026-11-21T11:10:05+01:00"), "at(2026-11-21T10:10:05)");
    }
}
