//! The Bot Connector REST client: how the bot talks to a channel.
//!
//! Two calls: reply to an activity (`POST v3/conversations/{id}/activities/{replyToId}`) and
//! send into a conversation unprompted (`POST v3/conversations/{id}/activities`). Built once
//! per process and shared: it holds the HTTP connection pool and the bot's credentials.
//!
//! Before any request the target serviceUrl is checked by the [`ServiceUrlPolicy`], because the
//! request carries the bot's token: a serviceUrl outside the policy is refused without a
//! request ([`ConnectorError::ServiceUrlNotAllowed`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::schema::Activity;

/// Characters left as they are in a path segment: RFC 3986 unreserved. Everything else —
/// `:` `;` `=` `|` `@` `/` included — is percent-encoded, because Teams conversation ids carry
/// `;messageid=` and an unencoded `/` or `;` breaks real sends.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Encodes `id` as one URL path segment.
pub fn encode_segment(id: &str) -> String {
    utf8_percent_encode(id, SEGMENT).to_string()
}

/// The URL of a Connector call: the serviceUrl with its path prefix kept and a trailing `/`
/// ensured, then `v3/conversations/{conversationId}/activities[/{activityId}]`.
pub fn activities_url(
    service_url: &str,
    conversation_id: &str,
    reply_to_id: Option<&str>,
) -> String {
    let mut url = service_url.to_owned();
    if !url.ends_with('/') {
        url.push('/');
    }
    url.push_str("v3/conversations/");
    url.push_str(&encode_segment(conversation_id));
    url.push_str("/activities");
    if let Some(id) = reply_to_id {
        url.push('/');
        url.push_str(&encode_segment(id));
    }
    url
}

/// The Connector's answer to a send: the new activity's id, when the channel gives one (Teams
/// may answer 202 with no body).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct ResourceResponse {
    #[serde(default)]
    pub id: Option<String>,
}

/// Why a Connector call failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The Connector answered with a non-success status.
    #[error("connector answered {status}{}: {message}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Status {
        status: u16,
        code: Option<String>,
        message: String,
        /// `X-Correlating-OperationId`, for support requests to the channel.
        correlation_id: Option<String>,
        /// `Retry-After` in seconds, when a 429 gave one.
        retry_after: Option<Duration>,
    },
    #[error("connector request timed out")]
    Timeout,
    #[error("connector unreachable: {0}")]
    Transport(String),
    #[error("serviceUrl {0:?} is not allowed")]
    ServiceUrlNotAllowed(String),
    #[error("serviceUrl cannot form a URL: {0}")]
    InvalidUrl(String),
    #[error("could not obtain the bot's token: {0}")]
    Credentials(String),
}

impl ConnectorError {
    /// Worth trying again later: 429, 412, 502, 503, 504, timeouts and transport errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectorError::Status { status, .. } => {
                matches!(status, 429 | 412 | 502 | 503 | 504)
            }
            ConnectorError::Timeout | ConnectorError::Transport(_) => true,
            ConnectorError::Credentials(_) => true,
            ConnectorError::ServiceUrlNotAllowed(_) | ConnectorError::InvalidUrl(_) => false,
        }
    }

    /// The conversation is gone for the bot (removed, blocked, deleted): stop sending to it.
    pub fn is_conversation_gone(&self) -> bool {
        match self {
            ConnectorError::Status { status, code, .. } => {
                let code = code.as_deref().unwrap_or_default();
                (*status == 403
                    && matches!(
                        code,
                        "BotNotInConversationRoster"
                            | "ConversationBlockedByUser"
                            | "BotDisabledByAdmin"
                    ))
                    || (*status == 404 && code == "ConversationNotFound")
            }
            _ => false,
        }
    }
}

/// The bot's outgoing credentials: the seam through which tokens reach the Connector client.
///
/// Contract: `authorization` returns the full `Authorization` header value to send (for
/// example `Bearer eyJ…`), or `None` when the bot has no app id (Emulator mode), in which case
/// no header is sent at all. Implementations cache tokens; this is called once per request.
#[async_trait]
pub trait Credentials: Send + Sync {
    async fn authorization(&self) -> Result<Option<String>, ConnectorError>;

    /// Forgets a cached token, so the next call fetches a new one (after the Connector refused
    /// it).
    fn invalidate(&self) {}
}

/// No credentials: the Emulator mode of an empty app id.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCredentials;

#[async_trait]
impl Credentials for NoCredentials {
    async fn authorization(&self) -> Result<Option<String>, ConnectorError> {
        Ok(None)
    }
}

/// Decides which serviceUrls may receive the bot's requests (and so its token).
///
/// Contract: `check` returns Ok only for a URL the bot may call; the error says why not.
pub trait ServiceUrlPolicy: Send + Sync {
    fn check(&self, service_url: &str) -> Result<(), String>;
}

/// Allows every http(s) URL. Only for the Emulator mode, where no token is ever sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAnyServiceUrl;

impl ServiceUrlPolicy for AllowAnyServiceUrl {
    fn check(&self, service_url: &str) -> Result<(), String> {
        match url::Url::parse(service_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
            _ => Err("not an http(s) URL".to_owned()),
        }
    }
}

/// Connector client settings.
#[derive(Clone)]
pub struct ConnectorConfig {
    /// Upper bound for one request, connection included. Channels give the bot about 15 s
    /// for a whole turn, so this stays well below.
    pub timeout: Duration,
    pub credentials: Arc<dyn Credentials>,
    pub policy: Arc<dyn ServiceUrlPolicy>,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        ConnectorConfig {
            timeout: Duration::from_secs(10),
            credentials: Arc::new(NoCredentials),
            policy: Arc::new(AllowAnyServiceUrl),
        }
    }
}

/// The Bot Connector client. Cheap to clone; build one per process.
#[derive(Clone)]
pub struct ConnectorClient {
    http: reqwest::Client,
    credentials: Arc<dyn Credentials>,
    policy: Arc<dyn ServiceUrlPolicy>,
}

/// Both error shapes channels use.
#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorDetail>,
    #[serde(rename = "errorCode")]
    error_code: Option<serde_json::Value>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
}

impl ConnectorClient {
    pub fn new(config: ConnectorConfig) -> Result<Self, ConnectorError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("proactive-bot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConnectorError::Transport(e.to_string()))?;
        Ok(ConnectorClient {
            http,
            credentials: config.credentials,
            policy: config.policy,
        })
    }

    /// Drops the bot's cached token (the Connector answered 401/403 to it).
    pub fn invalidate_credentials(&self) {
        self.credentials.invalidate();
    }

    /// Replies in a turn: `POST v3/conversations/{conversationId}/activities/{replyToId}`,
    /// addressed from `reply`'s own fields (see [`Activity::reply_with`]). Without a
    /// `replyToId` it posts to the conversation instead.
    pub async fn reply_to_activity(
        &self,
        reply: &Activity,
    ) -> Result<ResourceResponse, ConnectorError> {
        let service_url = reply.service_url.as_deref().unwrap_or_default();
        let conversation_id = reply.conversation_id().unwrap_or_default();
        let url = activities_url(service_url, conversation_id, reply.reply_to_id.as_deref());
        self.post(service_url, &url, reply).await
    }

    /// Sends into a conversation unprompted: `POST v3/conversations/{conversationId}/activities`.
    pub async fn send_to_conversation(
        &self,
        activity: &Activity,
    ) -> Result<ResourceResponse, ConnectorError> {
        let service_url = activity.service_url.as_deref().unwrap_or_default();
        let conversation_id = activity.conversation_id().unwrap_or_default();
        let url = activities_url(service_url, conversation_id, None);
        self.post(service_url, &url, activity).await
    }

    async fn post(
        &self,
        service_url: &str,
        url: &str,
        activity: &Activity,
    ) -> Result<ResourceResponse, ConnectorError> {
        self.policy.check(service_url).map_err(|why| {
            ConnectorError::ServiceUrlNotAllowed(format!("{service_url} ({why})"))
        })?;
        let mut request = self.http.post(url).json(activity);
        if let Some(authorization) = self.credentials.authorization().await? {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let correlation_id = response
            .headers()
            .get("x-correlating-operationid")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            // 200/201/202, with `{"id": …}` or with nothing at all.
            return Ok(serde_json::from_slice(&body).unwrap_or_default());
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody {
                error: Some(detail),
                ..
            }) => (detail.code, detail.message.unwrap_or_default()),
            Ok(ErrorBody {
                error_code: Some(code),
                message,
                ..
            }) => (
                Some(match code {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                }),
                message.unwrap_or_default(),
            ),
            _ => (
                None,
                String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            ),
        };
        Err(ConnectorError::Status {
            status: status.as_u16(),
            code,
            message,
            correlation_id,
            retry_after,
        })
    }
}

/// `Retry-After` in seconds (the form the Connector and Entra ID use).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn transport_error(error: reqwest::Error) -> ConnectorError {
    if error.is_timeout() {
        ConnectorError::Timeout
    } else {
        // Without the URL (the caller logs the serviceUrl), with the causes: reqwest's own
        // message alone ("error sending request") does not say what went wrong.
        let error = error.without_url();
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        ConnectorError::Transport(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teams_ids_become_single_segments() {
        let url = activities_url(
            "https://smba.trafficmanager.net/amer/",
            "19:abc@thread.skype;messageid=149",
            Some("1:x/y|z"),
        );
        assert_eq!(
            url,
            "https://smba.trafficmanager.net/amer/v3/conversations/19%3Aabc%40thread.skype%3Bmessageid%3D149/activities/1%3Ax%2Fy%7Cz"
        );
    }

    #[test]
    fn service_url_prefix_is_kept_and_slash_added() {
        assert_eq!(
            activities_url("http://127.0.0.1:9/teams/amer", "a", None),
            "http://127.0.0.1:9/teams/amer/v3/conversations/a/activities"
        );
    }
}
