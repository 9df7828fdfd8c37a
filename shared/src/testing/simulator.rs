//! A Teams Bot Connector simulator: an HTTP server on 127.0.0.1 that answers sends as Teams
//! does, rate limits included, for tests and benchmarks of the delivery engine.
//!
//! Unlike [`ConnectorStandIn`](super::connector::ConnectorStandIn), which accepts everything,
//! this enforces Teams' limits exactly: a request is refused with 429 when, in any window, the
//! requests already **accepted** in `(arrival − per, arrival]` number `count` (refused
//! requests are not counted). Windows are kept per conversation and, when the activity names
//! its tenant (`conversation.tenantId` or `channelData.tenant.id`), per tenant. The arrival
//! instant is taken when the request is decided, under the simulator's lock, so decisions and
//! recorded instants are in the same order.
//!
//! Routes: `POST …/v3/conversations/{id}/activities` (send), `POST …/activities/{replyToId}`
//! (reply) and `PUT …/activities/{activityId}` (update); each counts as a send. Anything else is
//! recorded and answered 404. Scripted answers ([`TeamsSimulator::script`]) come before the
//! limits; one answered 2xx still counts as accepted.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

pub use super::connector::ScriptedResponse;
use crate::delivery::limits::{ChannelLimits, Window};

/// The largest request body read; Bot Framework activities are far smaller.
const MAX_BODY_BYTES: usize = 4 << 20;

/// What the simulator enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatorConfig {
    /// Per conversation; default Teams' 7 / 1 s, 8 / 2 s, 60 / 30 s, 1800 / 3600 s.
    pub conversation: Vec<Window>,
    /// Per tenant, for activities that name one; default 50 / 1 s.
    pub tenant: Vec<Window>,
    /// The `Retry-After` of a 429, in seconds; `None` sends none (Teams sometimes does not,
    /// and then wants exponential backoff). Default 1.
    pub retry_after: Option<u64>,
    /// Added before every answer, scripted or not.
    pub latency: Duration,
    /// Up to this much more, drawn uniformly for each answer (Teams answers in 100–300 ms).
    pub jitter: Duration,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        let teams = ChannelLimits::teams();
        SimulatorConfig {
            conversation: teams.conversation,
            tenant: teams.tenant,
            retry_after: Some(1),
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
        }
    }
}

/// One request the simulator answered, in arrival order.
#[derive(Debug, Clone)]
pub struct SimulatedRequest {
    pub method: String,
    /// The path as sent, percent-encoding intact.
    pub path: String,
    /// The conversation id from the path, decoded; `None` for a path that is not a Connector
    /// activities route.
    pub conversation_id: Option<String>,
    /// The reply-to or updated activity id from the path, decoded.
    pub activity_id: Option<String>,
    /// The tenant the body names, if any.
    pub tenant_id: Option<String>,
    pub body: Value,
    pub authorization: Option<String>,
    pub arrived: Instant,
    /// The status answered.
    pub status: u16,
    /// Answered from the script rather than by the limits.
    pub scripted: bool,
    /// The id given to an accepted activity (not for scripted answers).
    pub response_id: Option<String>,
}

impl SimulatedRequest {
    /// Answered 2xx: the channel took the activity.
    pub fn is_accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Refused by the limits (a scripted 429 is not counted here).
    pub fn is_throttled(&self) -> bool {
        self.status == 429 && !self.scripted
    }

    pub fn text(&self) -> &str {
        self.body["text"].as_str().unwrap_or_default()
    }
}

/// Accepted arrival instants of one conversation or tenant, oldest first.
#[derive(Default)]
struct SendLog(VecDeque<Instant>);

impl SendLog {
    /// The first window already full at `at`, if any.
    fn full_window(&self, windows: &[Window], at: Instant) -> Option<Window> {
        windows.iter().copied().find(|window| {
            let in_window = self
                .0
                .iter()
                .rev()
                .take_while(|t| at.saturating_duration_since(**t) < window.per)
                .count();
            in_window >= window.count as usize
        })
    }

    fn push(&mut self, at: Instant, windows: &[Window]) {
        self.0.push_back(at);
        let longest = windows.iter().map(|w| w.per).max().unwrap_or_default();
        while self
            .0
            .front()
            .is_some_and(|t| at.saturating_duration_since(*t) >= longest)
        {
            self.0.pop_front();
        }
    }
}

struct Inner {
    config: SimulatorConfig,
    requests: Vec<SimulatedRequest>,
    script: VecDeque<(Option<String>, ScriptedResponse)>,
    conversations: HashMap<String, SendLog>,
    tenants: HashMap<String, SendLog>,
    next_id: u64,
}

/// The simulator. Stops when dropped.
pub struct TeamsSimulator {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl TeamsSimulator {
    /// Starts the simulator on 127.0.0.1 on a free port.
    pub async fn start(config: SimulatorConfig) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            config,
            requests: Vec::new(),
            script: VecDeque::new(),
            conversations: HashMap::new(),
            tenants: HashMap::new(),
            next_id: 0,
        }));
        let router = Router::new().fallback(answer).with_state(inner.clone());
        let (addr, server) = super::serve_on_loopback(router, "Teams simulator").await;
        TeamsSimulator {
            addr,
            inner,
            server,
        }
    }

    /// A serviceUrl pointing here, with a path prefix as Teams uses (`…/amer/`).
    pub fn service_url(&self) -> String {
        format!("http://{}/amer/", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers the next request to `conversation_id` (or, with `None`, the next request at all)
    /// with `response` instead of applying the limits. Scripts are taken in the order queued:
    /// a request takes the first one that names its conversation or names none.
    pub fn script(&self, conversation_id: Option<&str>, response: ScriptedResponse) {
        self.lock()
            .script
            .push_back((conversation_id.map(str::to_owned), response));
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<SimulatedRequest> {
        self.lock().requests.clone()
    }

    /// The requests answered 2xx, in arrival order.
    pub fn accepted(&self) -> Vec<SimulatedRequest> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.is_accepted())
            .cloned()
            .collect()
    }

    /// How many requests the limits refused.
    pub fn throttled_count(&self) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.is_throttled())
            .count()
    }

    /// The texts accepted into `conversation_id`, in arrival order.
    pub fn accepted_texts_for(&self, conversation_id: &str) -> Vec<String> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.is_accepted() && r.conversation_id.as_deref() == Some(conversation_id))
            .map(|r| r.text().to_owned())
            .collect()
    }

    /// Waits until `count` requests have been accepted (or panics after `timeout`).
    pub async fn wait_for_accepted(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Vec<SimulatedRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let accepted = self.accepted();
            if accepted.len() >= count {
                return accepted;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "expected {count} accepted requests within {timeout:?}, got {} (and {} throttled)",
                    accepted.len(),
                    self.throttled_count()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }
}

impl Drop for TeamsSimulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

/// `(conversation id, activity id)` of a Connector activities route `method` may use.
fn route(method: &Method, path: &str) -> Option<(String, Option<String>)> {
    let (_, rest) = path.split_once("/v3/conversations/")?;
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    };
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        [conversation, "activities"] if method == Method::POST && !conversation.is_empty() => {
            Some((decode(conversation)?, None))
        }
        [conversation, "activities", activity]
            if (method == Method::POST || method == Method::PUT)
                && !conversation.is_empty()
                && !activity.is_empty() =>
        {
            Some((decode(conversation)?, Some(decode(activity)?)))
        }
        _ => None,
    }
}

fn tenant_of(body: &Value) -> Option<String> {
    body.pointer("/conversation/tenantId")
        .or_else(|| body.pointer("/channelData/tenant/id"))
        .and_then(Value::as_str)
        .filter(|tenant| !tenant.is_empty())
        .map(str::to_owned)
}

fn error_body(code: &str, message: &str) -> String {
    json!({"error": {"code": code, "message": message}}).to_string()
}

/// What to answer, decided under the lock.
struct Decision {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
    delay: Duration,
}

async fn answer(State(inner): State<Arc<Mutex<Inner>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let path = parts.uri.path().to_owned();
    let route = route(&parts.method, &path);
    let tenant_id = tenant_of(&body);
    let authorization = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    let decision = {
        let mut guard = lock(&inner);
        let state = &mut *guard;
        let arrived = Instant::now();
        let conversation_id = route.as_ref().map(|(c, _)| c.clone());
        let scripted = state
            .script
            .iter()
            .position(|(target, _)| {
                target.is_none() || target.as_deref() == conversation_id.as_deref()
            })
            .and_then(|i| state.script.remove(i))
            .map(|(_, response)| response);
        let mut response_id = None;
        let decision = match (&scripted, &conversation_id) {
            (Some(script), _) => Decision {
                status: script.status,
                body: script.body.clone().unwrap_or_default(),
                headers: script.headers.clone(),
                delay: script.delay,
            },
            (None, None) => Decision {
                status: 404,
                body: error_body("NotFound", "not a Connector activities route"),
                headers: Vec::new(),
                delay: Duration::ZERO,
            },
            (None, Some(conversation)) => {
                let config = &state.config;
                let full = state
                    .conversations
                    .get(conversation)
                    .and_then(|log| log.full_window(&config.conversation, arrived))
                    .map(|w| format!("conversation {conversation}: {w}"))
                    .or_else(|| {
                        let tenant = tenant_id.as_deref()?;
                        let window = state
                            .tenants
                            .get(tenant)?
                            .full_window(&config.tenant, arrived)?;
                        Some(format!("tenant {tenant}: {window}"))
                    });
                match full {
                    Some(which) => Decision {
                        status: 429,
                        body: error_body("Throttled", &format!("Too many requests ({which})")),
                        headers: config
                            .retry_after
                            .map(|s| vec![("retry-after".to_owned(), s.to_string())])
                            .unwrap_or_default(),
                        delay: Duration::ZERO,
                    },
                    None => {
                        state.next_id += 1;
                        let id = format!("1:sim-{}", state.next_id);
                        response_id = Some(id.clone());
                        Decision {
                            status: if parts.method == Method::PUT {
                                200
                            } else {
                                201
                            },
                            body: json!({ "id": id }).to_string(),
                            headers: Vec::new(),
                            delay: Duration::ZERO,
                        }
                    }
                }
            }
        };
        if (200..300).contains(&decision.status)
            && let Some(conversation) = &conversation_id
        {
            let config = &state.config;
            state
                .conversations
                .entry(conversation.clone())
                .or_default()
                .push(arrived, &config.conversation);
            if let Some(tenant) = &tenant_id {
                state
                    .tenants
                    .entry(tenant.clone())
                    .or_default()
                    .push(arrived, &config.tenant);
            }
        }
        state.requests.push(SimulatedRequest {
            method: parts.method.to_string(),
            path,
            conversation_id,
            activity_id: route.and_then(|(_, activity)| activity),
            tenant_id,
            body,
            authorization,
            arrived,
            status: decision.status,
            scripted: scripted.is_some(),
            response_id,
        });
        Decision {
            delay: decision.delay
                + state.config.latency
                + state.config.jitter.mul_f64(fastrand::f64()),
            ..decision
        }
    };

    tokio::time::sleep(decision.delay).await;
    let has_body = !decision.body.is_empty();
    let mut response = Response::new(Body::from(decision.body));
    *response.status_mut() = StatusCode::from_u16(decision.status).unwrap_or(StatusCode::OK);
    if has_body {
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    for (name, value) in decision.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_with_any_prefix_and_decoded() {
        assert_eq!(
            route(
                &Method::POST,
                "/amer/v3/conversations/a%7Clivechat/activities"
            ),
            Some(("a|livechat".to_owned(), None))
        );
        assert_eq!(
            route(
                &Method::PUT,
                "/v3/conversations/19%3Ax/activities/1%3Aa%2Fb"
            ),
            Some(("19:x".to_owned(), Some("1:a/b".to_owned())))
        );
        assert_eq!(route(&Method::GET, "/v3/conversations/a/activities"), None);
        assert_eq!(route(&Method::PUT, "/v3/conversations/a/activities"), None);
        assert_eq!(route(&Method::POST, "/v3/conversations//activities"), None);
        assert_eq!(route(&Method::POST, "/v3/conversations/a/members"), None);
        assert_eq!(route(&Method::POST, "/elsewhere"), None);
    }

    #[test]
    fn the_tenant_comes_from_the_conversation_or_the_channel_data() {
        assert_eq!(
            tenant_of(&json!({"conversation": {"tenantId": "t1"}})),
            Some("t1".to_owned())
        );
        assert_eq!(
            tenant_of(&json!({"channelData": {"tenant": {"id": "t2"}}})),
            Some("t2".to_owned())
        );
        assert_eq!(tenant_of(&json!({"conversation": {"id": "c"}})), None);
    }

    #[test]
    fn a_window_counts_accepted_sends_in_the_half_open_interval() {
        let start = Instant::now();
        let windows = [Window::new(2, Duration::from_secs(1))];
        let mut log = SendLog::default();
        log.push(start, &windows);
        log.push(start + Duration::from_millis(10), &windows);
        assert!(
            log.full_window(&windows, start + Duration::from_millis(999))
                .is_some()
        );
        // Exactly `per` after the first, it has left `(a − per, a]`.
        assert!(
            log.full_window(&windows, start + Duration::from_secs(1))
                .is_none()
        );
        log.push(start + Duration::from_secs(5), &windows);
        assert_eq!(
            log.0.len(),
            1,
            "sends older than the longest window are dropped"
        );
    }
}
