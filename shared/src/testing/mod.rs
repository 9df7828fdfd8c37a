//! Test support for this workspace's integration tests (the `testing` feature): a Bot
//! Connector stand-in, a moto server launcher for DynamoDB and SQS over the real wire protocol,
//! and a local identity provider that signs tokens with test keys.

pub mod connector;
pub mod idp;
pub mod moto;
