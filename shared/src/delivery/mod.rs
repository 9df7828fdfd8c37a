//! The delivery engine: every proactive message — a job's completion, a reminder, an API
//! notification, one recipient of a broadcast — is a durable [`Notification`] delivered here,
//! once, in order per conversation, within the channel's limits, and always ending in a state
//! `show` and the logs can report.
//!
//! - [`notification`]: the unit of delivery, its states, and its ports ([`NotificationStore`],
//!   [`NotificationQueue`]).
//! - [`limits`]: channel rate limits shared by every concurrent invocation.

pub mod limits;
pub mod notification;

pub use notification::{
    Claim, Content, Created, DeliveryMessage, DeliveryState, Notification, NotificationId,
    NotificationQueue, NotificationStore, Outcome, QueueError, Source, StoreError,
};
