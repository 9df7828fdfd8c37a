//! The HTTP function's metrics: sample events through its Lambda handler (`messages::handle`,
//! what `lambda_http` calls), the EMF lines it writes read back and checked against the
//! contract; and the release of those lines on stdout by the real binary under a Lambda Runtime
//! API stand-in.

use std::process::{Command, Stdio};
use std::time::Duration;

use proactive_bot::auth::AuthConfig;
use proactive_bot::metrics::{Function, Metrics};
use proactive_bot::testing::connector::ConnectorStandIn;
use proactive_bot::testing::metrics::{CapturedMetrics, check_emf};
use proactive_bot::testing::runtime_api::{Answer, RuntimeApi};
use proactive_bot::wiring::Services;
use serde_json::{Value, json};

/// The serviceUrl the sample events carry; the tests point it at the Connector stand-in.
const EVENTS_SERVICE_URL: &str = "http://127.0.0.1:3979";

fn event(name: &str, connector: &ConnectorStandIn) -> Value {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let service_url = connector.service_url();
    serde_json::from_str(&text.replace(EVENTS_SERVICE_URL, service_url.trim_end_matches('/')))
        .unwrap()
}

/// `event` with its activity's `type` replaced.
fn with_type(mut event: Value, kind: &str) -> Value {
    let mut activity: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    activity["type"] = json!(kind);
    event["body"] = json!(activity.to_string());
    event["headers"]
        .as_object_mut()
        .unwrap()
        .remove("content-length");
    event
}

async fn invoke(services: &Services, metrics: &Metrics, event: &Value) -> u16 {
    let request =
        lambda_http::request::from_str(&event.to_string()).expect("a valid Lambda HTTP event");
    messages::handle(services.router(), metrics, request)
        .await
        .status()
        .as_u16()
}

/// The names and units a directive lists, and its dimension sets.
fn directive(line: &Value, index: usize) -> (Vec<(String, String)>, Value) {
    let directive = &line["_aws"]["CloudWatchMetrics"][index];
    assert_eq!(directive["Namespace"], "ProactiveBot");
    let metrics = directive["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["Name"].as_str().unwrap().to_owned(),
                m["Unit"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (metrics, directive["Dimensions"].clone())
}

fn pairs(names: &[(&str, &str)]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|(n, u)| (n.to_string(), u.to_string()))
        .collect()
}

#[tokio::test]
async fn each_invocation_of_the_http_handler_writes_one_emf_line_counting_its_turn_by_kind() {
    let connector = ConnectorStandIn::start().await;
    let services = Services::in_memory(&AuthConfig::default()).unwrap();
    let captured = CapturedMetrics::default();
    let metrics = Metrics::new("test-stack", Function::Messages, Box::new(captured.clone()));

    let run = event("http-run.json", &connector);
    let mut not_json = run.clone();
    not_json["body"] = json!("not json");
    let mut notify = run.clone();
    notify["rawPath"] = json!("/api/notify/r-1");
    notify["requestContext"]["http"]["path"] = json!("/api/notify/r-1");
    notify["requestContext"]["http"]["method"] = json!("GET");
    notify["routeKey"] = json!("GET /api/notify/{id}");
    notify["requestContext"]["routeKey"] = json!("GET /api/notify/{id}");
    let invocations = [
        (
            event("http-conversation-update.json", &connector),
            200,
            Some("conversationUpdate"),
        ),
        (run.clone(), 200, Some("message")),
        (
            event("http-job-complete-event.json", &connector),
            200,
            Some("event"),
        ),
        (with_type(run.clone(), "invoke"), 501, Some("invoke")),
        (with_type(run.clone(), "typing"), 200, Some("other")),
        (
            with_type(run.clone(), "installationUpdate"),
            200,
            Some("installationUpdate"),
        ),
        // Refused before any turn, and a notify API call: no turn.
        (not_json, 400, None),
        (notify, 401, None),
    ];
    for (n, (event, status, _)) in invocations.iter().enumerate() {
        assert_eq!(invoke(&services, &metrics, event).await, *status, "#{n}");
    }

    let lines = captured.documents();
    assert_eq!(lines.len(), invocations.len(), "one line per invocation");
    for (n, (line, (_, _, kind))) in lines.iter().zip(&invocations).enumerate() {
        check_emf(line);
        assert_eq!(line["Stack"], "test-stack");
        assert_eq!(line["Function"], "messages");
        assert_eq!(line["ColdStart"], json!(u64::from(n == 0)), "#{n}");
        let timestamp = line["_aws"]["Timestamp"].as_i64().unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        assert!(
            (now - 60_000..=now).contains(&timestamp),
            "#{n}: {timestamp}"
        );
        let (main, dimensions) = directive(line, 0);
        assert_eq!(dimensions, json!([["Stack", "Function"]]));
        match kind {
            Some(kind) => {
                assert_eq!(
                    main,
                    pairs(&[
                        ("ColdStart", "Count"),
                        ("Turns", "Count"),
                        ("TurnDuration", "Milliseconds")
                    ]),
                    "#{n}"
                );
                assert_eq!(line["Turns"], 1);
                assert!(line["TurnDuration"].as_f64().unwrap() > 0.0, "#{n}");
                assert_eq!(line["Kind"], *kind, "#{n}");
                let (by_kind, dimensions) = directive(line, 1);
                assert_eq!(by_kind, pairs(&[("Turns", "Count")]));
                assert_eq!(dimensions, json!([["Stack", "Function", "Kind"]]));
            }
            None => {
                assert_eq!(
                    main,
                    pairs(&[("ColdStart", "Count"), ("Turns", "Count")]),
                    "#{n}"
                );
                assert_eq!(line["Turns"], 0, "#{n}: written as a zero");
                assert!(line.get("Kind").is_none() && line.get("TurnDuration").is_none());
                assert_eq!(
                    line["_aws"]["CloudWatchMetrics"].as_array().unwrap().len(),
                    1
                );
            }
        }
    }
}

#[tokio::test]
async fn the_lambda_binary_writes_its_metrics_to_stdout_with_the_stack_it_is_given() {
    let connector = ConnectorStandIn::start().await;
    let run = event("http-run.json", &connector).to_string();
    let mut api = RuntimeApi::start(vec![run.clone(), run]).await;
    let child = Command::new(env!("CARGO_BIN_EXE_messages"))
        .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "messages")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "test")
        .env("AWS_REGION", "us-east-1")
        // No app id inside Lambda: allowed explicitly (see the startup tests).
        .env("ALLOW_ANONYMOUS_EMULATOR_MODE", "true")
        // Inside Lambda the allowlist is strict: the stand-in Connector's host must be named.
        .env("ALLOWED_SERVICE_URL_HOSTS", "127.0.0.1")
        .env("METRICS_STACK", "ci-stack")
        .env("RUST_LOG", "info")
        .env_remove("JOBS_TABLE_NAME")
        .env_remove("DELIVERY_TABLE_NAME")
        .env_remove("NOTIFICATIONS_QUEUE_URL")
        .env_remove("NOTIFICATIONS_DEAD_LETTER_QUEUE_URL")
        .env_remove("MicrosoftAppId")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the function's binary");
    let stdout = lines_of(child, &mut api, 2).await;

    let emf: Vec<&Value> = stdout.iter().filter(|l| l.get("_aws").is_some()).collect();
    assert_eq!(emf.len(), 2, "one EMF line per invocation: {stdout:#?}");
    assert!(
        stdout.len() > emf.len(),
        "the JSON logs share stdout, each on its own line"
    );
    for (n, line) in emf.iter().enumerate() {
        check_emf(line);
        assert_eq!(
            (&line["Stack"], &line["Function"], &line["Kind"]),
            (&json!("ci-stack"), &json!("messages"), &json!("message"))
        );
        assert_eq!(line["ColdStart"], json!(u64::from(n == 0)));
        assert_eq!(line["Turns"], 1);
    }
}

/// Waits for `answers` invocations' answers, stops the child, and returns its stdout's lines,
/// each parsed as JSON (logs and metrics alike are JSON lines inside Lambda).
async fn lines_of(
    mut child: std::process::Child,
    api: &mut RuntimeApi,
    answers: usize,
) -> Vec<Value> {
    for _ in 0..answers {
        let answer = api.answer(Duration::from_secs(60)).await;
        assert!(
            matches!(&answer, Answer::Response(body) if body.contains("\"statusCode\":200")),
            "{answer:?}"
        );
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("the child's stdout");
    String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}
