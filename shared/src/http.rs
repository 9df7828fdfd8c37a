//! `POST /api/messages`: the router the HTTP Lambda function and the local runner both serve,
//! and [`serve`], which serves it on a TCP listener with timeouts for slow clients.
//!
//! In order: the body (over 256 KiB → 413; stalled → 408), the token alone when
//! authentication is on (missing or bad → 401, before the body is parsed, so a stranger's
//! request costs no parsing), JSON (not JSON → 400), the fields the bot needs (→ 400 with a
//! short reason), the token's checks against the activity (→ 401), the serviceUrl (not an
//! http(s) URL → 400; refused by the allowlist → 403), an `invoke` (the bot handles none: →
//! 501, as the SDKs answer an unknown one), then the turn. Nothing is written before
//! every check has passed, so a refused request has no side effect. A 400 never quotes the
//! input: it names the kind of problem and where. Replies to the channel are sent during the
//! turn, before the HTTP answer, because Lambda freezes the function once it answers; the
//! answer itself carries no body.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutError};

use crate::auth::ChannelAuthenticator;
use crate::bot::Bot;
use crate::connector::{ServiceUrlPolicy, is_usable_service_url};
use crate::metrics::TurnKind;
use crate::schema::Activity;

/// The largest activity accepted. Bot Framework activities are far smaller; this bounds
/// memory per request.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The route's path; also matched as a suffix, so a REST API stage prefix (`/prod/api/messages`)
/// or a Function URL path reaches the same handler.
pub const MESSAGES_PATH: &str = "/api/messages";

/// The notify API's path (see [`crate::notify::api`]).
pub const NOTIFY_PATH: &str = "/api/notify";

/// What the router needs: the conversation and the gates in front of it.
#[derive(Clone)]
pub struct AppState {
    pub bot: Arc<Bot>,
    pub authenticator: Arc<ChannelAuthenticator>,
    /// Where the bot may later send its token: an activity whose serviceUrl this refuses never
    /// reaches the bot, so no conversation is stored with it.
    pub policy: Arc<dyn ServiceUrlPolicy>,
    /// The notify API (`/api/notify`).
    pub notify: Arc<crate::notify::NotifyService>,
    /// Who may call the notify API.
    pub notify_auth: crate::notify::api::NotifyAuth,
}

/// The one error type of the HTTP boundary: user errors pass their short reason through,
/// internals are logged where they happen and answered generically.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("serviceUrl not allowed")]
    ServiceUrlNotAllowed,
    #[error("activity too large")]
    PayloadTooLarge,
    #[error("request body not received in time")]
    RequestTimeout,
    #[error("the bot could not complete this turn")]
    TurnFailed,
    #[error("not found")]
    NotFound,
    #[error("temporarily unavailable; try again")]
    Unavailable,
    #[error("invoke not handled")]
    NotImplemented,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ServiceUrlNotAllowed => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TurnFailed => StatusCode::BAD_GATEWAY,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        };
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// The router: `POST /api/messages` (and `…/api/messages` under a stage prefix).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(MESSAGES_PATH, post(messages))
        .route(NOTIFY_PATH, post(crate::notify::api::submit))
        .route(
            &format!("{NOTIFY_PATH}/{{id}}"),
            axum::routing::get(crate::notify::api::status),
        )
        .fallback(prefixed_messages)
        .with_state(state)
}

async fn prefixed_messages(State(state): State<AppState>, request: Request) -> Response {
    if request.method() != Method::POST || !request.uri().path().ends_with(MESSAGES_PATH) {
        return ApiError::NotFound.into_response();
    }
    messages(State(state), request).await
}

/// Answers an activity. The answer to one that passed every check (a turn, or an invoke
/// answered 501) carries its [`TurnKind`] as an extension, for the Lambda handler's metrics;
/// a refused request's answer carries none.
async fn messages(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let admitted = match read_body(&parts.headers, body).await {
        Ok(body) => admit(&state, &parts.headers, &body).await,
        Err(error) => Err(error),
    };
    let activity = match admitted {
        Ok(activity) => activity,
        Err(error) => return error.into_response(),
    };
    let mut response = match turn(&state, &activity).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => error.into_response(),
    };
    response
        .extensions_mut()
        .insert(TurnKind::of(&activity.kind));
    response
}

/// The whole body, at most [`MAX_BODY_BYTES`]: a longer one is refused (a declared
/// `Content-Length` before reading anything, otherwise once the limit is passed) without
/// reading the rest; one that stalls (see [`ServeConfig`]) gets 408.
pub(crate) async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|error| {
            if caused_by::<TimeoutError>(&error) {
                tracing::warn!("request body stalled; answered 408");
                ApiError::RequestTimeout
            } else if caused_by::<hyper::Error>(&error) {
                // The client went away or broke the framing; it will hardly read the answer.
                ApiError::BadRequest("the body could not be read".to_owned())
            } else {
                ApiError::PayloadTooLarge
            }
        })
}

/// `error` or one of its sources is an `E`.
fn caused_by<E: StdError + 'static>(error: &(dyn StdError + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<E>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// Every check before the turn: the activity, if the request may have one.
async fn admit(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Activity, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let token = state
        .authenticator
        .verify_token(authorization)
        .await
        .map_err(|_| ApiError::Unauthorized)?;
    let activity: Activity = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "body is not a valid activity: {}",
            describe_parse_error(&e)
        ))
    })?;
    activity
        .validate_incoming()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    token
        .check_activity(&activity)
        .map_err(|_| ApiError::Unauthorized)?;
    check_service_url(state.policy.as_ref(), &activity)?;
    Ok(activity)
}

async fn turn(state: &AppState, activity: &Activity) -> Result<(), ApiError> {
    if activity.kind == crate::schema::activity_types::INVOKE {
        // An invoke expects an InvokeResponse; this bot handles no invoke name, so it answers
        // as the SDKs do for an unknown one: 501, and nothing else happens (no turn, no
        // registration).
        return Err(ApiError::NotImplemented);
    }
    state.bot.on_turn(activity).await.map_err(|error| {
        tracing::error!(error = %error, conversation = activity.conversation_id().unwrap_or_default(), "could not answer the turn");
        ApiError::TurnFailed
    })
}

/// What kind of problem serde found and where, without its message: that can quote the input
/// (`invalid type: string "…"`), and an answer must not echo what a stranger sent.
pub(crate) fn describe_parse_error(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match error.classify() {
        Category::Syntax => "syntax error",
        Category::Data => "wrong type or value",
        Category::Eof => "unexpected end of input",
        Category::Io => "read error",
    };
    format!("{what} at line {} column {}", error.line(), error.column())
}

/// The bot will later send its token to the activity's serviceUrl, so one it could not or
/// must not call is refused here, before the turn stores it.
fn check_service_url(policy: &dyn ServiceUrlPolicy, activity: &Activity) -> Result<(), ApiError> {
    let service_url = activity.service_url.as_deref().unwrap_or_default();
    if !is_usable_service_url(service_url) {
        return Err(ApiError::BadRequest(
            "serviceUrl is not an http(s) URL".to_owned(),
        ));
    }
    policy.check(service_url).map_err(|reason| {
        let host = url::Url::parse(service_url.trim())
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_default();
        tracing::warn!(%host, %reason, "refused an activity whose serviceUrl is not allowed");
        ApiError::ServiceUrlNotAllowed
    })
}

/// How [`serve_with`] treats slow clients. A client that holds a connection without finishing
/// its request would otherwise hold it for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeConfig {
    /// The longest a client may take to send a request's headers; then the connection is
    /// closed. Default 10 s.
    pub header_read_timeout: Duration,
    /// The longest a request body may stall between two chunks; then the answer is 408.
    /// Default 10 s.
    pub body_read_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` (HTTP/1.1) with the default [`ServeConfig`] until `shutdown`
/// completes, then waits for the requests in progress.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, ServeConfig::default()).await
}

/// [`serve`] with the given timeouts.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    config: ServeConfig,
) -> std::io::Result<()> {
    let service = TowerToHyperService::new(
        router.layer(RequestBodyTimeoutLayer::new(config.body_read_timeout)),
    );
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    // Out of file descriptors, most likely: pause rather than spin.
                    tracing::error!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Header timeouts and clients that went away end up here.
                tracing::debug!(%error, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection that leave the listener usable (as axum's `serve` treats them).
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_say_what_and_where_but_not_the_input() {
        for (body, expected) in [
            (
                r#"{"type": 5, "x": "SECRET-123"}"#,
                "wrong type or value at line 1 column 10",
            ),
            (
                r#"{"type" "SECRET-123"}"#,
                "syntax error at line 1 column 9",
            ),
            (
                r#"{"type": "SECRET-123"#,
                "unexpected end of input at line 1 column 20",
            ),
        ] {
            let error = serde_json::from_slice::<Activity>(body.as_bytes()).unwrap_err();
            let text = describe_parse_error(&error);
            assert_eq!(text, expected, "{body}");
            assert!(!text.contains("SECRET"));
        }
    }
}
