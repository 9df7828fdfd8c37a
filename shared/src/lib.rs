//! The proactive job bot's library: everything both Lambda functions and the local runner
//! share.
//!
//! - [`schema`]: the Bot Framework activity and conversation reference.
//! - [`connector`]: the Bot Connector REST client (reply, send to a conversation).
//! - [`auth`]: channel → bot token validation, bot → Connector tokens, the serviceUrl allowlist.
//! - [`jobs`]: the job model and its port, [`jobs::JobStore`]: one producer of notifications.
//! - [`delivery`]: the engine every proactive message goes through, and its ports.
//! - [`registry`]: the conversations that talked to the bot; only active ones can be notified.
//! - [`notify`]: the notify API and broadcasts, a producer of notifications.
//! - [`reminders`]: `remind me in 10 minutes to …`, a producer of notifications, and its ports.
//! - [`adapters`]: in-memory, DynamoDB, SQS and EventBridge Scheduler implementations of
//!   those ports.
//! - [`bot`]: the conversation — what each activity does.
//! - [`http`]: the `POST /api/messages` router served by Lambda and locally.
//! - [`metrics`]: CloudWatch metrics as Embedded Metric Format lines, one flush per invocation.
//! - [`config`]: settings from the environment; [`wiring`]: every client built once from them.
//! - [`tls`]: the one TLS configuration every HTTPS client shares (compiled-in roots).

pub mod adapters;
pub mod auth;
pub mod bot;
pub mod config;
pub mod connector;
pub mod delivery;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod notify;
pub mod registry;
pub mod reminders;
pub mod schema;
pub mod telemetry;
pub mod tls;
pub mod wiring;

#[cfg(feature = "testing")]
pub mod testing;
