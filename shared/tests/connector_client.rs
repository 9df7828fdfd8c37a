//! The Connector client against a local HTTP server standing in for the channel (and a local
//! identity provider for its tokens).

use std::sync::Arc;
use std::time::Duration;

use proactive_bot::auth::AppCredentials;
use proactive_bot::connector::{ConnectorClient, ConnectorConfig, ConnectorError};

use proactive_bot::schema::{Activity, ConversationAccount};
use proactive_bot::testing::connector::{ConnectorStandIn, ScriptedResponse};
use proactive_bot::testing::idp::TestIdp;

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
    assert!(gone(&error));
    assert!(!retried(&error));
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
    assert!(retried(&error));
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
    assert!(retried(&error));
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
    assert!(retried(&error));
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
    assert!(!retried(&error));
    assert!(connector.requests().is_empty());
}

#[tokio::test]
async fn a_redirect_is_an_error_and_is_never_followed() {
    let connector = ConnectorStandIn::start().await;
    let elsewhere = ConnectorStandIn::start().await;
    let target = format!("{}v3/conversations/c/activities", elsewhere.service_url());
    connector.script(ScriptedResponse::status(302, None).with_header("Location", &target));
    let error = client()
        .send_to_conversation(&message(&connector, "c", None))
        .await
        .unwrap_err();
    match &error {
        ConnectorError::Status {
            status, message, ..
        } => {
            assert_eq!(*status, 302);
            assert!(message.contains("redirect refused"), "{message}");
            assert!(!message.contains(&target), "{message}");
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    assert!(!retried(&error));
    assert_eq!(connector.requests().len(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        elsewhere.requests().is_empty(),
        "the redirect target got a request"
    );
}

#[tokio::test]
async fn retry_after_is_read_from_any_error_status_in_either_form() {
    let connector = ConnectorStandIn::start().await;
    connector.script(ScriptedResponse::status(503, None).with_header("Retry-After", "12"));
    let in_a_minute = (chrono::Utc::now() + chrono::Duration::seconds(60))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    connector.script(ScriptedResponse::status(429, None).with_header("Retry-After", &in_a_minute));
    connector.script(
        ScriptedResponse::status(503, None)
            .with_header("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT"),
    );
    connector.script(ScriptedResponse::status(503, None).with_header("Retry-After", "later"));
    let client = client();
    let mut delays = Vec::new();
    for _ in 0..4 {
        match client
            .send_to_conversation(&message(&connector, "c", None))
            .await
        {
            Err(ConnectorError::Status { retry_after, .. }) => delays.push(retry_after),
            other => panic!("expected a status error, got {other:?}"),
        }
    }
    assert_eq!(delays[0], Some(Duration::from_secs(12)));
    let date = delays[1].expect("an HTTP date is read");
    assert!(
        date > Duration::from_secs(55) && date <= Duration::from_secs(60),
        "{date:?}"
    );
    assert_eq!(delays[2], Some(Duration::ZERO), "a past date: no delay");
    assert_eq!(delays[3], None, "garbage is ignored");
}

#[tokio::test]
async fn a_service_url_that_cannot_form_a_url_is_refused_without_a_request() {
    let connector = ConnectorStandIn::start().await;
    let client = client();
    for service_url in ["", "not a url", "ftp://127.0.0.1/amer/", "http://"] {
        let activity = Activity {
            service_url: Some(service_url.to_owned()),
            ..message(&connector, "c", None)
        };
        let error = client.send_to_conversation(&activity).await.unwrap_err();
        assert!(
            matches!(&error, ConnectorError::InvalidUrl(url) if url == service_url),
            "{service_url:?}: {error:?}"
        );
        assert!(!retried(&error));
    }
    assert!(connector.requests().is_empty());
}

#[tokio::test]
async fn an_update_puts_the_activity_at_its_id() {
    let connector = ConnectorStandIn::start().await;
    connector.script(ScriptedResponse::status(200, Some(r#"{"id":"1:sent"}"#)));
    let response = client()
        .update_activity(&message(&connector, "19:x@thread.skype", None), "1:sent/1")
        .await
        .unwrap();
    assert_eq!(response.id.as_deref(), Some("1:sent"));
    let requests = connector.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "PUT");
    assert_eq!(
        requests[0].path,
        "/amer/v3/conversations/19%3Ax%40thread.skype/activities/1%3Asent%2F1"
    );
    assert_eq!(requests[0].text(), "hello");
}

#[tokio::test]
async fn an_update_maps_errors_like_a_send() {
    let connector = ConnectorStandIn::start().await;
    connector.script(ScriptedResponse::status(
        404,
        Some(r#"{"error":{"code":"ConversationNotFound","message":"gone"}}"#),
    ));
    let error = client()
        .update_activity(&message(&connector, "c", None), "1:sent")
        .await
        .unwrap_err();
    assert!(gone(&error), "{error:?}");
}

#[tokio::test]
async fn invalidated_credentials_fetch_a_new_token_for_the_next_send() {
    let idp = TestIdp::start().await;
    let connector = ConnectorStandIn::start().await;
    let credentials = AppCredentials::from_config(
        &idp.auth_config("6b3f5e2a-0000-4000-8000-00000000b0b1"),
        reqwest::Client::new(),
    )
    .expect("an app id is configured");
    let client = ConnectorClient::new(ConnectorConfig {
        credentials: Arc::new(credentials),
        ..ConnectorConfig::default()
    })
    .unwrap();
    let activity = message(&connector, "c", None);
    client.send_to_conversation(&activity).await.unwrap();
    client.send_to_conversation(&activity).await.unwrap();
    assert_eq!(idp.token_request_count(), 1, "the token is cached");
    client.invalidate_credentials();
    client.send_to_conversation(&activity).await.unwrap();
    assert_eq!(
        idp.token_request_count(),
        2,
        "invalidate forced a new token"
    );
    let headers: Vec<_> = connector
        .requests()
        .into_iter()
        .map(|r| r.authorization.unwrap_or_default())
        .collect();
    assert_eq!(headers[0], "Bearer test-access-token-1");
    assert_eq!(headers[1], "Bearer test-access-token-1");
    assert_eq!(headers[2], "Bearer test-access-token-2");
}

/// The engine's verdict (`delivery::answers`): tried again later.
fn retried(error: &proactive_bot::connector::ConnectorError) -> bool {
    matches!(
        proactive_bot::delivery::answers::classify(error, false),
        proactive_bot::delivery::answers::Verdict::Transient { .. }
    )
}

/// The engine's verdict: the conversation is gone for the bot.
fn gone(error: &proactive_bot::connector::ConnectorError) -> bool {
    matches!(
        proactive_bot::delivery::answers::classify(error, false),
        proactive_bot::delivery::answers::Verdict::Permanent {
            conversation_gone: true,
            ..
        }
    )
}
