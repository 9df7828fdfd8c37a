//! Cold starts as Lambda runs a function: each release binary is spawned against a local
//! Lambda Runtime API stand-in, which hands it one event. Two figures per start:
//!
//! - **init**: spawn → the runtime's first `GET …/invocation/next`, what Lambda reports as
//!   *Init Duration* (the process starts, the clients are built);
//! - **first answer**: spawn → the first invocation's response (init, then one turn: for the
//!   messages function `events/http-run.json` with its reply to a Connector stand-in, for the
//!   delivery function `events/sqs-delivery.json`).
//!
//! Three binaries, built the same way and started in turn in the same run: lambda_http's hello
//! world (`hello-world`, the floor), `messages` and `delivery`. In-memory state, so no AWS call
//! is in the path. The environment is passed on as it is (`SSL_CERT_FILE`, `SSL_CERT_DIR`
//! included); the figures say what was set.
//!
//! ```sh
//! cargo build --release -p delivery       # the delivery binary (another package: built first)
//! cargo bench -p messages --bench lambda_cold_start
//! ```
//!
//! Figures are printed, not asserted.

use std::net::SocketAddr;
use std::path::PathBuf;
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

/// What the runtime API stand-in saw of one process.
enum Seen {
    /// The runtime asked for its first event: init is over.
    Polled(Instant),
    /// The invocation's response (or `ERROR …`).
    Answered(Instant, String),
}

#[derive(Clone)]
struct RuntimeApi {
    event: Arc<Mutex<String>>,
    served: Arc<Mutex<bool>>,
    seen: mpsc::UnboundedSender<Seen>,
}

async fn next(State(api): State<RuntimeApi>) -> (HeaderMap, String) {
    let polled = Instant::now();
    let first = !std::mem::replace(&mut *api.served.lock().unwrap(), true);
    if !first {
        // One invocation per process: later polls wait until the process is killed.
        std::future::pending::<()>().await;
    }
    let _ = api.seen.send(Seen::Polled(polled));
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
        HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:bench"),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
    );
    let event = api.event.lock().unwrap().clone();
    (headers, event)
}

async fn respond(
    State(api): State<RuntimeApi>,
    Path(_id): Path<String>,
    body: String,
) -> &'static str {
    let _ = api.seen.send(Seen::Answered(Instant::now(), body));
    "{}"
}

async fn failed(State(api): State<RuntimeApi>, body: String) -> &'static str {
    let _ = api
        .seen
        .send(Seen::Answered(Instant::now(), format!("ERROR {body}")));
    "{}"
}

async fn start_runtime_api() -> (SocketAddr, RuntimeApi, mpsc::UnboundedReceiver<Seen>) {
    let (seen, results) = mpsc::unbounded_channel();
    let api = RuntimeApi {
        event: Arc::new(Mutex::new(String::new())),
        served: Arc::new(Mutex::new(false)),
        seen,
    };
    let router = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(respond),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(failed))
        .route("/2018-06-01/runtime/init/error", post(failed))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, api, results)
}

/// One function under test.
struct Subject {
    name: &'static str,
    exe: PathBuf,
    event: String,
    /// A fragment every answer must contain.
    expect: &'static str,
    init: Vec<Duration>,
    answered: Vec<Duration>,
    peak_kib: u64,
}

fn event(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../events/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("events/{name}: {e}"))
}

/// The delivery function's binary: another package's, so it is found beside this benchmark's
/// own build output (`target/release/delivery`) rather than through `CARGO_BIN_EXE_…`.
fn delivery_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let release = exe.parent()?.parent()?;
    let delivery = release.join("delivery");
    delivery.is_file().then_some(delivery)
}

async fn start_once(
    subject: &mut Subject,
    addr: SocketAddr,
    api: &RuntimeApi,
    results: &mut mpsc::UnboundedReceiver<Seen>,
) {
    *api.event.lock().unwrap() = subject.event.clone();
    *api.served.lock().unwrap() = false;
    let started = Instant::now();
    let mut child = Command::new(&subject.exe)
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", subject.name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .env("AWS_REGION", "us-east-1")
        .env("RUST_LOG", "warn")
        // No app id inside Lambda: allowed on purpose, and the Connector stand-in (plain http
        // on loopback) must be named, as Lambda never relaxes the allowlist.
        .env("ALLOW_ANONYMOUS_EMULATOR_MODE", "true")
        .env("ALLOWED_SERVICE_URL_HOSTS", "127.0.0.1")
        .env_remove("JOBS_TABLE_NAME")
        .env_remove("DELIVERY_TABLE_NAME")
        .env_remove("NOTIFICATIONS_QUEUE_URL")
        .env_remove("MicrosoftAppId")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the function binary");
    let mut polled = None;
    let answer = loop {
        let seen = tokio::time::timeout(Duration::from_secs(20), results.recv())
            .await
            .expect("the function answered within 20 s")
            .expect("runtime API running");
        match seen {
            Seen::Polled(at) => polled = Some(at),
            Seen::Answered(at, body) => break (at, body),
        }
    };
    let (answered_at, body) = answer;
    assert!(
        body.contains(subject.expect),
        "{}: unexpected response: {body}",
        subject.name
    );
    if let Some(kib) = status_kib(child.id(), "VmHWM:") {
        subject.peak_kib = subject.peak_kib.max(kib);
    }
    let _ = child.kill();
    let _ = child.wait();
    subject
        .init
        .push(polled.expect("polled before answering") - started);
    subject.answered.push(answered_at - started);
}

fn median(times: &mut [Duration]) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let connector = ConnectorStandIn::start().await;
    let http_run = event("http-run.json").replace(
        "http://127.0.0.1:3979",
        connector.service_url().trim_end_matches('/'),
    );
    let subject = |name, exe: PathBuf, event: String, expect| Subject {
        name,
        exe,
        event,
        expect,
        init: Vec::with_capacity(RUNS),
        answered: Vec::with_capacity(RUNS),
        peak_kib: 0,
    };
    let mut subjects = vec![
        subject(
            "hello-world",
            env!("CARGO_BIN_EXE_hello-world").into(),
            http_run.clone(),
            "\"statusCode\":200",
        ),
        subject(
            "messages",
            env!("CARGO_BIN_EXE_messages").into(),
            http_run,
            "\"statusCode\":200",
        ),
    ];
    match delivery_exe() {
        Some(exe) => subjects.push(subject(
            "delivery",
            exe,
            event("sqs-delivery.json"),
            "batchItemFailures",
        )),
        None => println!(
            "delivery: not built in this profile's target directory; `cargo build --release -p delivery` first"
        ),
    }
    let (addr, api, mut results) = start_runtime_api().await;

    // In turn, so that whatever else the machine does weighs on each alike.
    for _ in 0..RUNS {
        for subject in &mut subjects {
            start_once(subject, addr, &api, &mut results).await;
        }
    }

    let var = |name| std::env::var(name).unwrap_or_else(|_| "unset".into());
    println!(
        "lambda cold start, {RUNS} starts each (SSL_CERT_FILE {}, SSL_CERT_DIR {}):",
        var("SSL_CERT_FILE"),
        var("SSL_CERT_DIR")
    );
    let floor = median(&mut subjects[0].init.clone());
    for subject in &mut subjects {
        let init = median(&mut subject.init);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (min, max) = (ms(subject.init[0]), ms(subject.init[RUNS - 1]));
        println!(
            "  {:<12} init median {:.2} ms (min {:.2}, max {:.2}; {:.2} x hello-world), first answer median {:.2} ms, peak RSS {} KiB",
            subject.name,
            init,
            min,
            max,
            init / floor,
            median(&mut subject.answered),
            subject.peak_kib
        );
    }
    assert!(
        connector.requests().len() >= RUNS,
        "every messages run replied to the Connector"
    );
}
