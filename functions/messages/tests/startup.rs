//! Safe by default: inside Lambda, a function without `MicrosoftAppId` refuses to start unless
//! `ALLOW_ANONYMOUS_EMULATOR_MODE=true`, and even then it sends only to the serviceUrl
//! allowlist's hosts (the local runner's Emulator-mode relaxation does not apply there).
//!
//! The settings are read through a map (no process-wide environment is touched); the binary
//! itself is started with an environment of its own, as Lambda would start it.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use proactive_bot::auth::Auth;
use proactive_bot::config::{ConfigError, Settings};
use proactive_bot::testing::connector::ConnectorStandIn;
use proactive_bot::testing::process::{LambdaStart, start_in_lambda};
use support::*;

const APP_ID: &str = "00000000-0000-0000-0000-000000000001";

fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let env: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Settings::from_lookup(|name| env.get(name).cloned())
}

/// Either of Lambda's variables says "inside Lambda".
const IN_LAMBDA: [&[(&str, &str)]; 2] = [
    &[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")],
    &[(
        "AWS_LAMBDA_FUNCTION_NAME",
        "proactive-job-bot-MessagesFunction",
    )],
];

fn with(
    base: &[(&'static str, &'static str)],
    more: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    base.iter().chain(more).copied().collect()
}

#[test]
fn inside_lambda_no_app_id_is_refused_saying_what_to_set() {
    for lambda in IN_LAMBDA {
        for extra in [
            &[][..],
            &[("ALLOW_ANONYMOUS_EMULATOR_MODE", "false")],
            &[("ALLOW_ANONYMOUS_EMULATOR_MODE", "")],
            &[("MicrosoftAppId", "  ")],
        ] {
            let error = settings(&with(lambda, extra)).expect_err("must refuse");
            assert!(
                matches!(error, ConfigError::AnonymousInLambda),
                "{lambda:?} {extra:?}: {error}"
            );
            let text = error.to_string();
            for named in [
                "MicrosoftAppId",
                "ALLOW_ANONYMOUS_EMULATOR_MODE=true",
                "AllowAnonymousEmulatorMode",
            ] {
                assert!(text.contains(named), "{text}");
            }
        }
    }
}

#[test]
fn a_value_other_than_true_or_false_is_refused_by_name() {
    let error = settings(&with(
        IN_LAMBDA[0],
        &[("ALLOW_ANONYMOUS_EMULATOR_MODE", "yes")],
    ))
    .expect_err("must refuse");
    let text = error.to_string();
    assert!(text.contains("ALLOW_ANONYMOUS_EMULATOR_MODE"), "{text}");
    assert!(text.contains("true or false"), "{text}");
}

#[test]
fn inside_lambda_an_app_id_or_the_explicit_permission_starts() {
    for lambda in IN_LAMBDA {
        let authenticated = settings(&with(
            lambda,
            &[
                ("MicrosoftAppId", APP_ID),
                ("MicrosoftAppPassword", "secret"),
            ],
        ))
        .expect("an app id needs no permission");
        assert!(authenticated.auth.is_enabled());
        for allow in ["true", "TRUE", " true "] {
            let anonymous = settings(&with(lambda, &[("ALLOW_ANONYMOUS_EMULATOR_MODE", allow)]))
                .expect("anonymous on purpose");
            assert!(!anonymous.auth.is_enabled());
            assert!(!anonymous.auth.relax_allowlist_without_app_id);
        }
    }
}

#[test]
fn outside_lambda_no_app_id_is_the_local_emulator_mode_as_before() {
    let local = settings(&[]).expect("the local runner needs nothing");
    assert!(!local.auth.is_enabled());
    assert!(local.auth.relax_allowlist_without_app_id);
}

#[test]
fn anonymous_inside_lambda_sends_only_to_the_allowlist() {
    let allowed = |pairs: &[(&'static str, &'static str)], url: &str| {
        let settings = settings(pairs).expect("settings");
        Auth::new(&settings.auth, reqwest::Client::new())
            .policy
            .check(url)
            .is_ok()
    };
    let lambda = with(IN_LAMBDA[1], &[("ALLOW_ANONYMOUS_EMULATOR_MODE", "true")]);
    for refused in [
        "https://attacker.example.net/",
        "https://my-tunnel.example.net/api/",
        "http://localhost:53421/",
        "http://127.0.0.1:3979/",
        "https://attacker.trafficmanager.net/",
    ] {
        assert!(!allowed(&lambda, refused), "{refused} inside Lambda");
    }
    for fine in [
        "https://smba.trafficmanager.net/amer/",
        "https://webchat.botframework.com/",
    ] {
        assert!(allowed(&lambda, fine), "{fine} inside Lambda");
    }
    // Loopback over http only when named, as with an app id.
    let named = with(&lambda, &[("ALLOWED_SERVICE_URL_HOSTS", "127.0.0.1")]);
    assert!(allowed(&named, "http://127.0.0.1:3979/"));
    assert!(!allowed(&named, "http://localhost:3979/"));
    // The local runner keeps its relaxation for the desktop Emulator and tunnels.
    assert!(allowed(&[], "http://localhost:53421/"));
    assert!(allowed(&[], "https://my-tunnel.example.net/api/"));
}

#[tokio::test]
async fn an_anonymous_lambda_refuses_a_stranger_service_url_with_403_and_sends_nothing() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[
        (
            "AWS_LAMBDA_FUNCTION_NAME",
            "proactive-job-bot-MessagesFunction",
        ),
        ("ALLOW_ANONYMOUS_EMULATOR_MODE", "true"),
    ])
    .await;
    let mut a = Conversation::new("conv|livechat", "user-a", &connector);
    a.service_url = "https://relay-target.example.net/".to_owned();
    for text in ["run", "help"] {
        let (status, body) = post(&bot, &a.message(text)).await;
        assert_eq!(status, 403, "{text}: {body}");
    }
    // The local runner's Emulator mode would accept the loopback stand-in; here it is refused
    // too, because it is not named in ALLOWED_SERVICE_URL_HOSTS.
    let b = Conversation::new("conv-b|livechat", "user-b", &connector);
    assert_eq!(post(&bot, &b.message("run")).await.0, 403);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(services.jobs.list_recent(None, 10).await.unwrap().total, 0);
    assert!(connector.requests().is_empty());
    bot.stop().await.unwrap();
}

fn start_binary(env: &[(&str, &str)]) -> LambdaStart {
    start_in_lambda(
        std::path::Path::new(env!("CARGO_BIN_EXE_messages")),
        env,
        Duration::from_secs(30),
    )
}

#[test]
fn the_binary_without_an_app_id_exits_at_init_and_logs_why() {
    for env in [&[][..], &[("ALLOW_ANONYMOUS_EMULATOR_MODE", "false")]] {
        match start_binary(env) {
            LambdaStart::Exited { success, output } => {
                assert!(!success, "a refusal is a failed init: {output}");
                assert!(output.contains("refusing to start"), "{output}");
                assert!(
                    output.contains("ALLOW_ANONYMOUS_EMULATOR_MODE=true"),
                    "{output}"
                );
            }
            polled => panic!("it must not ask for an invocation: {polled:?}"),
        }
    }
}

#[test]
fn the_binary_starts_with_an_app_id_or_the_explicit_permission() {
    for env in [
        &[("ALLOW_ANONYMOUS_EMULATOR_MODE", "true")][..],
        &[
            ("MicrosoftAppId", APP_ID),
            ("MicrosoftAppPassword", "secret"),
            ("MicrosoftAppType", "MultiTenant"),
        ],
    ] {
        match start_binary(env) {
            LambdaStart::Polled { request_line } => assert!(
                request_line.starts_with("GET /2018-06-01/runtime/invocation/next"),
                "{request_line}"
            ),
            exited => panic!("{env:?}: it must start: {exited:?}"),
        }
    }
}
