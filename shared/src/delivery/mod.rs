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
//! - [`digest`]: several notifications due together, said in one message.
//! - [`fold`]: held notifications folded into the bot's reply to the user's next message.
//!
//! # Fitting the conversation
//! A notification should not interrupt more than it must. The engine waits a short **digest
//! window** after a notification is queued, so a burst for one conversation goes out as one
//! message ([`digest`]); it **holds** a non-urgent notification while the user is talking to
//! the bot (an activity within the quiet period, read from the registry), putting it back on
//! the queue until the conversation has been quiet that long — or until the bot answers the
//! user's next message, which then carries it ([`fold`]); and it delivers an **update** of an
//! earlier message in place (`PUT`). None of this knows what a job is: producers say what is
//! urgent, how their notifications read in a digest, and which earlier activity to update.
//!
//! # Storage
//! Notifications and the rate-limit state live in the delivery table (DynamoDB on AWS; see
//! [`crate::adapters::dynamodb_delivery`] for its layout and why it is separate from the jobs
//! table), their messages on a FIFO queue whose message group is the conversation.

pub mod answers;
pub mod consumer;
pub mod digest;
pub mod engine;
pub mod fold;
pub mod limits;
pub mod notification;
pub mod producer;

pub use engine::{Decision, Delivered, DeliveryEngine, EngineConfig};
pub use notification::{
    BatchEntry, BatchPage, Claim, Content, Created, DeliveryMessage, DeliveryState, DigestLine,
    Notification, NotificationId, NotificationQueue, NotificationStore, Outcome, Progress,
    QueueError, QueueMessage, Source, StoreError,
};
pub use producer::{Notifier, NotifyError};
