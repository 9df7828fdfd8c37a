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
//! | `JOB_RETENTION_DAYS` | how long finished jobs are kept (DynamoDB TTL) | 30 |
//! | `REGISTRY_INACTIVE_DAYS` | how long a registered conversation is kept after its last activity (DynamoDB TTL) | 365 |
//! | `REGISTRY_RETIRED_DAYS` | how long a retired conversation is kept (DynamoDB TTL) | 30 |
//! | `MicrosoftAppPasswordSecretArn` | Secrets Manager secret holding the app password, read at start | unset |

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
    pub job_retention_days: u32,
    /// How long registered conversations are kept: inactive ones, retired ones.
    pub registry_retention: RegistryRetention,
    pub app_password_secret_arn: Option<String>,
    pub auth: AuthConfig,
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
        let job_retention_days = days("JOB_RETENTION_DAYS", 30)?;
        let registry_retention = RegistryRetention {
            inactive: chrono::Duration::days(days("REGISTRY_INACTIVE_DAYS", 365)?.into()),
            retired: chrono::Duration::days(days("REGISTRY_RETIRED_DAYS", 30)?.into()),
        };
        Ok(Settings {
            port,
            backend,
            max_receives,
            limits,
            job_retention_days,
            registry_retention,
            app_password_secret_arn: get("MicrosoftAppPasswordSecretArn"),
            auth: AuthConfig::from_lookup(&lookup)?,
        })
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
    fn bad_numbers_are_named() {
        let error = settings(&[("PORT", "eighty")]).unwrap_err().to_string();
        assert!(error.contains("PORT"), "{error}");
        assert!(settings(&[("JOB_RETENTION_DAYS", "0")]).is_err());
    }
}
