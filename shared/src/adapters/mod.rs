//! Adapters of the ports: in memory (local runner, unit tests), DynamoDB, SQS and
//! EventBridge Scheduler.

pub mod dynamodb;
pub mod dynamodb_delivery;
pub mod dynamodb_registry;
pub mod dynamodb_reminders;
pub mod dynamodb_requests;
pub mod eventbridge;
mod item;
pub mod local_reminders;
pub mod memory;
pub mod memory_registry;
pub mod memory_requests;
pub mod sqs;
