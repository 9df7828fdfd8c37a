//! The Connector client against a local HTTP server standing in for the channel.

use std::sync::Arc;
use std::time::Duration;

use proactive_bot::connector::{ConnectorClient, ConnectorConfig, ConnectorError};
use proactive_bot::schema::{Activity, ConversationAccount};
use proactive_bot::testing::connector::{ConnectorStandIn, ScriptedResponse};

fn client() -> ConnectorClient {
    ConnectorClient::new(ConnectorConfig::default()).unwrap()
}

fn message(connector: &ConnectorStandIn, conversation: &str, reply_to: Option<&str>) -> Activity {
    Activity {
        service_url: Some(connector.service_url()),
        conversation: Some(ConversationAccount {
            id: conversation.to_owned(),
            ..Default::default()
        }),
        reply_to_id: reply_to.map(str::to_owned),
        ..Activity::message("hello")
    }
}

#[tokio::test]
async fn a_reply_posts_to_the_activity_under_the_service_url_prefix_and_reads_the_id() {
    let connector = ConnectorStandIn::start().await;
    connector.script(ScriptedResponse::status(200, Some(r#"{"id":"reply-1"}"#)));
    let response = client()
        .reply_to_activity(&message(
            &connector,
            "19:x@thread.skype;messageid=9",
            Some("1:a/b"),
        ))
        .await
        .unwrap();
    assert_eq!(response.id.as_deref(), Some("reply-1"));
    let requests = connector.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(
        requests[0].path,
        "/amer/v3/conversations/19%3Ax%40thread.skype%3Bmessageid%3D9/activities/1%3Aa%2Fb"
    );
    assert_eq!(requests[0].text(), "hello");
    assert_eq!(
        requests[0].authorization, None,
        "no app id: no Authorization header"
    );
}

#[tokio::test]
async fn a_proactive_send_posts_to_the_conversation_and_accepts_202_without_a_body() {
    let connector = ConnectorStandIn::start().await;
    connector.script(ScriptedResponse::status(202, None));
    connector.script(ScriptedResponse::status(201, Some(r#"{"id":"created"}"#)));
    let client = client();
    let first = client
        .send_to_conversation(&message(&connector, "a|livechat", None))
        .await
        .unwrap();
    assert_eq!(first.id, None);
    let second = client
        .send_to_conversation(&message(&connector, "a|livechat", None))
        .await
        .unwrap();
    assert_eq!(second.id.as_deref(), Some("created"));
    assert!(
        connector
            .requests()
            .iter()
            .all(|r| r.path == "/amer/v3/conversations/a%7Clivechat/activities")
    );
}

#[tokio::test]
async fn the_bot_framework_error_shape_is_parsed() {
    let connector = ConnectorStandIn::start().await;
    connector.script(
        ScriptedResponse::status(403, Some(r#"{"error":{"code":"BotNotInConversationRoster","message":"The bot is not part of the conversation roster."}}"#))
            .with_header("X-Correlating-OperationId", "op-123"),
    );
    let error = client()
        .send_to_conversation(&message(&connector, "c", None))
        .await
        .unwrap_err();
    match &error {
        ConnectorError::Status {
            status,
            code,
            message,
            correlation_id,
            ..
        } => {
            assert_eq!(*status, 403);
            assert_eq!(code.as_deref(), Some("BotNotInConversationRoster"));
            assert_eq!(message, "The bot is not part of the conversation roster.");
            assert_eq!(correlation_id.as_deref(), Some("op-123"));
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    assert!(error.is_conversation_gone());
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn the_teams_error_shape_is_parsed() {
    let connector = ConnectorStandIn::start().await;
    connector.script(ScriptedResponse::status(
        412,
        Some(r#"{"errorCode":209,"message":"{\"message\":\"MessageWritesBlocked\"}"}"#),
    ));
    let error = client()
        .send_to_conversation(&message(&connector, "c", None))
        .await
        .unwrap_err();
    match &error {
        ConnectorError::Status {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!(*status, 412);
            assert_eq!(code.as_deref(), Some("209"));
            assert!(message.contains("MessageWritesBlocked"));
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    assert!(error.is_retryable());
}

#[tokio::test]
async fn throttling_is_retryable_with_its_retry_after_and_a_plain_text_error_is_kept() {
    let connector = ConnectorStandIn::start().await;
    connector
        .script(ScriptedResponse::status(429, Some("slow down")).with_header("Retry-After", "3"));
    let error = client()
        .send_to_conversation(&message(&connector, "c", None))
        .await
        .unwrap_err();
    match &error {
        ConnectorError::Status {
            status,
            retry_after,
            message,
            code,
            ..
        } => {
            assert_eq!(*status, 429);
            assert_eq!(*retry_after, Some(Duration::from_secs(3)));
            assert_eq!(message, "slow down");
            assert_eq!(*code, None);
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_slow_connector_times_out() {
    let connector = ConnectorStandIn::start().await;
    connector.script(ScriptedResponse::status(200, Some("{}")).delayed(Duration::from_secs(5)));
    let client = ConnectorClient::new(ConnectorConfig {
        timeout: Duration::from_millis(200),
        ..ConnectorConfig::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let error = client
        .send_to_conversation(&message(&connector, "c", None))
        .await
        .unwrap_err();
    assert!(matches!(error, ConnectorError::Timeout), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_service_url_the_policy_refuses_is_never_called() {
    struct Nothing;
    impl proactive_bot::connector::ServiceUrlPolicy for Nothing {
        fn check(&self, _: &str) -> Result<(), String> {
            Err("test policy".into())
        }
    }
    let connector = ConnectorStandIn::start().await;
    let client = ConnectorClient::new(ConnectorConfig {
        policy: Arc::new(Nothing),
        ..ConnectorConfig::default()
    })
    .unwrap();
    let error = client
        .send_to_conversation(&message(&connector, "c", None))
        .await
        .unwrap_err();
    assert!(matches!(error, ConnectorError::ServiceUrlNotAllowed(_)));
    assert!(!error.is_retryable());
    assert!(connector.requests().is_empty());
}
