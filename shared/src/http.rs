//! `POST /api/messages`: the router the HTTP Lambda function and the local runner both serve.
//!
//! In order: body size (over 256 KiB → 413), a token when authentication is on (missing → 401),
//! JSON (not JSON → 400), the fields the bot needs (→ 400 with a short reason), the token's
//! checks against the activity (→ 401), then the turn. Nothing is written before every check
//! has passed, so a refused request has no side effect. Replies to the channel are sent
//! during the turn, before the HTTP answer, because Lambda freezes the function once it
//! answers; the answer itself carries no body.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::auth::ChannelAuthenticator;
use crate::bot::Bot;
use crate::schema::Activity;

/// The largest activity accepted. Bot Framework activities are far smaller; this bounds
/// memory per request.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The route's path; also matched as a suffix, so a REST API stage prefix (`/prod/api/messages`)
/// or a Function URL path reaches the same handler.
pub const MESSAGES_PATH: &str = "/api/messages";

/// What the router needs: the conversation and the gate in front of it.
#[derive(Clone)]
pub struct AppState {
    pub bot: Arc<Bot>,
    pub authenticator: Arc<ChannelAuthenticator>,
}

/// The one error type of the HTTP boundary: user errors pass their short reason through,
/// internals are logged where they happen and answered generically.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("activity too large")]
    PayloadTooLarge,
    #[error("the bot could not complete this turn")]
    TurnFailed,
    #[error("not found")]
    NotFound,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TurnFailed => StatusCode::BAD_GATEWAY,
            ApiError::NotFound => StatusCode::NOT_FOUND,
        };
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// The router: `POST /api/messages` (and `…/api/messages` under a stage prefix).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(MESSAGES_PATH, post(messages))
        .fallback(prefixed_messages)
        // Checked by the `Bytes` extractor: a longer body is refused with 413 before it is read
        // to the end.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn prefixed_messages(State(state): State<AppState>, request: Request) -> Response {
    if request.method() != Method::POST || !request.uri().path().ends_with(MESSAGES_PATH) {
        return ApiError::NotFound.into_response();
    }
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => messages(State(state), parts.headers, bytes).await,
        Err(_) => ApiError::PayloadTooLarge.into_response(),
    }
}

async fn messages(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match handle(&state, &headers, &body).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn handle(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if state.authenticator.is_enabled() && authorization.is_none() {
        tracing::warn!("request without Authorization refused");
        return Err(ApiError::Unauthorized);
    }
    let activity: Activity = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!("body is not a valid activity: {}", short(&e)))
    })?;
    activity
        .validate_incoming()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    state
        .authenticator
        .authenticate(authorization, &activity)
        .await
        .map_err(|_| ApiError::Unauthorized)?;
    state.bot.on_turn(&activity).await.map_err(|error| {
        tracing::error!(error = %error, conversation = activity.conversation_id().unwrap_or_default(), "could not answer the turn");
        ApiError::TurnFailed
    })
}

/// serde's message without the input echoed back, cut short.
fn short(error: &serde_json::Error) -> String {
    let text = error.to_string();
    text.chars().take(120).collect()
}
