//! Adapters of the ports: in memory (local runner, unit tests), DynamoDB and SQS.

pub mod dynamodb;
pub mod dynamodb_delivery;
pub mod dynamodb_requests;
mod item;
pub mod memory;
pub mod memory_registry;
pub mod memory_requests;
pub mod sqs;
