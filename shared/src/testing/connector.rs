//! A Bot Connector stand-in: an HTTP server on 127.0.0.1 that records every request the bot
//! makes and answers as a channel would (200 `{"id": …}` unless told otherwise).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// One request the bot made.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The path as sent, percent-encoding intact.
    pub path: String,
    pub authorization: Option<String>,
    pub body: serde_json::Value,
    /// When it arrived (for retry timing).
    pub received_at: std::time::Instant,
}

impl RecordedRequest {
    pub fn text(&self) -> &str {
        self.body["text"].as_str().unwrap_or_default()
    }
}

/// An answer to give instead of the default.
#[derive(Debug, Clone)]
pub struct ScriptedResponse {
    pub status: u16,
    pub body: Option<String>,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
}

impl ScriptedResponse {
    pub fn status(status: u16, body: Option<&str>) -> Self {
        ScriptedResponse {
            status,
            body: body.map(str::to_owned),
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct Inner {
    requests: Vec<RecordedRequest>,
    script: VecDeque<ScriptedResponse>,
}

/// The stand-in server. Stops when dropped.
pub struct ConnectorStandIn {
    addr: SocketAddr,
    /// `http`, or `https` ([`ConnectorStandIn::start_https`]).
    scheme: &'static str,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl ConnectorStandIn {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let router = Router::new().fallback(record).with_state(inner.clone());
        let (addr, server) = super::serve_on_loopback(router, "connector stand-in").await;
        ConnectorStandIn {
            addr,
            scheme: "http",
            inner,
            server,
        }
    }

    /// The stand-in over HTTPS, with a certificate for `localhost` from the test CA
    /// ([`super::https`]): only a client trusting that CA reaches it.
    pub async fn start_https() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let router = Router::new().fallback(record).with_state(inner.clone());
        let (addr, server) = super::https::serve_on_loopback(router, "connector stand-in").await;
        ConnectorStandIn {
            addr,
            scheme: "https",
            inner,
            server,
        }
    }

    /// A serviceUrl pointing here, with a path prefix as Teams uses (`…/amer/`); over HTTPS
    /// the host is `localhost`, the name the test certificate carries.
    pub fn service_url(&self) -> String {
        match self.scheme {
            "https" => format!("https://localhost:{}/amer/", self.addr.port()),
            _ => format!("http://{}/amer/", self.addr),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers the next request with `response` (queued in order).
    pub fn script(&self, response: ScriptedResponse) {
        self.lock().script.push_back(response);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    pub fn clear(&self) {
        self.lock().requests.clear();
    }

    /// Waits until `count` requests have arrived (or panics after `timeout`).
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let requests = self.requests();
            if requests.len() >= count {
                return requests;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "expected {count} connector requests within {timeout:?}, got {}: {requests:#?}",
                    requests.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ConnectorStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(State(inner): State<Arc<Mutex<Inner>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        authorization: parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        received_at: std::time::Instant::now(),
    };
    let scripted = {
        let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
        let number = inner.requests.len() + 1;
        inner.requests.push(recorded);
        inner.script.pop_front().ok_or(number)
    };
    match scripted {
        Err(number) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            format!(r#"{{"id":"activity-{number}"}}"#),
        )
            .into_response(),
        Ok(script) => {
            tokio::time::sleep(script.delay).await;
            let mut response =
                Response::new(axum::body::Body::from(script.body.unwrap_or_default()));
            *response.status_mut() = StatusCode::from_u16(script.status).unwrap_or(StatusCode::OK);
            for (name, value) in script.headers {
                if let (Ok(name), Ok(value)) = (
                    axum::http::HeaderName::from_bytes(name.as_bytes()),
                    axum::http::HeaderValue::from_str(&value),
                ) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
    }
}
