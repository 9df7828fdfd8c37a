//! placeholder: SQS adapter
