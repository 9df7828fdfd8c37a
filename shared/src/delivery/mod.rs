//! The delivery engine: every proactive message — a job's completion, a reminder, an API
//! notification, one recipient of a broadcast — is a durable [`Notification`] delivered here,
//! once, in order per conversation, within the channel's limits, and always ending in a state
//! `show` and the logs can report.
//!
//! - [`notification`]: the unit of delivery, its states, and its ports ([`NotificationStore`],
//!   [`NotificationQueue`]).
//! - [`producer`]: [`Notifier`], how producers hand notifications over.
//! - [`engine`]: [`DeliveryEngine`], admit → claim → send → judge → record → decide.
//! - [`answers`]: what each Connector answer means, and when to try again.
//! - [`limits`]: channel rate limits shared by every concurrent invocation.
//! - [`consumer`]: applying the engine's decisions to the queue, in Lambda and locally.
//!
//! # Storage
//! Notifications and the rate-limit state live in the delivery table (DynamoDB on AWS; see
//! [`crate::adapters::dynamodb_delivery`] for its layout and why it is separate from the jobs
//! table), their messages on a FIFO queue whose message group is the conversation.

pub mod answers;
pub mod consumer;
pub mod engine;
pub mod limits;
pub mod notification;
pub mod producer;

pub use engine::{Decision, Delivered, DeliveryEngine, EngineConfig};
pub use notification::{
    BatchEntry, BatchPage, Claim, Content, Created, DeliveryMessage, DeliveryState, Notification,
    NotificationId, NotificationQueue, NotificationStore, Outcome, Progress, QueueError,
    QueueMessage, Source, StoreError,
};
pub use producer::{Notifier, NotifyError};
