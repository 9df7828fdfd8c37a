//! `POST /api/notify` and `GET /api/notify/{id}`: the notify API on the HTTP function.
//!
//! In order, for both: the caller ([`NotifyAuth`]: IAM through API Gateway on AWS, a shared
//! key locally; anything else → 401, before the body is read), then for a POST the body
//! (over 256 KiB → 413), JSON (→ 400), the request's fields (→ 400 with a short reason), the
//! `Idempotency-Key` (1–255 printable ASCII characters, → 400). Nothing is stored or queued
//! before every check has passed. A new request answers 202 `{"id", "recipients"}`; the same
//! key again answers 200 with the first request's id.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::Digest;

use super::NotifyBody;
use crate::http::{ApiError, AppState, describe_parse_error, read_body};

/// The header naming a request's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Who may call the notify API.
#[derive(Clone)]
pub enum NotifyAuth {
    /// Behind API Gateway's IAM authorization (SigV4): only requests the Lambda adapter marked
    /// with an [`IamCaller`], which it does only when API Gateway says IAM authorized them.
    Iam,
    /// `Authorization: Bearer <key>` (the local runner's `NOTIFY_API_KEY`), compared in
    /// constant time.
    ApiKey(Arc<str>),
    /// Every call refused: no key is configured.
    Closed,
}

impl std::fmt::Debug for NotifyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotifyAuth::Iam => "Iam",
            NotifyAuth::ApiKey(_) => "ApiKey(<redacted>)",
            NotifyAuth::Closed => "Closed",
        })
    }
}

/// A request extension: API Gateway authorized this request with IAM, as this principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamCaller {
    pub user_arn: String,
}

impl NotifyAuth {
    /// Whether the request's caller may use the API.
    pub fn allows(&self, headers: &HeaderMap, extensions: &axum::http::Extensions) -> bool {
        match self {
            NotifyAuth::Iam => extensions.get::<IamCaller>().is_some(),
            NotifyAuth::ApiKey(key) => headers
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .is_some_and(|given| same_secret(given.trim(), key)),
            NotifyAuth::Closed => false,
        }
    }
}

/// Compares two secrets in time independent of where they differ (and of their lengths: the
/// digests are compared, every byte).
fn same_secret(given: &str, expected: &str) -> bool {
    let given = sha2::Sha256::digest(given.as_bytes());
    let expected = sha2::Sha256::digest(expected.as_bytes());
    given
        .iter()
        .zip(expected.iter())
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// `POST /api/notify`.
pub async fn submit(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    match submit_inner(&state, &parts.headers, &parts.extensions, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn submit_inner(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
    body: Body,
) -> Result<Response, ApiError> {
    if !state.notify_auth.allows(headers, extensions) {
        return Err(ApiError::Unauthorized);
    }
    let body = read_body(headers, body).await?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("body is not JSON: {}", describe_parse_error(&e)))
    })?;
    let request = NotifyBody::from_json(&value).map_err(|e| ApiError::BadRequest(e.0))?;
    let key = idempotency_key(headers)?;
    let submitted = state
        .notify
        .submit(request, key.as_deref())
        .await
        .map_err(|error| {
            tracing::error!(error = %error, "could not accept a notify request");
            ApiError::Unavailable
        })?;
    let status = if submitted.existing {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(json(
        status,
        serde_json::json!({"id": submitted.id, "recipients": submitted.recipients}),
    ))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let valid = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|key| !key.is_empty() && key.len() <= 255)
        .filter(|key| key.bytes().all(|b| (b' '..=b'~').contains(&b)));
    match valid {
        Some(key) => Ok(Some(key.to_owned())),
        None => Err(ApiError::BadRequest(
            "Idempotency-Key must be 1 to 255 printable ASCII characters".to_owned(),
        )),
    }
}

/// `GET /api/notify/{id}`.
pub async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let result = async {
        if !state.notify_auth.allows(&parts.headers, &parts.extensions) {
            return Err(ApiError::Unauthorized);
        }
        if crate::delivery::NotificationId::parse(&id).is_err() {
            return Err(ApiError::NotFound);
        }
        match state.notify.status(&id).await {
            Ok(Some(status)) => Ok(json(
                StatusCode::OK,
                serde_json::to_value(status).expect("a status serializes"),
            )),
            Ok(None) => Err(ApiError::NotFound),
            Err(error) => {
                tracing::error!(error = %error, "could not read a notify request's status");
                Err(ApiError::Unavailable)
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_value() {
        assert!(same_secret("k3y", "k3y"));
        assert!(!same_secret("k3y", "k3z"));
        assert!(!same_secret("", "k3y"));
        assert!(!same_secret("k3y-longer", "k3y"));
    }

    #[test]
    fn auth_modes() {
        let mut headers = HeaderMap::new();
        let mut extensions = axum::http::Extensions::new();
        let key = NotifyAuth::ApiKey(Arc::from("s3cret"));
        assert!(!key.allows(&headers, &extensions));
        headers.insert(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert!(!key.allows(&headers, &extensions));
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(key.allows(&headers, &extensions));
        assert!(!NotifyAuth::Closed.allows(&headers, &extensions));
        assert!(
            !NotifyAuth::Iam.allows(&headers, &extensions),
            "a key is not IAM"
        );
        extensions.insert(IamCaller {
            user_arn: "arn:aws:iam::123456789012:user/ci".into(),
        });
        assert!(NotifyAuth::Iam.allows(&HeaderMap::new(), &extensions));
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
    }

    #[test]
    fn idempotency_keys_are_bounded_printable_ascii() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), None);
        headers.insert(IDEMPOTENCY_KEY, "build-1234".parse().unwrap());
        assert_eq!(
            idempotency_key(&headers).unwrap().as_deref(),
            Some("build-1234")
        );
        headers.insert(IDEMPOTENCY_KEY, "x".repeat(256).parse().unwrap());
        assert!(idempotency_key(&headers).is_err());
        headers.insert(IDEMPOTENCY_KEY, "  ".parse().unwrap());
        assert!(idempotency_key(&headers).is_err());
    }
}
