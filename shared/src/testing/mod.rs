//! Test support for this workspace's integration tests (the `testing` feature): a Bot
//! Connector stand-in, a moto server launcher for DynamoDB and SQS over the real wire protocol,
//! a local identity provider that signs tokens with test keys, and a log capture.

pub mod connector;
pub mod idp;
pub mod logs;
pub mod moto;
