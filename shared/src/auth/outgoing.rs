//! Outgoing tokens (bot → Connector): the OAuth 2.0 client-credentials flow.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::AuthConfig;
use crate::connector::{ConnectorError, Credentials};

/// The scope of tokens for the Bot Connector.
pub const BOT_FRAMEWORK_SCOPE: &str = "https://api.botframework.com/.default";

/// A token is replaced this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Attempts per token fetch (transport errors, 429 and 5xx are retried).
const ATTEMPTS: u32 = 3;
/// First retry delay; doubled each retry, plus up to as much again of jitter.
const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(200);
/// Upper bound for a `Retry-After` the token endpoint asks for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Upper bound for one token request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Used when the answer has no `expires_in`.
const DEFAULT_EXPIRES_IN: u64 = 3600;

/// Why no token could be had. Never carries the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("MicrosoftAppPassword is not set")]
    MissingPassword,
    #[error("token endpoint unreachable: {0}")]
    Transport(String),
    #[error("token endpoint answered {status}{}", error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Status {
        status: u16,
        /// The OAuth `error` code and the first AADSTS code, e.g. `invalid_client AADSTS7000215`.
        error: Option<String>,
    },
    #[error("token endpoint answer unusable: {0}")]
    InvalidResponse(String),
}

impl TokenError {
    fn is_transient(&self) -> bool {
        match self {
            TokenError::Transport(_) => true,
            TokenError::Status { status, .. } => *status == 429 || *status >= 500,
            TokenError::MissingPassword | TokenError::InvalidResponse(_) => false,
        }
    }
}

struct CachedToken {
    authorization: String,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Default)]
struct CacheState {
    token: Option<Arc<CachedToken>>,
    /// Incremented at every fetch, so callers that waited for a fetch can use its result.
    generation: u64,
}

/// The bot's client-credentials token for one app id and scope: cached until 5 minutes before
/// it expires; one request however many callers need it at once (single flight); transport
/// errors, 429 and 5xx retried with exponential backoff and jitter (3 attempts).
///
/// `Debug` redacts the secret, and no error carries it.
pub struct AppCredentials {
    http: reqwest::Client,
    app_id: String,
    app_password: Option<String>,
    token_url: String,
    scope: String,
    retry_delay: Duration,
    cache: Mutex<CacheState>,
    flight: tokio::sync::Mutex<()>,
}

impl fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCredentials")
            .field("app_id", &self.app_id)
            .field(
                "app_password",
                &self.app_password.as_ref().map(|_| "<redacted>"),
            )
            .field("token_url", &self.token_url)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<Value>,
    #[serde(default)]
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_codes: Option<Vec<Value>>,
}

impl AppCredentials {
    /// Credentials for `app_id` from `token_url` (`…/{tenant}/oauth2/v2.0/token`), for
    /// [`BOT_FRAMEWORK_SCOPE`].
    pub fn new(
        http: reqwest::Client,
        app_id: impl Into<String>,
        app_password: Option<String>,
        token_url: impl Into<String>,
    ) -> Self {
        AppCredentials {
            http,
            app_id: app_id.into(),
            app_password,
            token_url: token_url.into(),
            scope: BOT_FRAMEWORK_SCOPE.to_owned(),
            retry_delay: DEFAULT_RETRY_DELAY,
            cache: Mutex::new(CacheState::default()),
            flight: tokio::sync::Mutex::new(()),
        }
    }

    /// The credentials `config` describes (its app type's tenant), or `None` without an app id.
    pub fn from_config(config: &AuthConfig, http: reqwest::Client) -> Option<Self> {
        let app_id = config.app_id.as_deref().filter(|_| config.is_enabled())?;
        Some(AppCredentials::new(
            http,
            app_id.trim(),
            config.app_password.clone(),
            config.token_url(),
        ))
    }

    /// Another scope than [`BOT_FRAMEWORK_SCOPE`].
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    /// Another first retry delay (tests).
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The `Authorization` header value, `Bearer …`, from the cache or a new token.
    pub async fn authorization_header(&self) -> Result<String, TokenError> {
        let generation = {
            let state = self.state();
            if let Some(token) = &state.token
                && Instant::now() < token.refresh_at
            {
                return Ok(token.authorization.clone());
            }
            state.generation
        };
        let _flight = self.flight.lock().await;
        {
            let state = self.state();
            if let Some(token) = &state.token {
                let now = Instant::now();
                // Fresh, or fetched while this caller waited and not yet expired.
                if now < token.refresh_at
                    || (state.generation != generation && now < token.expires_at)
                {
                    return Ok(token.authorization.clone());
                }
            }
        }
        let token = Arc::new(self.fetch_with_retries().await?);
        let authorization = token.authorization.clone();
        let mut state = self.state();
        state.token = Some(token);
        state.generation += 1;
        Ok(authorization)
    }

    async fn fetch_with_retries(&self) -> Result<CachedToken, TokenError> {
        let mut attempt = 1;
        loop {
            match self.fetch().await {
                Ok(token) => return Ok(token),
                Err((error, retry_after)) if error.is_transient() && attempt < ATTEMPTS => {
                    let base = self.retry_delay * 2u32.pow(attempt - 1);
                    let jitter = base.mul_f64(fastrand::f64());
                    let delay = retry_after.map_or(base + jitter, |r| r.min(MAX_RETRY_AFTER));
                    tracing::warn!(
                        app_id = %self.app_id,
                        %error,
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        "token request failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err((error, _)) => {
                    tracing::warn!(app_id = %self.app_id, %error, attempt, "token request failed");
                    return Err(error);
                }
            }
        }
    }

    /// One token request; on failure also the `Retry-After` of a 429.
    async fn fetch(&self) -> Result<CachedToken, (TokenError, Option<Duration>)> {
        let password = self
            .app_password
            .as_deref()
            .ok_or((TokenError::MissingPassword, None))?;
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.app_id.as_str()),
            ("client_secret", password),
            ("scope", self.scope.as_str()),
        ];
        let started = Instant::now();
        let response = self
            .http
            .post(&self.token_url)
            .timeout(REQUEST_TIMEOUT)
            .form(&form)
            .send()
            .await
            .map_err(|e| (TokenError::Transport(e.without_url().to_string()), None))?;
        let status = response.status();
        let retry_after = crate::connector::retry_after(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|e| (TokenError::Transport(e.without_url().to_string()), None))?;
        if !status.is_success() {
            let error = serde_json::from_slice::<TokenErrorBody>(&body)
                .ok()
                .and_then(|b| {
                    let aadsts = b
                        .error_codes
                        .and_then(|codes| codes.into_iter().next())
                        .map(|code| format!("AADSTS{code}"));
                    match (b.error, aadsts) {
                        (Some(e), Some(c)) => Some(format!("{e} {c}")),
                        (e, c) => e.or(c),
                    }
                });
            return Err((
                TokenError::Status {
                    status: status.as_u16(),
                    error,
                },
                retry_after,
            ));
        }
        let answer: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| (TokenError::InvalidResponse("not JSON".to_owned()), None))?;
        if answer
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err((
                TokenError::InvalidResponse("token_type is not Bearer".to_owned()),
                None,
            ));
        }
        let access_token = answer.access_token.filter(|t| !t.is_empty()).ok_or((
            TokenError::InvalidResponse("no access_token".to_owned()),
            None,
        ))?;
        let expires_in = match answer.expires_in {
            None => DEFAULT_EXPIRES_IN,
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
            Some(_) => 0,
        };
        let lifetime = Duration::from_secs(expires_in);
        tracing::debug!(app_id = %self.app_id, expires_in, "obtained a Connector token");
        Ok(CachedToken {
            authorization: format!("Bearer {access_token}"),
            refresh_at: started + lifetime.saturating_sub(REFRESH_MARGIN),
            expires_at: started + lifetime,
        })
    }
}

#[async_trait]
impl Credentials for AppCredentials {
    async fn authorization(&self) -> Result<Option<String>, ConnectorError> {
        self.authorization_header()
            .await
            .map(Some)
            .map_err(|e| ConnectorError::Credentials(e.to_string()))
    }

    /// Forgets the cached token. A fetch already in flight still completes and is cached: it
    /// started after the refused token was issued, so it is a new one.
    fn invalidate(&self) {
        let mut state = self.state();
        if state.token.take().is_some() {
            tracing::info!(app_id = %self.app_id, "dropped the cached Connector token");
        }
    }
}
