//! Cold start of the HTTP function as Lambda runs it: the release binary is spawned against a
//! local Lambda Runtime API stand-in, which hands it `events/http-run.json`; the figure is the
//! time from spawn to the invocation's response (runtime init, clients built, one turn with
//! its reply to a Connector stand-in). In-memory state, so no AWS call is in the path.
//!
//! `cargo bench -p messages --bench lambda_cold_start`. Figures are printed, not asserted.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::routing::{get, post};
use proactive_bot::testing::connector::ConnectorStandIn;
use proactive_bot::testing::process::status_kib;
use tokio::sync::mpsc;

const RUNS: usize = 20;

#[derive(Clone)]
struct RuntimeApi {
    event: Arc<String>,
    served: Arc<Mutex<bool>>,
    done: mpsc::UnboundedSender<String>,
}

async fn next(State(api): State<RuntimeApi>) -> (HeaderMap, String) {
    let first = !std::mem::replace(&mut *api.served.lock().unwrap(), true);
    if !first {
        // One invocation per process: later polls wait until the process is killed.
        std::future::pending::<()>().await;
    }
    let mut headers = HeaderMap::new();
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 15_000;
    headers.insert(
        "lambda-runtime-aws-request-id",
        HeaderValue::from_static("req-1"),
    );
    headers.insert(
        "lambda-runtime-deadline-ms",
        HeaderValue::from_str(&deadline.to_string()).unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:messages"),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
    );
    (headers, api.event.as_str().to_owned())
}

async fn respond(
    State(api): State<RuntimeApi>,
    Path(_id): Path<String>,
    body: String,
) -> &'static str {
    let _ = api.done.send(body);
    "{}"
}

async fn failed(State(api): State<RuntimeApi>, body: String) -> &'static str {
    let _ = api.done.send(format!("ERROR {body}"));
    "{}"
}

async fn start_runtime_api(
    event: String,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<String>,
    Arc<Mutex<bool>>,
) {
    let (done, results) = mpsc::unbounded_channel();
    let served = Arc::new(Mutex::new(false));
    let api = RuntimeApi {
        event: Arc::new(event),
        served: served.clone(),
        done,
    };
    let router = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(respond),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(failed))
        .route("/2018-06-01/runtime/init/error", post(failed))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, results, served)
}

#[tokio::main]
async fn main() {
    let connector = ConnectorStandIn::start().await;
    let event = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../events/http-run.json"
    ))
    .expect("events/http-run.json")
    .replace(
        "http://127.0.0.1:3979",
        connector.service_url().trim_end_matches('/'),
    );
    let (addr, mut results, served) = start_runtime_api(event).await;

    let mut times = Vec::with_capacity(RUNS);
    let mut peak_kib = 0;
    for _ in 0..RUNS {
        *served.lock().unwrap() = false;
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_messages"))
            .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "messages")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
            .env("AWS_REGION", "us-east-1")
            .env("RUST_LOG", "warn")
            .env_remove("JOBS_TABLE_NAME")
            .env_remove("COMPLETIONS_QUEUE_URL")
            .env_remove("MicrosoftAppId")
            // No app id inside Lambda: allowed on purpose, and the Connector stand-in (plain
            // http on loopback) must be named, as Lambda never relaxes the allowlist.
            .env("ALLOW_ANONYMOUS_EMULATOR_MODE", "true")
            .env("ALLOWED_SERVICE_URL_HOSTS", "127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the function binary");
        let response = tokio::time::timeout(Duration::from_secs(20), results.recv())
            .await
            .expect("the function answered within 20 s")
            .expect("runtime API running");
        let elapsed = started.elapsed();
        assert!(
            response.contains("\"statusCode\":200"),
            "unexpected response: {response}"
        );
        if let Some(kib) = status_kib(child.id(), "VmHWM:") {
            peak_kib = peak_kib.max(kib);
        }
        let _ = child.kill();
        let _ = child.wait();
        times.push(elapsed);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "lambda cold start (spawn → first invocation answered, {RUNS} runs): median {:.1} ms, min {:.1} ms, max {:.1} ms; peak RSS {} KiB",
        ms(times[RUNS / 2]),
        ms(times[0]),
        ms(times[RUNS - 1]),
        peak_kib
    );
    assert!(
        connector.requests().len() >= RUNS,
        "every run replied to the Connector"
    );
}
