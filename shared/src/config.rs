//! Settings from the environment, under the names users already know: the Bot Framework SDKs'
//! `MicrosoftApp*` (see [`crate::auth::AuthConfig`]), and for AWS the variables the SAM
//! template sets on both functions — which the local runner reads too.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `PORT` | local runner's port | 3978 |
//! | `JOBS_TABLE_NAME` | DynamoDB table of jobs | unset: in-memory store |
//! | `COMPLETIONS_QUEUE_URL` | SQS queue of completions | unset: in-memory queue |
//! | `JOB_RETENTION_DAYS` | how long finished jobs are kept (DynamoDB TTL) | 30 |
//! | `MicrosoftAppPasswordSecretArn` | Secrets Manager secret holding the app password, read at start | unset |

use crate::auth::AuthConfig;

/// Where jobs and completions live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: process memory, gone on exit.
    Memory,
    /// DynamoDB and SQS, through the AWS SDK's own configuration (`AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, credentials…).
    Aws {
        table_name: String,
        queue_url: String,
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
        "set both JOBS_TABLE_NAME and COMPLETIONS_QUEUE_URL (for DynamoDB and SQS) or neither (in memory); only {0} is set"
    )]
    HalfAws(&'static str),
    #[error(transparent)]
    Auth(#[from] crate::auth::ConfigError),
    #[error("could not build the HTTP client: {0}")]
    Http(String),
    #[error("could not read the app password from Secrets Manager: {0}")]
    Secret(String),
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub port: u16,
    pub backend: Backend,
    pub job_retention_days: u32,
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
        let backend = match (get("JOBS_TABLE_NAME"), get("COMPLETIONS_QUEUE_URL")) {
            (None, None) => Backend::Memory,
            (Some(table_name), Some(queue_url)) => Backend::Aws {
                table_name,
                queue_url,
            },
            (Some(_), None) => return Err(ConfigError::HalfAws("JOBS_TABLE_NAME")),
            (None, Some(_)) => return Err(ConfigError::HalfAws("COMPLETIONS_QUEUE_URL")),
        };
        let job_retention_days = match get("JOB_RETENTION_DAYS") {
            None => 30,
            Some(value) => {
                value
                    .parse()
                    .ok()
                    .filter(|days| *days > 0)
                    .ok_or(ConfigError::Invalid {
                        name: "JOB_RETENTION_DAYS",
                        expected: "a positive number of days",
                        value,
                    })?
            }
        };
        Ok(Settings {
            port,
            backend,
            job_retention_days,
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
    }

    #[test]
    fn aws_needs_both_the_table_and_the_queue() {
        assert!(matches!(
            settings(&[("JOBS_TABLE_NAME", "t")]),
            Err(ConfigError::HalfAws(_))
        ));
        let s = settings(&[
            ("JOBS_TABLE_NAME", "t"),
            ("COMPLETIONS_QUEUE_URL", "http://q"),
        ])
        .unwrap();
        assert_eq!(
            s.backend,
            Backend::Aws {
                table_name: "t".into(),
                queue_url: "http://q".into()
            }
        );
    }

    #[test]
    fn bad_numbers_are_named() {
        let error = settings(&[("PORT", "eighty")]).unwrap_err().to_string();
        assert!(error.contains("PORT"), "{error}");
        assert!(settings(&[("JOB_RETENTION_DAYS", "0")]).is_err());
    }
}
