//! The Bot Connector REST client: how the bot talks to a channel.
//!
//! Three calls: reply to an activity (`POST v3/conversations/{id}/activities/{replyToId}`),
//! send into a conversation unprompted (`POST v3/conversations/{id}/activities`) and update a
//! sent activity in place (`PUT v3/conversations/{id}/activities/{activityId}`). Built once
//! per process and shared: it holds the HTTP connection pool and the bot's credentials.
//!
//! Before any request the target URL must parse as http(s) ([`ConnectorError::InvalidUrl`])
//! and the serviceUrl must pass the [`ServiceUrlPolicy`], because the request carries the
//! bot's token: a serviceUrl outside the policy is refused without a request
//! ([`ConnectorError::ServiceUrlNotAllowed`]). For the same reason redirects are never
//! followed: a 3xx is an error, so the token cannot be bounced to a host the policy never saw.

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

/// The serviceUrl is an absolute http(s) URL with a host: something a Connector call can be
/// addressed to. (Whether the bot may call it is the [`ServiceUrlPolicy`]'s decision.)
pub fn is_usable_service_url(service_url: &str) -> bool {
    url::Url::parse(service_url.trim())
        .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
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
        /// `Retry-After` (seconds or an HTTP date, as a delay from when the answer came),
        /// whatever the status, when the answer gave one.
        retry_after: Option<Duration>,
    },
    #[error("connector request timed out")]
    Timeout,
    #[error("connector unreachable: {0}")]
    Transport(String),
    #[error("serviceUrl {0:?} is not allowed")]
    ServiceUrlNotAllowed(String),
    /// The serviceUrl and ids do not make an http(s) URL; nothing was sent.
    #[error("serviceUrl {0:?} does not form an http(s) URL")]
    InvalidUrl(String),
    #[error("could not obtain the bot's token: {0}")]
    Credentials(String),
}

/// The bot's outgoing credentials: the seam through which tokens reach the Connector client.
///
/// Contract: `authorization` returns the full `Authorization` header value to send (for
/// example `Bearer eyJ…`), or `None` when the bot has no app id (Emulator mode), in which case
/// no header is sent at all. Implementations cache tokens; this is called once per request.
///
/// `invalidate` drops any cached token, so that the next `authorization` fetches a new one:
/// called after the Connector refused a token (401) that had not expired yet.
#[async_trait]
pub trait Credentials: Send + Sync {
    async fn authorization(&self) -> Result<Option<String>, ConnectorError>;

    /// Forgets a cached token, so the next call fetches a new one (the Connector refused it).
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
    /// TLS for https serviceUrls: the process's shared configuration ([`crate::tls`]).
    pub tls: rustls::ClientConfig,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        ConnectorConfig {
            timeout: Duration::from_secs(10),
            credentials: Arc::new(NoCredentials),
            policy: Arc::new(AllowAnyServiceUrl),
            tls: crate::tls::client_config(),
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
        let http = crate::tls::reqwest_builder(config.tls)
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A redirect would carry the token to a URL the policy never checked.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("proactive-bot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConnectorError::Transport(e.to_string()))?;
        Ok(ConnectorClient {
            http,
            credentials: config.credentials,
            policy: config.policy,
        })
    }

    /// Drops the cached token, so that the next call fetches a new one: for a 401 from the
    /// Connector, which refused a token that had not expired yet.
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
        self.call(reqwest::Method::POST, reply, reply.reply_to_id.as_deref())
            .await
    }

    /// Sends into a conversation unprompted: `POST v3/conversations/{conversationId}/activities`.
    pub async fn send_to_conversation(
        &self,
        activity: &Activity,
    ) -> Result<ResourceResponse, ConnectorError> {
        self.call(reqwest::Method::POST, activity, None).await
    }

    /// Replaces a sent activity in place:
    /// `PUT v3/conversations/{conversationId}/activities/{activityId}`, where `activity_id` is
    /// the id the Connector returned for the original send.
    pub async fn update_activity(
        &self,
        activity: &Activity,
        activity_id: &str,
    ) -> Result<ResourceResponse, ConnectorError> {
        self.call(reqwest::Method::PUT, activity, Some(activity_id))
            .await
    }

    /// One Connector call addressed by `activity`'s serviceUrl and conversation, to
    /// `…/activities` or `…/activities/{activity_id}`.
    async fn call(
        &self,
        method: reqwest::Method,
        activity: &Activity,
        activity_id: Option<&str>,
    ) -> Result<ResourceResponse, ConnectorError> {
        let service_url = activity.service_url.as_deref().unwrap_or_default();
        let conversation_id = activity.conversation_id().unwrap_or_default();
        // Both checks: `http://` alone would otherwise become the host `v3`.
        let url = match url::Url::parse(&activities_url(service_url, conversation_id, activity_id))
        {
            Ok(url) if is_usable_service_url(service_url) => url,
            _ => return Err(ConnectorError::InvalidUrl(service_url.to_owned())),
        };
        self.policy.check(service_url).map_err(|why| {
            ConnectorError::ServiceUrlNotAllowed(format!("{service_url} ({why})"))
        })?;
        let mut request = self.http.request(method, url).json(activity);
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
        if status.is_redirection() {
            // Not followed, and its body is not read: only the status and headers matter.
            return Err(ConnectorError::Status {
                status: status.as_u16(),
                code: None,
                message: "redirect refused: the Connector client never follows redirects"
                    .to_owned(),
                correlation_id,
                retry_after,
            });
        }
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

/// `Retry-After` as a delay from now: delta-seconds (what the Connector and Entra ID send) or
/// an HTTP date (RFC 9110 allows both). A date in the past is no delay; anything else is
/// ignored.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, chrono::Utc::now())
}

fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // IMF-fixdate (`Wed, 21 Oct 2026 07:28:00 GMT`) is an RFC 2822 date.
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
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

    fn at(text: &str) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&chrono::Utc)
    }

    #[test]
    fn retry_after_reads_delta_seconds() {
        let now = at("2026-10-21T07:00:00Z");
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_reads_an_http_date_as_a_delay_from_now() {
        let now = at("2026-10-21T07:27:30Z");
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", now),
            Some(Duration::from_secs(30))
        );
        // Already past: retry at once.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_ignores_garbage() {
        let now = at("2026-10-21T07:00:00Z");
        for garbage in [
            "",
            "soon",
            "-5",
            "1.5",
            "21 Oct 2026",
            "Wed, 32 Oct 2026 07:28:00 GMT",
        ] {
            assert_eq!(parse_retry_after(garbage, now), None, "{garbage:?}");
        }
    }

    #[test]
    fn the_header_is_read_from_any_answer() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
    }

    #[test]
    fn service_url_prefix_is_kept_and_slash_added() {
        assert_eq!(
            activities_url("http://127.0.0.1:9/teams/amer", "a", None),
            "http://127.0.0.1:9/teams/amer/v3/conversations/a/activities"
        );
    }
}
