//! Builds every client once, from [`Settings`], for the two Lambda functions and the local
//! runner: the stores, registry and queue of the chosen [`Backend`], the Connector client with
//! the bot's credentials and serviceUrl policy, the channel authenticator, the bot (which
//! registers every conversation that talks to it), the notifier, the delivery engine (which
//! delivers only to registered, active conversations), the notify API, and reminders (their
//! store, and a scheduler: an in-process timer, or EventBridge Scheduler on AWS).

use std::sync::Arc;
use std::time::Duration;

use crate::adapters::dynamodb::DynamoJobStore;
use crate::adapters::dynamodb_delivery::DynamoDeliveryStore;
use crate::adapters::dynamodb_registry::DynamoConversationRegistry;
use crate::adapters::dynamodb_reminders::DynamoReminderStore;
use crate::adapters::eventbridge::EventBridgeScheduler;
use crate::adapters::local_reminders::{LocalTimer, MemoryReminderStore};
use crate::adapters::memory::{
    MemoryJobStore, MemoryNotificationStore, MemoryQueue, MemoryRateLimitStore,
};
use crate::adapters::memory_registry::MemoryConversationRegistry;
use crate::adapters::memory_requests::MemoryRequestStore;
use crate::adapters::sqs::SqsQueue;
use crate::auth::{Auth, AuthConfig, ChannelAuthenticator};
use crate::bot::Bot;
use crate::config::{Backend, ConfigError, ReminderScheduling, Settings};
use crate::connector::{ConnectorClient, ConnectorConfig, ServiceUrlPolicy};
use crate::delivery::consumer::DeliveryQueue;
use crate::delivery::fold::Folder;
use crate::delivery::limits::{LimitsConfig, RateLimitStore, RateLimiter};
use crate::delivery::{
    DeliveryEngine, EngineConfig, NotificationQueue, NotificationStore, Notifier,
};
use crate::jobs::JobStore;
use crate::notify::api::NotifyAuth;
use crate::notify::{BroadcastTask, FanOutConfig, NotifyService, RequestStore};
use crate::registry::{ConversationRegistry, DEFAULT_REFRESH, Registrar, RegistryRetention};
use crate::reminders::{ReminderScheduler, ReminderStore, Reminders};

/// How long a message the in-memory queue handed out stays invisible unless the engine says
/// otherwise: longer than the engine's lease, as the template's visibility timeout is.
pub const MEMORY_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(90);

/// Everything a process serves with.
pub struct Services {
    pub bot: Arc<Bot>,
    pub engine: Arc<DeliveryEngine>,
    pub notifier: Arc<Notifier>,
    pub authenticator: Arc<ChannelAuthenticator>,
    pub policy: Arc<dyn ServiceUrlPolicy>,
    pub jobs: Arc<dyn JobStore>,
    pub notifications: Arc<dyn NotificationStore>,
    /// The conversations that talked to the bot: the bot records them, the engine delivers
    /// only to the active ones.
    pub registry: Arc<dyn ConversationRegistry>,
    /// The delivery queue: producers enqueue; the local runner consumes it as Lambda's event
    /// source mapping would, and the delivery function applies decisions to it.
    pub queue: Arc<dyn DeliveryQueue>,
    /// The notify API's producer (named conversations and broadcasts).
    pub notify: Arc<NotifyService>,
    /// Who may call the notify API: IAM inside Lambda, `NOTIFY_API_KEY` locally.
    pub notify_auth: NotifyAuth,
    /// `remind me …`, `reminders`, `cancel reminder N`.
    pub reminders: Arc<Reminders>,
}

/// The ports a [`Services`] is built over.
pub struct Ports {
    pub jobs: Arc<dyn JobStore>,
    pub notifications: Arc<dyn NotificationStore>,
    pub limits: Arc<dyn RateLimitStore>,
    pub registry: Arc<dyn ConversationRegistry>,
    pub queue: Arc<dyn DeliveryQueue>,
    pub requests: Arc<dyn RequestStore>,
    pub reminders: ReminderPorts,
}

/// The reminders' ports: each conversation's reminders, and what fires them.
pub struct ReminderPorts {
    pub store: Arc<dyn ReminderStore>,
    pub scheduler: Arc<dyn ReminderScheduler>,
}

impl ReminderPorts {
    /// Reminders in memory, fired by an in-process timer onto `queue`.
    pub fn in_memory(queue: Arc<dyn NotificationQueue>) -> ReminderPorts {
        ReminderPorts {
            store: Arc::new(MemoryReminderStore::new()),
            scheduler: Arc::new(LocalTimer::new(queue)),
        }
    }
}

impl Ports {
    /// The embedded default: everything in process memory.
    pub fn in_memory(max_receives: u32) -> Ports {
        let queue = Arc::new(MemoryQueue::new(MEMORY_VISIBILITY_TIMEOUT, max_receives));
        Ports {
            jobs: Arc::new(MemoryJobStore::new()),
            notifications: Arc::new(MemoryNotificationStore::new()),
            limits: Arc::new(MemoryRateLimitStore::new()),
            registry: Arc::new(MemoryConversationRegistry::new()),
            requests: Arc::new(MemoryRequestStore::new()),
            reminders: ReminderPorts::in_memory(queue.clone()),
            queue,
        }
    }

    /// DynamoDB and SQS, through `aws`: finished jobs and notifications are kept for
    /// `retention`, registered conversations for `registry_retention`. Reminders are kept in
    /// the delivery table and fired by an in-process timer onto the SQS queue;
    /// [`Services::build`] replaces the timer with EventBridge Scheduler when the settings say
    /// so ([`Ports::with_scheduler`]).
    pub fn aws(
        dynamodb: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
        backend: &Backend,
        retention: chrono::Duration,
        registry_retention: RegistryRetention,
    ) -> Option<Ports> {
        let Backend::Aws {
            jobs_table,
            delivery_table,
            queue_url,
            dead_letter_queue_url,
        } = backend
        else {
            return None;
        };
        let delivery = Arc::new(DynamoDeliveryStore::new(
            dynamodb.clone(),
            delivery_table.clone(),
            retention,
        ));
        let registry = Arc::new(DynamoConversationRegistry::new(
            dynamodb.clone(),
            delivery_table.clone(),
            registry_retention,
        ));
        let queue = Arc::new(SqsQueue::new(
            sqs,
            queue_url.clone(),
            dead_letter_queue_url.clone(),
        ));
        Some(Ports {
            reminders: ReminderPorts {
                store: Arc::new(DynamoReminderStore::new(
                    dynamodb.clone(),
                    delivery_table.clone(),
                )),
                scheduler: Arc::new(LocalTimer::new(queue.clone())),
            },
            jobs: Arc::new(DynamoJobStore::new(dynamodb, jobs_table.clone(), retention)),
            notifications: delivery.clone(),
            limits: delivery.clone(),
            registry,
            requests: delivery,
            queue,
        })
    }

    /// These ports with reminders fired by `scheduler`.
    pub fn with_scheduler(mut self, scheduler: Arc<dyn ReminderScheduler>) -> Ports {
        self.reminders.scheduler = scheduler;
        self
    }
}

impl Services {
    /// Builds the services of the configured backend.
    pub async fn build(mut settings: Settings) -> Result<Services, ConfigError> {
        let aws = match (&settings.backend, &settings.app_password_secret_arn) {
            (Backend::Memory, None) => None,
            _ => Some(
                aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .http_client(crate::tls::sdk_http_client(crate::tls::client_config()))
                    .load()
                    .await,
            ),
        };
        if let (Some(arn), Some(aws)) = (settings.app_password_secret_arn.clone(), &aws)
            && settings.auth.app_password.is_none()
        {
            settings.auth.app_password = Some(read_app_password(aws, &arn).await?);
        }
        let retention = chrono::Duration::days(i64::from(settings.job_retention_days));
        let ports = match (&settings.backend, &aws) {
            (Backend::Aws { .. }, Some(aws)) => Ports::aws(
                aws_sdk_dynamodb::Client::new(aws),
                aws_sdk_sqs::Client::new(aws),
                &settings.backend,
                retention,
                settings.registry_retention,
            )
            .expect("the AWS backend has its ports"),
            _ => {
                if crate::telemetry::in_lambda() {
                    tracing::warn!(
                        "JOBS_TABLE_NAME, DELIVERY_TABLE_NAME and the queue URLs are not set: state lives in this instance's memory only"
                    );
                }
                Ports::in_memory(settings.max_receives)
            }
        };
        let ports = match (&settings.reminders, &aws) {
            (ReminderScheduling::EventBridge(target), Some(aws)) => ports.with_scheduler(Arc::new(
                EventBridgeScheduler::new(aws_sdk_scheduler::Client::new(aws), target.clone()),
            )),
            // Settings only choose EventBridge with the AWS backend, which loads `aws`.
            (ReminderScheduling::EventBridge(_), None) => {
                return Err(ConfigError::EventBridgeWithoutAws);
            }
            (ReminderScheduling::Local, _) => {
                if crate::telemetry::in_lambda() {
                    tracing::warn!(
                        "REMINDERS_SCHEDULER=local in Lambda: reminders are timers in this instance and are lost when it stops"
                    );
                }
                ports
            }
        };
        Services::with_ports(&settings.auth, &settings, ports)
    }

    /// The embedded default over `auth` and default settings (tests, the local runner).
    pub fn in_memory(auth: &AuthConfig) -> Result<Services, ConfigError> {
        let settings = Settings::from_lookup(|_| None)?;
        Services::with_ports(auth, &settings, Ports::in_memory(settings.max_receives))
    }

    /// Builds the services over ports the caller made (tests, other backends): the Connector
    /// client with the bot's credentials and serviceUrl policy, the authenticator, the bot,
    /// the notifier and the engine.
    pub fn with_ports(
        auth: &AuthConfig,
        settings: &Settings,
        ports: Ports,
    ) -> Result<Services, ConfigError> {
        let mut services = Self::with_limits(
            auth,
            settings.limits.clone(),
            EngineConfig {
                max_receives: settings.max_receives,
                digest_window: settings.digest_window,
                quiet: settings.quiet,
                max_hold: settings.max_hold,
                ..EngineConfig::default()
            },
            ports,
        )?;
        services.notify_auth = if crate::telemetry::in_lambda() {
            NotifyAuth::Iam
        } else {
            match &settings.notify_api_key {
                Some(key) => NotifyAuth::ApiKey(Arc::from(key.expose())),
                None => NotifyAuth::Closed,
            }
        };
        Ok(services)
    }

    /// [`Services::with_ports`] with explicit limits and engine settings.
    pub fn with_limits(
        auth: &AuthConfig,
        limits: LimitsConfig,
        engine: EngineConfig,
        ports: Ports,
    ) -> Result<Services, ConfigError> {
        let auth = Auth::new(auth, crate::tls::reqwest_client());
        let connector = ConnectorClient::new(ConnectorConfig {
            credentials: auth.credentials.clone(),
            policy: auth.policy.clone(),
            ..ConnectorConfig::default()
        })
        .map_err(|e| ConfigError::Http(e.to_string()))?;
        let notifier = Arc::new(Notifier::new(
            ports.notifications.clone(),
            ports.queue.clone(),
        ));
        let reminders = Arc::new(Reminders::new(
            ports.reminders.store,
            ports.reminders.scheduler,
            notifier.clone(),
        ));
        // Holding notifications while the user talks needs every turn's time in the registry
        // (and that write returns what is held): no skipping then.
        let refresh = match engine.quiet.is_zero() {
            true => DEFAULT_REFRESH,
            false => std::time::Duration::ZERO,
        };
        let registrar = Registrar::new(ports.registry.clone(), refresh);
        let folder = Folder::new(ports.notifications.clone(), ports.registry.clone());
        // The engine's retirements reach the registrar of this process (the local runner), so
        // a conversation retired after a 403/404 is revived by its very next message.
        let engine_registry = registrar.forgetting_registry();
        let bot = Arc::new(
            Bot::new(ports.jobs.clone(), notifier.clone(), connector.clone())
                .with_reminders(reminders.clone())
                .with_registrar(registrar)
                .with_folder(folder),
        );
        let queue: Arc<dyn crate::delivery::NotificationQueue> = ports.queue.clone();
        let notify = Arc::new(NotifyService::new(
            ports.requests,
            ports.registry.clone(),
            notifier.clone(),
            queue,
            RateLimiter::new(ports.limits.clone(), limits.clone()),
            FanOutConfig::default(),
        ));
        let engine = Arc::new(
            DeliveryEngine::new(
                ports.notifications.clone(),
                RateLimiter::new(ports.limits, limits),
                connector,
                engine,
            )
            .with_registry(engine_registry)
            .with_task(Arc::new(BroadcastTask::new(notify.clone()))),
        );
        Ok(Services {
            bot,
            engine,
            notifier,
            authenticator: Arc::new(auth.authenticator),
            policy: auth.policy,
            jobs: ports.jobs,
            notifications: ports.notifications,
            registry: ports.registry,
            queue: ports.queue,
            notify,
            notify_auth: NotifyAuth::Closed,
            reminders,
        })
    }

    /// The HTTP router over these services.
    pub fn router(&self) -> axum::Router {
        crate::http::app(crate::http::AppState {
            bot: self.bot.clone(),
            authenticator: self.authenticator.clone(),
            policy: self.policy.clone(),
            notify: self.notify.clone(),
            notify_auth: self.notify_auth.clone(),
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
