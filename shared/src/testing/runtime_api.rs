//! A Lambda Runtime API stand-in: a function's real binary, started with
//! `AWS_LAMBDA_RUNTIME_API` pointing here, polls it for invocations as it would in Lambda and
//! posts its answers back. Hands out the given events in order, then keeps the next poll
//! waiting until the process is stopped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::routing::{get, post};
use tokio::sync::mpsc;

/// What the function posted back for one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Response(String),
    Error(String),
}

#[derive(Clone)]
struct Shared {
    events: Arc<Mutex<std::collections::VecDeque<String>>>,
    answers: mpsc::UnboundedSender<Answer>,
}

/// A running stand-in.
pub struct RuntimeApi {
    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub addr: SocketAddr,
    answers: mpsc::UnboundedReceiver<Answer>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Serves `events` (each a Lambda event's JSON), one per poll.
    pub async fn start(events: Vec<String>) -> RuntimeApi {
        let (answers, received) = mpsc::unbounded_channel();
        let shared = Shared {
            events: Arc::new(Mutex::new(events.into())),
            answers,
        };
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(respond),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(failed))
            .route("/2018-06-01/runtime/init/error", post(init_failed))
            .with_state(shared);
        let (addr, server) = super::serve_on_loopback(router, "Lambda Runtime API stand-in").await;
        RuntimeApi {
            addr,
            answers: received,
            server,
        }
    }

    /// The next invocation's answer; panics after `wait`.
    pub async fn answer(&mut self, wait: Duration) -> Answer {
        tokio::time::timeout(wait, self.answers.recv())
            .await
            .expect("the function answered in time")
            .expect("the stand-in is running")
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(shared): State<Shared>) -> (HeaderMap, String) {
    let event = shared.events.lock().unwrap().pop_front();
    let Some(event) = event else {
        return std::future::pending().await;
    };
    let request_id = format!("req-{}", fastrand::u64(..));
    let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("lambda-runtime-aws-request-id", request_id),
        ("lambda-runtime-deadline-ms", deadline.to_string()),
        (
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:test".to_owned(),
        ),
        (
            "lambda-runtime-trace-id",
            "Root=1-00000000-000000000000000000000000".to_owned(),
        ),
    ] {
        headers.insert(name, HeaderValue::from_str(&value).expect("a header value"));
    }
    (headers, event)
}

async fn respond(
    State(shared): State<Shared>,
    Path(_id): Path<String>,
    body: String,
) -> &'static str {
    let _ = shared.answers.send(Answer::Response(body));
    "{}"
}

async fn failed(
    State(shared): State<Shared>,
    Path(_id): Path<String>,
    body: String,
) -> &'static str {
    let _ = shared.answers.send(Answer::Error(body));
    "{}"
}

async fn init_failed(State(shared): State<Shared>, body: String) -> &'static str {
    let _ = shared.answers.send(Answer::Error(format!("init: {body}")));
    "{}"
}
