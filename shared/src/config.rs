//! Settings from the environment, under the names users already know: the Bot Framework SDKs'
//! `MicrosoftApp*` (see [`crate::auth::AuthConfig`]), and for AWS the variables the SAM
//! template sets on both functions — which the local runner reads too.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `PORT` | local runner's port | 3978 |
//! | `JOBS_TABLE_NAME` | DynamoDB table of jobs | unset: in memory |
//! | `DELIVERY_TABLE_NAME` | DynamoDB table of notifications and rate-limit state | unset: in memory |
//! | `NOTIFICATIONS_QUEUE_URL` | SQS FIFO queue of deliveries | unset: in memory |
//! | `NOTIFICATIONS_DEAD_LETTER_QUEUE_URL` | its dead-letter queue | unset: in memory |
//! | `DELIVERY_MAX_RECEIVES` | the queue's `maxReceiveCount` (the last receive gives up) | 100 |
//! | `RATE_LIMITS` | limits for every channel: `conversation=7/1s,8/2s,60/30s,1800/3600s;tenant=50/1s` | Teams' limits |
//! | `RATE_LIMITS_<CHANNEL>` | limits for one channel (e.g. `RATE_LIMITS_WEBCHAT`), same form | `RATE_LIMITS` |
//! | `RATE_LIMIT_MAX_WAIT_MS` | the longest a delivery waits in process for its turn | 200 |
//! | `RATE_LIMIT_MARGIN_MS` | added to every window for network jitter | 50 |
//! | `JOB_RETENTION_DAYS` | days a complete job, an ended notification (sent, failed, gave up) and a notify request (from its creation) are kept (DynamoDB TTL); 1 to 36500 | 30 |
//! | `NOTIFY_API_KEY` | local runner: the key `/api/notify` requires (`Authorization: Bearer …`); unset: every notify call refused. Inside Lambda the route uses IAM | unset |
//! | `REGISTRY_INACTIVE_DAYS` | how long a registered conversation is kept after its last activity (DynamoDB TTL) | 365 |
//! | `REGISTRY_RETIRED_DAYS` | how long a retired conversation is kept (DynamoDB TTL) | 30 |
//! | `MicrosoftAppPasswordSecretArn` | Secrets Manager secret holding the app password, read at start | unset |
//! | `REMINDERS_SCHEDULER` | `eventbridge` or `local` (an in-process timer: `cargo run`, the local AWS mode) | `local` in memory, `eventbridge` on AWS |
//! | `REMINDERS_SCHEDULE_GROUP` | EventBridge Scheduler group of the reminders' one-time schedules | required for `eventbridge` |
//! | `REMINDERS_SCHEDULER_ROLE_ARN` | the role EventBridge Scheduler assumes to send to the queue | required for `eventbridge` |
//! | `NOTIFICATIONS_QUEUE_ARN` | the notifications FIFO queue, the schedules' target | required for `eventbridge` |
//! | `REMINDERS_DEAD_LETTER_QUEUE_ARN` | standard SQS queue for schedule invocations that failed | required for `eventbridge` |
//! | `ALLOW_ANONYMOUS_EMULATOR_MODE` | `true`: inside Lambda, start without `MicrosoftAppId` (no authentication) | `false`: refuse to start |
//! | `DIGEST_WINDOW_SECONDS` | how long a non-urgent notification waits for others of its conversation to go out as one message; `0`: no digests | `3` |
//! | `QUIET_SECONDS` | a non-urgent notification is held while the conversation had an activity this recently; `0`: never held | `5` |
//! | `MAX_HOLD_SECONDS` | the longest a notification is held | `600` |
//! | `METRICS_STACK` | the `Stack` dimension of every metric (read by [`crate::metrics::Metrics::stdout`], not here) | `local` |
//!
//! Inside Lambda (`AWS_LAMBDA_RUNTIME_API` or `AWS_LAMBDA_FUNCTION_NAME` set) an empty
//! `MicrosoftAppId` would be a public endpoint without authentication: the settings are refused
//! ([`ConfigError::AnonymousInLambda`]) unless `ALLOW_ANONYMOUS_EMULATOR_MODE=true`, and even
//! then the serviceUrl allowlist is not relaxed (see [`crate::auth::AuthConfig`]).

use crate::adapters::eventbridge::EventBridgeTarget;
use crate::auth::AuthConfig;
use crate::delivery::limits::{ChannelLimits, LimitsConfig};
use crate::registry::RegistryRetention;

/// Where jobs and completions live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: process memory, gone on exit.
    Memory,
    /// DynamoDB and SQS, through the AWS SDK's own configuration (`AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, credentials…).
    Aws {
        jobs_table: String,
        delivery_table: String,
        queue_url: String,
        dead_letter_queue_url: String,
    },
}

/// How reminders are scheduled ([`crate::reminders::ReminderScheduler`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReminderScheduling {
    /// An in-process timer: the default in memory; on AWS only when asked for
    /// (`REMINDERS_SCHEDULER=local`, the local AWS mode: moto stores schedules but never
    /// fires them). Reminders do not survive a restart.
    Local,
    /// One EventBridge Scheduler one-time schedule per reminder, onto the notifications queue.
    EventBridge(EventBridgeTarget),
}

/// The variables of [`ReminderScheduling::EventBridge`], all required.
pub const EVENTBRIDGE_VARIABLES: [&str; 4] = [
    "REMINDERS_SCHEDULE_GROUP",
    "REMINDERS_SCHEDULER_ROLE_ARN",
    "NOTIFICATIONS_QUEUE_ARN",
    "REMINDERS_DEAD_LETTER_QUEUE_ARN",
];

/// Lambda sets these in every function's environment (`cargo lambda watch` does too): either
/// one present means the process runs inside Lambda.
pub const LAMBDA_VARIABLES: [&str; 2] = ["AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_FUNCTION_NAME"];

/// Whether the environment `lookup` reads is Lambda's ([`LAMBDA_VARIABLES`]).
pub fn in_lambda(lookup: impl Fn(&str) -> Option<String>) -> bool {
    LAMBDA_VARIABLES
        .iter()
        .any(|name| lookup(name).is_some_and(|value| !value.trim().is_empty()))
}

/// Why the settings cannot be used; the text says what to set.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} must be {expected}, not {value:?}")]
    Invalid {
        name: &'static str,
        expected: &'static str,
        value: String,
    },
    #[error(
        "set all of JOBS_TABLE_NAME, DELIVERY_TABLE_NAME, NOTIFICATIONS_QUEUE_URL and NOTIFICATIONS_DEAD_LETTER_QUEUE_URL (for DynamoDB and SQS) or none (in memory); {0} is missing"
    )]
    HalfAws(&'static str),
    #[error(
        "reminders on AWS are EventBridge Scheduler one-time schedules: set REMINDERS_SCHEDULE_GROUP, REMINDERS_SCHEDULER_ROLE_ARN, NOTIFICATIONS_QUEUE_ARN and REMINDERS_DEAD_LETTER_QUEUE_ARN (template.yaml does), or REMINDERS_SCHEDULER=local for an in-process timer; {0} is missing"
    )]
    HalfReminders(&'static str),
    #[error(
        "REMINDERS_SCHEDULER=eventbridge needs the AWS backend (JOBS_TABLE_NAME, DELIVERY_TABLE_NAME and the queue URLs): EventBridge Scheduler cannot reach an in-memory queue"
    )]
    EventBridgeWithoutAws,
    #[error(
        "MicrosoftAppId is empty: inside Lambda that is a public endpoint without authentication (Emulator mode), so the function refuses to start. Set MicrosoftAppId and MicrosoftAppPasswordSecretArn (template parameters of the same names), or set ALLOW_ANONYMOUS_EMULATOR_MODE=true (parameter AllowAnonymousEmulatorMode=true) to run without authentication on purpose"
    )]
    AnonymousInLambda,
    #[error(transparent)]
    Auth(#[from] crate::auth::ConfigError),
    #[error("could not build the HTTP client: {0}")]
    Http(String),
    #[error("could not read the app password from Secrets Manager: {0}")]
    Secret(String),
}

/// The variables that together select the AWS backend.
pub const AWS_VARIABLES: [&str; 4] = [
    "JOBS_TABLE_NAME",
    "DELIVERY_TABLE_NAME",
    "NOTIFICATIONS_QUEUE_URL",
    "NOTIFICATIONS_DEAD_LETTER_QUEUE_URL",
];

#[derive(Debug, Clone)]
pub struct Settings {
    pub port: u16,
    pub backend: Backend,
    pub max_receives: u32,
    pub limits: LimitsConfig,
    /// How notifications fit the conversation: the digest window (`DIGEST_WINDOW_SECONDS`),
    /// the quiet period that holds non-urgent ones (`QUIET_SECONDS`) and the longest hold
    /// (`MAX_HOLD_SECONDS`). See [`crate::delivery::EngineConfig`].
    pub digest_window: std::time::Duration,
    pub quiet: std::time::Duration,
    pub max_hold: std::time::Duration,
    pub job_retention_days: u32,
    /// How long registered conversations are kept: inactive ones, retired ones.
    pub registry_retention: RegistryRetention,
    pub app_password_secret_arn: Option<String>,
    /// The local runner's key for the notify API (`NOTIFY_API_KEY`); inside Lambda the API
    /// uses IAM instead.
    pub notify_api_key: Option<Secret>,
    pub auth: AuthConfig,
    pub reminders: ReminderScheduling,
}

/// A secret setting: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (tests pass a map). Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let port = match get("PORT") {
            None => 3978,
            Some(value) => value.parse().map_err(|_| ConfigError::Invalid {
                name: "PORT",
                expected: "a port number",
                value,
            })?,
        };
        let aws: Vec<Option<String>> = AWS_VARIABLES.iter().map(|name| get(name)).collect();
        let backend = match aws.as_slice() {
            [None, None, None, None] => Backend::Memory,
            [Some(jobs), Some(delivery), Some(queue), Some(dead_letters)] => Backend::Aws {
                jobs_table: jobs.clone(),
                delivery_table: delivery.clone(),
                queue_url: queue.clone(),
                dead_letter_queue_url: dead_letters.clone(),
            },
            _ => {
                let missing = AWS_VARIABLES
                    .iter()
                    .zip(&aws)
                    .find_map(|(name, value)| value.is_none().then_some(*name))
                    .unwrap_or("?");
                return Err(ConfigError::HalfAws(missing));
            }
        };
        let max_receives = match get("DELIVERY_MAX_RECEIVES") {
            None => 100,
            Some(value) => value
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(ConfigError::Invalid {
                    name: "DELIVERY_MAX_RECEIVES",
                    expected: "a positive number (the queue's maxReceiveCount)",
                    value,
                })?,
        };
        let limits_from = |name: &'static str, value: String| {
            value
                .parse::<ChannelLimits>()
                .map_err(|_| ConfigError::Invalid {
                    name,
                    expected: "limits like conversation=7/1s,8/2s;tenant=50/1s",
                    value,
                })
        };
        let mut limits = LimitsConfig::default();
        if let Some(value) = get("RATE_LIMITS") {
            limits.default = limits_from("RATE_LIMITS", value)?;
        }
        let millis_setting = |name: &'static str, default: u64| match get(name) {
            None => Ok(std::time::Duration::from_millis(default)),
            Some(value) => value
                .parse()
                .map(std::time::Duration::from_millis)
                .map_err(|_| ConfigError::Invalid {
                    name,
                    expected: "a number of milliseconds",
                    value,
                }),
        };
        limits.max_wait = millis_setting("RATE_LIMIT_MAX_WAIT_MS", 200)?;
        limits.margin = millis_setting("RATE_LIMIT_MARGIN_MS", 50)?;
        for channel in ["msteams", "webchat", "directline", "emulator"] {
            let name: &'static str = match channel {
                "msteams" => "RATE_LIMITS_MSTEAMS",
                "webchat" => "RATE_LIMITS_WEBCHAT",
                "directline" => "RATE_LIMITS_DIRECTLINE",
                _ => "RATE_LIMITS_EMULATOR",
            };
            if let Some(value) = get(name) {
                limits
                    .by_channel
                    .insert(channel.to_owned(), limits_from(name, value)?);
            }
        }
        let days = |name: &'static str, default: u32| match get(name) {
            None => Ok(default),
            Some(value) => value
                .parse::<u32>()
                .ok()
                .filter(|days| (1..=36_500).contains(days))
                .ok_or(ConfigError::Invalid {
                    name,
                    expected: "a number of days from 1 to 36500",
                    value,
                }),
        };
        let seconds = |name: &'static str, default: u64| match get(name) {
            None => Ok(std::time::Duration::from_secs(default)),
            Some(value) => value
                .parse::<u64>()
                .ok()
                .filter(|s| *s <= 86_400)
                .map(std::time::Duration::from_secs)
                .ok_or(ConfigError::Invalid {
                    name,
                    expected: "a number of seconds from 0 to 86400",
                    value,
                }),
        };
        let digest_window = seconds("DIGEST_WINDOW_SECONDS", 3)?;
        let quiet = seconds("QUIET_SECONDS", 5)?;
        let max_hold = seconds("MAX_HOLD_SECONDS", 600)?;
        let job_retention_days = days("JOB_RETENTION_DAYS", 30)?;
        let registry_retention = RegistryRetention {
            inactive: chrono::Duration::days(days("REGISTRY_INACTIVE_DAYS", 365)?.into()),
            retired: chrono::Duration::days(days("REGISTRY_RETIRED_DAYS", 30)?.into()),
        };
        let reminders = reminder_scheduling(&get, &backend)?;
        let auth = AuthConfig::from_lookup(&lookup)?;
        let allow_anonymous = match get("ALLOW_ANONYMOUS_EMULATOR_MODE")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    name: "ALLOW_ANONYMOUS_EMULATOR_MODE",
                    expected: "true or false",
                    value: get("ALLOW_ANONYMOUS_EMULATOR_MODE").unwrap_or_default(),
                });
            }
        };
        if !auth.is_enabled() && in_lambda(&lookup) && !allow_anonymous {
            return Err(ConfigError::AnonymousInLambda);
        }
        Ok(Settings {
            port,
            backend,
            max_receives,
            limits,
            digest_window,
            quiet,
            max_hold,
            job_retention_days,
            registry_retention,
            app_password_secret_arn: get("MicrosoftAppPasswordSecretArn"),
            notify_api_key: get("NOTIFY_API_KEY").map(Secret),
            auth,
            reminders,
        })
    }
}

/// `REMINDERS_SCHEDULER` and the EventBridge variables, for `backend`.
fn reminder_scheduling(
    get: &impl Fn(&str) -> Option<String>,
    backend: &Backend,
) -> Result<ReminderScheduling, ConfigError> {
    let aws = matches!(backend, Backend::Aws { .. });
    let eventbridge = match get("REMINDERS_SCHEDULER").map(|v| v.to_ascii_lowercase()) {
        None => aws,
        Some(value) if value == "local" => false,
        Some(value) if value == "eventbridge" => true,
        Some(value) => {
            return Err(ConfigError::Invalid {
                name: "REMINDERS_SCHEDULER",
                expected: "eventbridge or local",
                value,
            });
        }
    };
    if !eventbridge {
        return Ok(ReminderScheduling::Local);
    }
    if !aws {
        return Err(ConfigError::EventBridgeWithoutAws);
    }
    let values: Vec<Option<String>> = EVENTBRIDGE_VARIABLES.iter().map(|name| get(name)).collect();
    match values.as_slice() {
        [Some(group), Some(role), Some(queue), Some(dead_letters)] => {
            Ok(ReminderScheduling::EventBridge(EventBridgeTarget {
                group: group.clone(),
                role_arn: role.clone(),
                queue_arn: queue.clone(),
                dead_letter_queue_arn: dead_letters.clone(),
            }))
        }
        _ => {
            let missing = EVENTBRIDGE_VARIABLES
                .iter()
                .zip(&values)
                .find_map(|(name, value)| value.is_none().then_some(*name))
                .unwrap_or("?");
            Err(ConfigError::HalfReminders(missing))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_are_local_and_in_memory() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.port, 3978);
        assert_eq!(s.backend, Backend::Memory);
        assert_eq!(s.job_retention_days, 30);
        assert_eq!(s.reminders, ReminderScheduling::Local);
        assert_eq!(s.registry_retention, RegistryRetention::default());
        assert_eq!(s.registry_retention.inactive, chrono::Duration::days(365));
        assert_eq!(s.registry_retention.retired, chrono::Duration::days(30));
    }

    #[test]
    fn registry_retention_is_configurable() {
        let s = settings(&[
            ("REGISTRY_INACTIVE_DAYS", "90"),
            ("REGISTRY_RETIRED_DAYS", "7"),
        ])
        .unwrap();
        assert_eq!(s.registry_retention.inactive, chrono::Duration::days(90));
        assert_eq!(s.registry_retention.retired, chrono::Duration::days(7));
        for (name, value) in [
            ("REGISTRY_INACTIVE_DAYS", "0"),
            ("REGISTRY_RETIRED_DAYS", "-1"),
            ("REGISTRY_RETIRED_DAYS", "a month"),
        ] {
            let error = settings(&[(name, value)]).unwrap_err().to_string();
            assert!(error.contains(name), "{error}");
        }
    }

    #[test]
    fn aws_needs_every_table_and_queue() {
        let error = settings(&[("JOBS_TABLE_NAME", "t")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("DELIVERY_TABLE_NAME"), "{error}");
        let s = settings(&[
            ("JOBS_TABLE_NAME", "t"),
            ("DELIVERY_TABLE_NAME", "d"),
            ("NOTIFICATIONS_QUEUE_URL", "http://q"),
            ("NOTIFICATIONS_DEAD_LETTER_QUEUE_URL", "http://dlq"),
            ("REMINDERS_SCHEDULER", "local"),
        ])
        .unwrap();
        assert_eq!(
            s.backend,
            Backend::Aws {
                jobs_table: "t".into(),
                delivery_table: "d".into(),
                queue_url: "http://q".into(),
                dead_letter_queue_url: "http://dlq".into(),
            }
        );
    }

    const AWS: [(&str, &str); 4] = [
        ("JOBS_TABLE_NAME", "t"),
        ("DELIVERY_TABLE_NAME", "d"),
        ("NOTIFICATIONS_QUEUE_URL", "http://q"),
        ("NOTIFICATIONS_DEAD_LETTER_QUEUE_URL", "http://dlq"),
    ];
    const EVENTBRIDGE: [(&str, &str); 4] = [
        ("REMINDERS_SCHEDULE_GROUP", "reminders"),
        (
            "REMINDERS_SCHEDULER_ROLE_ARN",
            "arn:aws:iam::123456789012:role/scheduler",
        ),
        (
            "NOTIFICATIONS_QUEUE_ARN",
            "arn:aws:sqs:us-east-1:123456789012:q.fifo",
        ),
        (
            "REMINDERS_DEAD_LETTER_QUEUE_ARN",
            "arn:aws:sqs:us-east-1:123456789012:dlq",
        ),
    ];

    #[test]
    fn reminders_use_eventbridge_on_aws_and_say_what_is_missing() {
        let all: Vec<(&str, &str)> = AWS.iter().chain(&EVENTBRIDGE).copied().collect();
        let s = settings(&all).unwrap();
        assert_eq!(
            s.reminders,
            ReminderScheduling::EventBridge(EventBridgeTarget {
                group: "reminders".into(),
                role_arn: "arn:aws:iam::123456789012:role/scheduler".into(),
                queue_arn: "arn:aws:sqs:us-east-1:123456789012:q.fifo".into(),
                dead_letter_queue_arn: "arn:aws:sqs:us-east-1:123456789012:dlq".into(),
            })
        );
        // AWS without the scheduler's variables fails at start, naming the first missing one.
        let error = settings(&AWS).unwrap_err().to_string();
        assert!(
            error.contains("REMINDERS_SCHEDULE_GROUP is missing"),
            "{error}"
        );
        let mut partial: Vec<(&str, &str)> = AWS.to_vec();
        partial.extend(&EVENTBRIDGE[..3]);
        let error = settings(&partial).unwrap_err().to_string();
        assert!(
            error.contains("REMINDERS_DEAD_LETTER_QUEUE_ARN is missing"),
            "{error}"
        );
        // The in-process timer on AWS, when asked for.
        let mut local: Vec<(&str, &str)> = AWS.to_vec();
        local.push(("REMINDERS_SCHEDULER", "Local"));
        assert_eq!(
            settings(&local).unwrap().reminders,
            ReminderScheduling::Local
        );
        // EventBridge cannot target the in-memory queue.
        let error = settings(&[("REMINDERS_SCHEDULER", "eventbridge")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("needs the AWS backend"), "{error}");
        assert!(settings(&[("REMINDERS_SCHEDULER", "cron")]).is_err());
    }

    #[test]
    fn rate_limits_default_to_teams_and_are_configurable_per_channel() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.limits.for_channel("webchat"), &ChannelLimits::teams());
        assert_eq!(s.max_receives, 100);
        let s = settings(&[
            ("RATE_LIMITS", "conversation=10/1s"),
            ("RATE_LIMITS_WEBCHAT", "conversation=3/1s;tenant=20/1s"),
            ("DELIVERY_MAX_RECEIVES", "7"),
        ])
        .unwrap();
        assert_eq!(s.limits.for_channel("msteams").conversation.len(), 1);
        assert!(s.limits.for_channel("msteams").tenant.is_empty());
        assert_eq!(s.limits.for_channel("webchat").tenant.len(), 1);
        assert_eq!(s.max_receives, 7);
        let error = settings(&[("RATE_LIMITS", "lots")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("RATE_LIMITS"), "{error}");
        assert!(settings(&[("DELIVERY_MAX_RECEIVES", "0")]).is_err());
    }

    #[test]
    fn the_conversation_settings_default_and_parse() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.digest_window, std::time::Duration::from_secs(3));
        assert_eq!(s.quiet, std::time::Duration::from_secs(5));
        assert_eq!(s.max_hold, std::time::Duration::from_secs(600));
        let s = settings(&[
            ("DIGEST_WINDOW_SECONDS", "0"),
            ("QUIET_SECONDS", "0"),
            ("MAX_HOLD_SECONDS", "60"),
        ])
        .unwrap();
        assert!(s.digest_window.is_zero() && s.quiet.is_zero());
        assert_eq!(s.max_hold, std::time::Duration::from_secs(60));
        for bad in ["-1", "soon", "86401"] {
            let error = settings(&[("QUIET_SECONDS", bad)]).unwrap_err().to_string();
            assert!(error.contains("QUIET_SECONDS"), "{error}");
        }
    }

    #[test]
    fn bad_numbers_are_named() {
        let error = settings(&[("PORT", "eighty")]).unwrap_err().to_string();
        assert!(error.contains("PORT"), "{error}");
        assert!(settings(&[("JOB_RETENTION_DAYS", "0")]).is_err());
    }
}
