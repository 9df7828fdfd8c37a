//! Adapters of the job ports: in memory (local runner, unit tests), DynamoDB and SQS.

pub mod dynamodb;
pub mod memory;
pub mod sqs;
