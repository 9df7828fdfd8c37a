//! The OpenID metadata / JWKS cache behind incoming token validation.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use serde::Deserialize;

/// Keys older than this are fetched again before use.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// An unknown `kid` forces a refresh at most this often.
pub const FORCED_REFRESH_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Upper bound for one metadata or JWKS request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One RSA signing key from a JWKS.
pub struct SigningKey {
    pub kid: String,
    pub key: DecodingKey,
    /// The channels that endorse this key (Bot Framework JWKS only); `None` when the entry
    /// has no `endorsements`.
    pub endorsements: Option<Vec<String>>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("endorsements", &self.endorsements)
            .finish_non_exhaustive()
    }
}

/// Why no key could be had for a `kid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no signing key with this kid")]
    UnknownKid,
    #[error("signing keys unavailable: {0}")]
    Unavailable(String),
}

struct KeySet {
    keys: HashMap<String, Arc<SigningKey>>,
    fetched_at: Instant,
}

impl KeySet {
    fn is_fresh(&self) -> bool {
        self.fetched_at.elapsed() < KEYS_MAX_AGE
    }

    fn get(&self, kid: &str) -> Option<Arc<SigningKey>> {
        self.keys.get(kid).cloned()
    }
}

#[derive(Default)]
struct RefreshState {
    last_forced: Option<Instant>,
}

/// The signing keys published behind one OpenID metadata URL (`jwks_uri`).
///
/// Fetched lazily on first use and kept 24 hours. A `kid` the cached keys do not know forces
/// one refresh, at most once an hour. Fetches are single-flight: concurrent callers on a cold
/// or stale cache wait for one fetch. When a scheduled refresh fails, stale keys are used
/// rather than none.
pub struct KeyCache {
    http: reqwest::Client,
    metadata_url: String,
    current: RwLock<Option<Arc<KeySet>>>,
    refresh: tokio::sync::Mutex<RefreshState>,
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache")
            .field("metadata_url", &self.metadata_url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct OpenIdMetadata {
    jwks_uri: String,
}

#[derive(Deserialize)]
struct Jwks {
    #[serde(default)]
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    #[serde(default)]
    kty: Option<String>,
    #[serde(default, rename = "use")]
    key_use: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    endorsements: Option<Vec<String>>,
}

impl KeyCache {
    pub fn new(http: reqwest::Client, metadata_url: impl Into<String>) -> Self {
        KeyCache {
            http,
            metadata_url: metadata_url.into(),
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
        }
    }

    pub fn metadata_url(&self) -> &str {
        &self.metadata_url
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn store(&self, set: KeySet) -> Arc<KeySet> {
        let set = Arc::new(set);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(set.clone());
        set
    }

    /// The key `kid` names, fetching or refreshing the key set as described on the type.
    pub async fn key(&self, kid: &str) -> Result<Arc<SigningKey>, KeyError> {
        if let Some(set) = self.snapshot()
            && set.is_fresh()
            && let Some(key) = set.get(kid)
        {
            return Ok(key);
        }
        let mut state = self.refresh.lock().await;
        // Another caller may have refreshed while this one waited.
        match self.snapshot() {
            Some(set) if set.is_fresh() => {
                if let Some(key) = set.get(kid) {
                    return Ok(key);
                }
                if state
                    .last_forced
                    .is_some_and(|at| at.elapsed() < FORCED_REFRESH_INTERVAL)
                {
                    return Err(KeyError::UnknownKid);
                }
                state.last_forced = Some(Instant::now());
                tracing::info!(kid, url = %self.metadata_url, "unknown signing key id: refreshing keys");
                match self.fetch().await {
                    Ok(fresh) => self.store(fresh).get(kid).ok_or(KeyError::UnknownKid),
                    Err(why) => {
                        tracing::warn!(url = %self.metadata_url, error = %why, "refreshing signing keys failed");
                        Err(KeyError::UnknownKid)
                    }
                }
            }
            stale => match self.fetch().await {
                Ok(fresh) => self.store(fresh).get(kid).ok_or(KeyError::UnknownKid),
                Err(why) => {
                    tracing::warn!(url = %self.metadata_url, error = %why, "fetching signing keys failed");
                    match stale {
                        Some(stale) => stale.get(kid).ok_or(KeyError::UnknownKid),
                        None => Err(KeyError::Unavailable(why)),
                    }
                }
            },
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let metadata: OpenIdMetadata = self.get_json(&self.metadata_url, "OpenID metadata").await?;
        let jwks: Jwks = self.get_json(&metadata.jwks_uri, "JWKS").await?;
        let mut keys = HashMap::new();
        for jwk in jwks.keys {
            if jwk.kty.as_deref().is_some_and(|kty| kty != "RSA")
                || jwk.key_use.as_deref().is_some_and(|u| u != "sig")
            {
                continue;
            }
            let (Some(kid), Some(n), Some(e)) = (jwk.kid, jwk.n, jwk.e) else {
                continue;
            };
            match DecodingKey::from_rsa_components(&n, &e) {
                Ok(key) => {
                    keys.insert(
                        kid.clone(),
                        Arc::new(SigningKey {
                            kid,
                            key,
                            endorsements: jwk.endorsements,
                        }),
                    );
                }
                Err(error) => tracing::warn!(kid, %error, "skipping an unusable signing key"),
            }
        }
        tracing::debug!(url = %self.metadata_url, keys = keys.len(), "fetched signing keys");
        Ok(KeySet {
            keys,
            fetched_at: Instant::now(),
        })
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        what: &str,
    ) -> Result<T, String> {
        let response = self
            .http
            .get(url)
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("{what} request failed: {}", e.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{what} answered {status}"));
        }
        response
            .json()
            .await
            .map_err(|e| format!("{what} unreadable: {}", e.without_url()))
    }
}
