//! Outgoing authentication (bot → Connector) against a local identity provider, and the
//! serviceUrl allowlist that decides where the token may go.

use std::sync::Arc;
use std::time::Duration;

use proactive_bot::auth::{
    AppCredentials, AppType, Auth, AuthConfig, BOT_FRAMEWORK_SCOPE, ConfigError,
    ServiceUrlAllowlist, TokenError,
};
use proactive_bot::connector::{Credentials, ServiceUrlPolicy};
use proactive_bot::testing::idp::{TEST_APP_PASSWORD, TestIdp};

const APP_ID: &str = "6b3f5e2a-0000-4000-8000-00000000b0b1";
const TENANT: &str = "11111111-2222-3333-4444-555555555555";

fn credentials(config: &AuthConfig) -> AppCredentials {
    AppCredentials::from_config(config, reqwest::Client::new())
        .expect("an app id is configured")
        .with_retry_delay(Duration::from_millis(10))
}

#[tokio::test]
async fn two_calls_make_one_token_request() {
    let idp = TestIdp::start().await;
    let creds = credentials(&idp.auth_config(APP_ID));
    let first = creds.authorization().await.expect("token");
    let second = creds.authorization().await.expect("token");
    assert_eq!(first.as_deref(), Some("Bearer test-access-token-1"));
    assert_eq!(first, second);
    assert_eq!(idp.token_request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_callers_on_a_cold_cache_share_one_token_request() {
    let idp = TestIdp::start().await;
    idp.set_delay(Duration::from_millis(200));
    let creds = Arc::new(credentials(&idp.auth_config(APP_ID)));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let creds = creds.clone();
            tokio::spawn(async move { creds.authorization().await })
        })
        .collect();
    for task in tasks {
        let header = task.await.expect("task").expect("token");
        assert_eq!(header.as_deref(), Some("Bearer test-access-token-1"));
    }
    assert_eq!(idp.token_request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_a_short_lived_token_fetched_for_them() {
    let idp = TestIdp::start().await;
    idp.set_delay(Duration::from_millis(200));
    idp.set_token_expires_in(120);
    let creds = Arc::new(credentials(&idp.auth_config(APP_ID)));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let creds = creds.clone();
            tokio::spawn(async move { creds.authorization().await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("token");
    }
    assert_eq!(idp.token_request_count(), 1);
}

#[tokio::test]
async fn a_token_within_five_minutes_of_expiry_is_fetched_again() {
    let idp = TestIdp::start().await;
    idp.set_token_expires_in(301);
    let creds = credentials(&idp.auth_config(APP_ID));
    let first = creds.authorization().await.expect("token");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = creds.authorization().await.expect("token");
    assert_eq!(idp.token_request_count(), 2);
    assert_ne!(first, second);
    assert_eq!(second.as_deref(), Some("Bearer test-access-token-2"));
}

#[tokio::test]
async fn multi_tenant_bots_get_tokens_from_botframework_com() {
    let idp = TestIdp::start().await;
    credentials(&idp.auth_config(APP_ID))
        .authorization()
        .await
        .expect("token");
    let requests = idp.token_requests();
    assert_eq!(requests[0].tenant, "botframework.com");
    assert_eq!(requests[0].path, "/botframework.com/oauth2/v2.0/token");
}

#[tokio::test]
async fn single_tenant_bots_get_tokens_from_their_tenant() {
    let idp = TestIdp::start().await;
    let config = AuthConfig {
        app_type: AppType::SingleTenant,
        tenant_id: Some(TENANT.to_owned()),
        ..idp.auth_config(APP_ID)
    };
    credentials(&config).authorization().await.expect("token");
    let requests = idp.token_requests();
    assert_eq!(requests[0].tenant, TENANT);
    assert_eq!(requests[0].path, format!("/{TENANT}/oauth2/v2.0/token"));
}

#[tokio::test]
async fn the_form_carries_the_client_credentials_and_the_bot_framework_scope() {
    let idp = TestIdp::start().await;
    credentials(&idp.auth_config(APP_ID))
        .authorization()
        .await
        .expect("token");
    let request = &idp.token_requests()[0];
    assert_eq!(request.field("grant_type"), Some("client_credentials"));
    assert_eq!(request.field("client_id"), Some(APP_ID));
    assert_eq!(request.field("client_secret"), Some(TEST_APP_PASSWORD));
    assert_eq!(request.field("scope"), Some(BOT_FRAMEWORK_SCOPE));
    assert_eq!(BOT_FRAMEWORK_SCOPE, "https://api.botframework.com/.default");
}

#[tokio::test]
async fn a_503_then_success_is_retried() {
    let idp = TestIdp::start().await;
    idp.fail_next_token_requests(&[503]);
    let header = credentials(&idp.auth_config(APP_ID))
        .authorization()
        .await
        .expect("token after a retry");
    assert_eq!(header.as_deref(), Some("Bearer test-access-token-2"));
    assert_eq!(idp.token_request_count(), 2);
}

#[tokio::test]
async fn a_429_and_a_500_are_retried_within_three_attempts() {
    let idp = TestIdp::start().await;
    idp.fail_next_token_requests(&[429, 500]);
    credentials(&idp.auth_config(APP_ID))
        .authorization()
        .await
        .expect("token on the third attempt");
    assert_eq!(idp.token_request_count(), 3);
}

#[tokio::test]
async fn three_transient_failures_give_up() {
    let idp = TestIdp::start().await;
    idp.fail_next_token_requests(&[503, 503, 503, 503]);
    let error = credentials(&idp.auth_config(APP_ID))
        .authorization_header()
        .await
        .expect_err("gives up");
    assert!(
        matches!(error, TokenError::Status { status: 503, .. }),
        "{error:?}"
    );
    assert_eq!(idp.token_request_count(), 3);
}

#[tokio::test]
async fn a_refused_secret_is_not_retried_and_not_revealed() {
    let idp = TestIdp::start().await;
    idp.fail_next_token_requests(&[401]);
    let creds = credentials(&idp.auth_config(APP_ID));
    let error = creds.authorization().await.expect_err("refused");
    assert_eq!(idp.token_request_count(), 1);
    let text = error.to_string();
    assert!(text.contains("401"), "{text}");
    assert!(!text.contains(TEST_APP_PASSWORD), "{text}");
    assert!(!format!("{error:?}").contains(TEST_APP_PASSWORD));
}

#[tokio::test]
async fn the_secret_appears_neither_in_debug_output_nor_in_errors() {
    let idp = TestIdp::start().await;
    let config = idp.auth_config(APP_ID);
    let creds = credentials(&config);
    assert!(!format!("{creds:?}").contains(TEST_APP_PASSWORD));
    assert!(format!("{creds:?}").contains(APP_ID));
    assert!(!format!("{config:?}").contains(TEST_APP_PASSWORD));

    // Unreachable endpoint: the transport error does not carry the form either.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let unreachable = AuthConfig {
        login_url: format!("http://127.0.0.1:{port}"),
        ..config.clone()
    };
    let error = credentials(&unreachable)
        .authorization()
        .await
        .expect_err("unreachable");
    assert!(!error.to_string().contains(TEST_APP_PASSWORD));
    assert!(!format!("{error:?}").contains(TEST_APP_PASSWORD));
}

#[tokio::test]
async fn a_missing_password_is_an_error_without_a_request() {
    let idp = TestIdp::start().await;
    let config = AuthConfig {
        app_password: None,
        ..idp.auth_config(APP_ID)
    };
    let error = credentials(&config)
        .authorization_header()
        .await
        .expect_err("no password");
    assert_eq!(error, TokenError::MissingPassword);
    assert!(error.to_string().contains("MicrosoftAppPassword"));
    assert_eq!(idp.token_request_count(), 0);
}

#[tokio::test]
async fn a_password_provided_later_is_used() {
    let idp = TestIdp::start().await;
    let config = idp.auth_config(APP_ID);
    let mut from_env = AuthConfig {
        app_password: None,
        ..config
    };
    from_env.app_password = Some("from-secrets-manager".to_owned());
    let auth = Auth::new(&from_env, reqwest::Client::new());
    auth.credentials.authorization().await.expect("token");
    assert_eq!(
        idp.token_requests()[0].field("client_secret"),
        Some("from-secrets-manager")
    );
}

#[tokio::test]
async fn the_secret_and_the_token_are_never_logged() {
    let (captured, _guard) = proactive_bot::testing::logs::capture();

    let idp = TestIdp::start().await;
    idp.fail_next_token_requests(&[503, 401]);
    let creds = credentials(&idp.auth_config(APP_ID));
    creds.authorization().await.expect_err("401 after a retry");
    creds.authorization().await.expect("token");

    let logs = captured.text();
    assert!(logs.contains("token request failed"), "{logs}");
    assert!(!logs.contains(TEST_APP_PASSWORD), "{logs}");
    assert!(!logs.contains("test-access-token"), "{logs}");
}

// The Emulator mode and the facade.

#[tokio::test]
async fn auth_wires_app_credentials_when_an_app_id_is_set() {
    let idp = TestIdp::start().await;
    let auth = Auth::new(&idp.auth_config(APP_ID), reqwest::Client::new());
    assert!(auth.authenticator.is_enabled());
    let header = auth.credentials.authorization().await.expect("token");
    assert_eq!(header.as_deref(), Some("Bearer test-access-token-1"));
    assert!(
        auth.policy
            .check("https://smba.trafficmanager.net/amer/")
            .is_ok()
    );
    assert!(auth.policy.check("http://localhost:3979/").is_err());
}

#[tokio::test]
async fn the_emulator_mode_sends_no_token_and_allows_local_http() {
    let auth = Auth::new(&AuthConfig::default(), reqwest::Client::new());
    assert!(!auth.authenticator.is_enabled());
    assert_eq!(auth.credentials.authorization().await.expect("none"), None);
    assert!(auth.policy.check("http://localhost:53421/").is_ok());
    assert!(auth.policy.check("http://127.0.0.1:53421/").is_ok());
    assert!(
        auth.policy
            .check("https://webchat.botframework.com/")
            .is_ok()
    );
    assert!(auth.policy.check("http://192.168.1.20:53421/").is_err());
    assert!(auth.policy.check("ftp://localhost/").is_err());
}

// The allowlist (its matching rules are unit-tested in `auth/allowlist.rs`).

#[test]
fn the_allowlist_comes_from_allowed_service_url_hosts() {
    let config = AuthConfig::from_lookup(|name| {
        (name == "ALLOWED_SERVICE_URL_HOSTS").then(|| "127.0.0.1,localhost,example.com".to_owned())
    })
    .expect("config");
    let list = ServiceUrlAllowlist::new(&config.allowed_service_url_hosts, false);
    assert!(list.check("http://127.0.0.1:9999/connector/").is_ok());
    assert!(list.check("http://localhost:9999/").is_ok());
    assert!(list.check("http://example.com/").is_err());
    assert!(list.check("https://example.com/").is_ok());
    assert!(
        list.check("https://webchat.botframework.com/").is_err(),
        "the list replaces the defaults"
    );
}

// Configuration.

fn lookup(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[test]
fn single_tenant_without_a_tenant_is_an_error_naming_microsoft_app_tenant_id() {
    let error = AuthConfig::from_lookup(lookup(&[
        ("MicrosoftAppId", APP_ID),
        ("MicrosoftAppType", "SingleTenant"),
        ("MicrosoftAppTenantId", ""),
    ]))
    .expect_err("tenant required");
    assert_eq!(error, ConfigError::MissingTenantId);
    assert!(error.to_string().contains("MicrosoftAppTenantId"));
}

#[test]
fn user_assigned_msi_is_not_supported() {
    let error = AuthConfig::from_lookup(lookup(&[
        ("MicrosoftAppId", APP_ID),
        ("MicrosoftAppType", "UserAssignedMSI"),
    ]))
    .expect_err("not supported");
    assert!(error.to_string().contains("not supported"), "{error}");
}

#[test]
fn an_empty_app_id_turns_authentication_off() {
    let config = AuthConfig::from_lookup(lookup(&[
        ("MicrosoftAppId", ""),
        ("MicrosoftAppPassword", "ignored"),
    ]))
    .expect("config");
    assert!(!config.is_enabled());
    assert!(AppCredentials::from_config(&config, reqwest::Client::new()).is_none());
}
