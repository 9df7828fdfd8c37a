//! The process's one TLS configuration (`proactive_bot::tls`) over real handshakes: a local
//! HTTPS server with a certificate from a test CA (`testing::https`). The product's
//! configuration refuses it (the CA is not among the compiled-in roots); the same
//! configuration with the test CA added reaches it, through the Connector client and through
//! the AWS SDK's HTTP client alike.

use std::time::Duration;

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use axum::Router;
use axum::routing::post;
use proactive_bot::connector::{ConnectorClient, ConnectorConfig, ConnectorError};
use proactive_bot::schema::{Activity, ConversationAccount};
use proactive_bot::testing::connector::ConnectorStandIn;
use proactive_bot::testing::https;
use proactive_bot::tls;

fn message(connector: &ConnectorStandIn) -> Activity {
    Activity {
        service_url: Some(connector.service_url()),
        conversation: Some(ConversationAccount {
            id: "c".into(),
            ..Default::default()
        }),
        ..Activity::message("hello")
    }
}

#[tokio::test]
async fn the_connector_client_reaches_an_https_service_url_whose_chain_it_trusts() {
    let connector = ConnectorStandIn::start_https().await;
    let client = ConnectorClient::new(ConnectorConfig {
        tls: https::client_config(),
        ..ConnectorConfig::default()
    })
    .unwrap();
    client
        .send_to_conversation(&message(&connector))
        .await
        .unwrap();
    assert_eq!(connector.requests().len(), 1);
}

#[tokio::test]
async fn the_shared_configuration_refuses_a_certificate_from_an_unknown_ca() {
    let connector = ConnectorStandIn::start_https().await;
    let error = ConnectorClient::new(ConnectorConfig::default())
        .unwrap()
        .send_to_conversation(&message(&connector))
        .await
        .unwrap_err();
    match error {
        ConnectorError::Transport(text) => {
            assert!(text.contains("UnknownIssuer"), "{text}")
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(connector.requests().is_empty());
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_even_from_a_trusted_ca() {
    let connector = ConnectorStandIn::start_https().await;
    let client = ConnectorClient::new(ConnectorConfig {
        tls: https::client_config(),
        ..ConnectorConfig::default()
    })
    .unwrap();
    // The same server, addressed by its IP address: the certificate names only localhost.
    let url = connector.service_url().replace("localhost", "127.0.0.1");
    let activity = Activity {
        service_url: Some(url),
        ..message(&connector)
    };
    let error = client.send_to_conversation(&activity).await.unwrap_err();
    assert!(
        matches!(&error, ConnectorError::Transport(text) if text.contains("not valid for name")),
        "{error:?}"
    );
}

/// A DynamoDB `ListTables` answered by a local HTTPS server, through `tls`.
async fn list_tables(tls: rustls::ClientConfig) -> Result<Vec<String>, String> {
    list_tables_answered_after(tls, Duration::ZERO, None).await
}

/// [`list_tables`], the server answering after `delay`; `stalled` sets the SDK's
/// stalled-stream protection (the SDK's default otherwise).
async fn list_tables_answered_after(
    tls: rustls::ClientConfig,
    delay: Duration,
    stalled: Option<StalledStreamProtectionConfig>,
) -> Result<Vec<String>, String> {
    let router = Router::new().route(
        "/",
        post(move || async move {
            tokio::time::sleep(delay).await;
            (
                [("content-type", "application/x-amz-json-1.0")],
                r#"{"TableNames":["jobs"]}"#,
            )
        }),
    );
    let (addr, server) = https::serve_on_loopback(router, "DynamoDB stand-in").await;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(stalled) = stalled {
        loader = loader.stalled_stream_protection(stalled);
    }
    let config = loader
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .endpoint_url(format!("https://localhost:{}", addr.port()))
        .http_client(tls::sdk_http_client(tls))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .build(),
        )
        .load()
        .await;
    let result = aws_sdk_dynamodb::Client::new(&config)
        .list_tables()
        .send()
        .await
        .map(|output| output.table_names().to_vec())
        .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string());
    server.abort();
    result
}

#[tokio::test]
async fn the_aws_sdk_goes_through_the_same_configuration() {
    assert_eq!(list_tables(https::client_config()).await.unwrap(), ["jobs"]);
    let refused = list_tables(tls::client_config()).await.unwrap_err();
    assert!(refused.contains("UnknownIssuer"), "{refused}");
}

/// A request the server answers slowly (SQS's `ReceiveMessage` waits up to 10 s for a
/// message) has sent its body long before: the SDK's stalled-stream protection must count that
/// body as sent, or it takes the wait for a stalled upload and fails the request once its
/// grace period is over (seen: every long poll of the local runner failing after 6 s).
#[tokio::test]
async fn an_answer_slower_than_the_stalled_stream_grace_period_still_arrives() {
    let protection = StalledStreamProtectionConfig::enabled()
        .grace_period(Duration::from_millis(300))
        .build();
    // The protection judges a one-second window, then allows the grace period: 2.5 s is past
    // both.
    let answer = list_tables_answered_after(
        https::client_config(),
        Duration::from_millis(2500),
        Some(protection),
    )
    .await;
    assert_eq!(answer.unwrap(), ["jobs"]);
}
