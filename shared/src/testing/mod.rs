//! Test support for this workspace's integration tests (the `testing` feature): a Bot
//! Connector stand-in, a Teams simulator that enforces the channel's rate limits, a moto
//! server launcher for DynamoDB and SQS over the real wire protocol, a local identity provider
//! that signs tokens with test keys, a log capture, and process memory readings for the
//! benchmarks.

pub mod connector;
pub mod idp;
pub mod logs;
pub mod moto;
pub mod process;
pub mod simulator;
