//! Builds every client once, from [`Settings`], for the two Lambda functions and the local
//! runner: the job store and queue of the chosen [`Backend`], the Connector client with the
//! bot's credentials and serviceUrl policy, the channel authenticator, the bot and the worker.

use std::sync::Arc;

use crate::adapters::dynamodb::DynamoJobStore;
use crate::adapters::memory::{MemoryCompletionQueue, MemoryJobStore, MemoryQueueReceiver};
use crate::adapters::sqs::{SqsCompletionQueue, SqsPoller};
use crate::auth::{Auth, AuthConfig, ChannelAuthenticator};
use crate::bot::Bot;
use crate::config::{Backend, ConfigError, Settings};
use crate::connector::{ConnectorClient, ConnectorConfig, ServiceUrlPolicy};
use crate::jobs::{CompletionQueue, JobStore};
use crate::worker::{CompletionWorker, WorkerConfig};

/// Everything a process serves with.
pub struct Services {
    pub bot: Arc<Bot>,
    pub worker: Arc<CompletionWorker>,
    pub authenticator: Arc<ChannelAuthenticator>,
    pub policy: Arc<dyn ServiceUrlPolicy>,
    pub store: Arc<dyn JobStore>,
    pub queue: Arc<dyn CompletionQueue>,
}

/// Where an in-process consumer (the local runner) takes completions from.
pub enum QueueSource {
    Memory(MemoryQueueReceiver),
    Sqs(SqsPoller),
}

impl Services {
    /// Builds the services; with [`Backend::Memory`] the queue's receiving end is returned too.
    pub async fn build(mut settings: Settings) -> Result<(Services, QueueSource), ConfigError> {
        let aws = match (&settings.backend, &settings.app_password_secret_arn) {
            (Backend::Memory, None) => None,
            _ => Some(aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await),
        };
        if let (Some(arn), Some(aws)) = (settings.app_password_secret_arn.clone(), &aws)
            && settings.auth.app_password.is_none()
        {
            settings.auth.app_password = Some(read_app_password(aws, &arn).await?);
        }

        match (&settings.backend, &aws) {
            (
                Backend::Aws {
                    table_name,
                    queue_url,
                },
                Some(aws),
            ) => {
                let dynamodb = aws_sdk_dynamodb::Client::new(aws);
                let sqs = aws_sdk_sqs::Client::new(aws);
                let store = DynamoJobStore::new(
                    dynamodb,
                    table_name.clone(),
                    chrono::Duration::days(i64::from(settings.job_retention_days)),
                );
                let queue = SqsCompletionQueue::new(sqs.clone(), queue_url.clone());
                let services =
                    Services::with_ports(&settings.auth, Arc::new(store), Arc::new(queue))?;
                Ok((
                    services,
                    QueueSource::Sqs(SqsPoller::new(sqs, queue_url.clone())),
                ))
            }
            _ => {
                if crate::telemetry::in_lambda() {
                    tracing::warn!(
                        "JOBS_TABLE_NAME and COMPLETIONS_QUEUE_URL are not set: jobs live in this instance's memory only"
                    );
                }
                let (services, receiver) = Services::in_memory(&settings.auth)?;
                Ok((services, QueueSource::Memory(receiver)))
            }
        }
    }

    /// The embedded default: an in-memory store and queue, and the queue's receiving end for
    /// an in-process consumer.
    pub fn in_memory(auth: &AuthConfig) -> Result<(Services, MemoryQueueReceiver), ConfigError> {
        let (queue, receiver) = MemoryCompletionQueue::new();
        let services =
            Services::with_ports(auth, Arc::new(MemoryJobStore::new()), Arc::new(queue))?;
        Ok((services, receiver))
    }

    /// Builds the services over ports the caller made (tests, other backends): the Connector
    /// client with the bot's credentials and serviceUrl policy, the authenticator, the bot and
    /// the worker.
    pub fn with_ports(
        auth: &AuthConfig,
        store: Arc<dyn JobStore>,
        queue: Arc<dyn CompletionQueue>,
    ) -> Result<Services, ConfigError> {
        if !auth.is_enabled() {
            tracing::warn!(
                "MicrosoftAppId is not set: authentication is off (Emulator mode); anyone who can reach the endpoint can talk to the bot"
            );
        }
        let auth = Auth::new(auth, reqwest::Client::new());
        let connector = ConnectorClient::new(ConnectorConfig {
            credentials: auth.credentials.clone(),
            policy: auth.policy.clone(),
            ..ConnectorConfig::default()
        })
        .map_err(|e| ConfigError::Http(e.to_string()))?;
        let bot = Arc::new(Bot::new(store.clone(), queue.clone(), connector.clone()));
        let worker = Arc::new(CompletionWorker::new(
            store.clone(),
            connector,
            WorkerConfig::default(),
        ));
        Ok(Services {
            bot,
            worker,
            authenticator: Arc::new(auth.authenticator),
            policy: auth.policy.clone(),
            store,
            queue,
        })
    }

    /// The HTTP router over these services.
    pub fn router(&self) -> axum::Router {
        crate::http::app(crate::http::AppState {
            bot: self.bot.clone(),
            authenticator: self.authenticator.clone(),
            policy: self.policy.clone(),
        })
    }
}

/// The app password from Secrets Manager: the secret string itself, or a JSON object's
/// `MicrosoftAppPassword` field. Read once, at start (a Lambda cold start).
pub async fn read_app_password(
    aws: &aws_config::SdkConfig,
    arn: &str,
) -> Result<String, ConfigError> {
    let client = aws_sdk_secretsmanager::Client::new(aws);
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            ConfigError::Secret(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())
        })?;
    let secret = output
        .secret_string()
        .ok_or_else(|| ConfigError::Secret(format!("secret {arn} has no string value")))?;
    Ok(password_from_secret(secret))
}

fn password_from_secret(secret: &str) -> String {
    serde_json::from_str::<serde_json::Value>(secret)
        .ok()
        .and_then(|v| v.get("MicrosoftAppPassword")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| secret.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_may_be_plain_or_json() {
        assert_eq!(password_from_secret("s3cret\n"), "s3cret");
        assert_eq!(password_from_secret(r#"{"MicrosoftAppPassword":"p"}"#), "p");
    }
}
