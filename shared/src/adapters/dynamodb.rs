//! placeholder: DynamoDB adapter
