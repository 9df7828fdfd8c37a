//! Adapters of the ports: in memory (local runner, unit tests), DynamoDB and SQS.

pub mod dynamodb;
pub mod dynamodb_delivery;
pub mod dynamodb_registry;
mod item;
pub mod memory;
pub mod memory_registry;
pub mod sqs;
