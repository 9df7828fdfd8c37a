//! Incoming token validation (channel → bot).

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::keys::{KeyCache, KeyError};
use super::{AppType, AuthConfig};
use crate::schema::Activity;

/// The issuer of channel tokens.
pub const CHANNEL_ISSUER: &str = "https://api.botframework.com";

/// The issuers of Emulator (AAD) tokens: v1 and v2 issuers of the Bot Framework's two tenants.
pub const EMULATOR_ISSUERS: [&str; 4] = [
    "https://sts.windows.net/d6d49420-f39b-4df7-a1dc-d59a935871db/",
    "https://login.microsoftonline.com/d6d49420-f39b-4df7-a1dc-d59a935871db/v2.0",
    "https://sts.windows.net/f8cdef31-a31e-4b4a-93e4-5f571e91255a/",
    "https://login.microsoftonline.com/f8cdef31-a31e-4b4a-93e4-5f571e91255a/v2.0",
];

/// Clock tolerance for `exp` and `nbf`, as in the SDK.
const CLOCK_TOLERANCE_SECS: u64 = 300;

const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];

/// Why a request was refused. Logged, never sent back: callers only see [`AuthError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no Authorization header")]
    MissingHeader,
    #[error("Authorization scheme is not Bearer")]
    WrongScheme,
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token algorithm is not RS256/RS384/RS512")]
    AlgorithmNotAllowed,
    #[error("token header has no kid")]
    MissingKeyId,
    #[error("token kid is not a known signing key")]
    UnknownKey,
    #[error("signing keys could not be fetched")]
    KeysUnavailable,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audience is not this bot")]
    WrongAudience,
    #[error("token issuer is not trusted")]
    WrongIssuer,
    #[error("token lacks a required claim")]
    MissingClaim,
    #[error("token is invalid")]
    Invalid,
    #[error("signing key is not endorsed for the activity's channel")]
    NotEndorsed,
    #[error("serviceurl claim does not match the activity's serviceUrl")]
    ServiceUrlMismatch,
    #[error("token was issued to another app id")]
    WrongAppId,
    #[error("token version is not 1.0 or 2.0")]
    UnknownVersion,
}

/// An incoming request is not authenticated. Its text is deliberately generic; the reason is
/// logged at warn when it is returned and available through [`AuthError::failure`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unauthorized")]
pub struct AuthError {
    failure: AuthFailure,
}

impl AuthError {
    pub fn failure(&self) -> &AuthFailure {
        &self.failure
    }
}

impl From<AuthFailure> for AuthError {
    fn from(failure: AuthFailure) -> Self {
        AuthError { failure }
    }
}

struct Inner {
    app_id: String,
    channel_keys: KeyCache,
    emulator_keys: KeyCache,
    emulator_issuers: Vec<String>,
}

/// Validates the Bot Framework JWT of incoming requests (see the [module](super) docs).
/// Cheap to clone; clones share the key caches. Disabled when no app id is configured.
#[derive(Clone)]
pub struct ChannelAuthenticator {
    inner: Option<Arc<Inner>>,
}

impl fmt::Debug for ChannelAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => f.write_str("ChannelAuthenticator(disabled)"),
            Some(inner) => f
                .debug_struct("ChannelAuthenticator")
                .field("app_id", &inner.app_id)
                .field("channel_keys", &inner.channel_keys)
                .field("emulator_keys", &inner.emulator_keys)
                .finish(),
        }
    }
}

#[derive(Deserialize)]
struct UnverifiedClaims {
    #[serde(default)]
    iss: Option<Value>,
}

#[derive(Deserialize)]
struct UnverifiedHeader {
    #[serde(default)]
    alg: Option<Value>,
}

#[derive(Debug, Clone, Copy)]
enum TokenKind {
    Channel,
    Emulator,
}

impl ChannelAuthenticator {
    /// An authenticator for `config`'s app id; disabled when there is none.
    pub fn new(config: &AuthConfig, http: reqwest::Client) -> Self {
        let Some(app_id) = config.app_id.as_deref().filter(|_| config.is_enabled()) else {
            return ChannelAuthenticator::disabled();
        };
        let mut emulator_issuers: Vec<String> =
            EMULATOR_ISSUERS.iter().map(|s| (*s).to_owned()).collect();
        if config.app_type == AppType::SingleTenant
            && let Some(tenant) = config.tenant_id.as_deref()
        {
            emulator_issuers.push(format!("https://sts.windows.net/{tenant}/"));
            emulator_issuers.push(format!("https://login.microsoftonline.com/{tenant}/v2.0"));
        }
        ChannelAuthenticator {
            inner: Some(Arc::new(Inner {
                app_id: app_id.trim().to_owned(),
                channel_keys: KeyCache::new(http.clone(), config.openid_metadata_url.clone()),
                emulator_keys: KeyCache::new(http, config.emulator_openid_metadata_url.clone()),
                emulator_issuers,
            })),
        }
    }

    /// Authentication off (Emulator mode): every request is accepted.
    pub fn disabled() -> Self {
        ChannelAuthenticator { inner: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Checks the `Authorization` header value of a request carrying `activity`: both steps,
    /// [`verify_token`](Self::verify_token) then [`VerifiedToken::check_activity`]. Ok at once
    /// when authentication is off. On failure the reason is logged at warn (never the token).
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        activity: &Activity,
    ) -> Result<(), AuthError> {
        self.verify_token(authorization)
            .await?
            .check_activity(activity)
    }

    /// The first step, which needs no activity: the header's scheme, the token's algorithm,
    /// signature, issuer, audience and lifetime, and for Emulator tokens the app id. Done before
    /// the body is parsed, so that a request with a bad token is refused without reading what
    /// it carries. Always Ok when authentication is off. On failure the reason is logged at
    /// warn (never the token).
    pub async fn verify_token(
        &self,
        authorization: Option<&str>,
    ) -> Result<VerifiedToken, AuthError> {
        let Some(inner) = &self.inner else {
            return Ok(VerifiedToken { verified: None });
        };
        match inner.verify(authorization).await {
            Ok(verified) => Ok(VerifiedToken {
                verified: Some(verified),
            }),
            Err(failure) => {
                tracing::warn!(reason = %failure, "refused an incoming request");
                Err(AuthError::from(failure))
            }
        }
    }
}

/// A token that passed [`ChannelAuthenticator::verify_token`]; what is left to check needs the
/// activity ([`VerifiedToken::check_activity`]).
#[derive(Clone)]
pub struct VerifiedToken {
    /// `None` when authentication is off.
    verified: Option<Verified>,
}

#[derive(Clone)]
struct Verified {
    kind: TokenKind,
    claims: Map<String, Value>,
    /// The signing key's endorsements, when its JWKS entry lists some.
    endorsements: Option<Vec<String>>,
}

impl fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.verified {
            None => f.write_str("VerifiedToken(authentication off)"),
            Some(verified) => f
                .debug_struct("VerifiedToken")
                .field("kind", &verified.kind)
                .field("claims", &verified.claims.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

impl VerifiedToken {
    /// The token's verified claims; `None` when authentication is off.
    pub fn claims(&self) -> Option<&Map<String, Value>> {
        self.verified.as_ref().map(|v| &v.claims)
    }

    /// The second step: the token may speak for `activity`. A key that lists endorsements
    /// signs only for those channels, and a channel token's `serviceurl` claim must be the
    /// activity's serviceUrl, because the bot will later send its own token there. Always Ok
    /// when authentication is off. On failure the reason is logged at warn.
    pub fn check_activity(&self, activity: &Activity) -> Result<(), AuthError> {
        let Some(verified) = &self.verified else {
            return Ok(());
        };
        verified.check_activity(activity).map_err(|failure| {
            tracing::warn!(
                reason = %failure,
                channel_id = activity.channel_id.as_deref().unwrap_or_default(),
                "refused an incoming request"
            );
            AuthError::from(failure)
        })
    }
}

impl Verified {
    fn check_activity(&self, activity: &Activity) -> Result<(), AuthFailure> {
        if let Some(endorsements) = &self.endorsements {
            let channel_id = activity.channel_id.as_deref().unwrap_or_default();
            if channel_id.is_empty() || !endorsements.iter().any(|e| e == channel_id) {
                return Err(AuthFailure::NotEndorsed);
            }
        }
        if let TokenKind::Channel = self.kind {
            let service_url = activity.service_url.as_deref().unwrap_or_default();
            let claim = self.claims.get("serviceurl").and_then(Value::as_str);
            if service_url.is_empty() || claim != Some(service_url) {
                return Err(AuthFailure::ServiceUrlMismatch);
            }
        }
        Ok(())
    }
}

impl Inner {
    async fn verify(&self, authorization: Option<&str>) -> Result<Verified, AuthFailure> {
        let authorization = authorization.ok_or(AuthFailure::MissingHeader)?;
        let (scheme, token) = authorization
            .split_once(' ')
            .ok_or(AuthFailure::WrongScheme)?;
        if scheme != "Bearer" {
            return Err(AuthFailure::WrongScheme);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthFailure::Malformed);
        }

        // The algorithm is checked before anything else, keys included: no `none`, no HS*.
        let header = jsonwebtoken::decode_header(token).map_err(|_| header_failure(token))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(AuthFailure::AlgorithmNotAllowed);
        }
        let kid = header.kid.as_deref().ok_or(AuthFailure::MissingKeyId)?;

        // Which kind of token, by its (not yet verified) issuer, as the SDK decides.
        let unverified: UnverifiedClaims = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| AuthFailure::Malformed)?;
        let kind = match unverified.iss.as_ref().and_then(Value::as_str) {
            Some(iss) if self.emulator_issuers.iter().any(|known| known == iss) => {
                TokenKind::Emulator
            }
            _ => TokenKind::Channel,
        };

        let (keys, issuers): (&KeyCache, Vec<&str>) = match kind {
            TokenKind::Channel => (&self.channel_keys, vec![CHANNEL_ISSUER]),
            TokenKind::Emulator => (
                &self.emulator_keys,
                self.emulator_issuers.iter().map(String::as_str).collect(),
            ),
        };
        let key = keys.key(kid).await.map_err(|e| match e {
            KeyError::UnknownKid => AuthFailure::UnknownKey,
            KeyError::Unavailable(_) => AuthFailure::KeysUnavailable,
        })?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.algorithms = ALGORITHMS.to_vec();
        validation.leeway = CLOCK_TOLERANCE_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&issuers);
        validation.set_audience(&[self.app_id.as_str()]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| jwt_failure(e.kind()))?
            .claims;

        if let TokenKind::Emulator = kind {
            let claim = |name: &str| claims.get(name).and_then(Value::as_str);
            let app_id = match claim("ver") {
                None | Some("1.0") => claim("appid"),
                Some("2.0") => claim("azp"),
                Some(_) => return Err(AuthFailure::UnknownVersion),
            };
            if app_id != Some(self.app_id.as_str()) {
                return Err(AuthFailure::WrongAppId);
            }
        }
        Ok(Verified {
            kind,
            claims,
            endorsements: key.endorsements.clone(),
        })
    }
}

/// Why `decode_header` refused a token: an algorithm jsonwebtoken does not know (`none`)
/// counts as a disallowed algorithm, anything else as malformed.
fn header_failure(token: &str) -> AuthFailure {
    let alg = token
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h.trim_end_matches('=')).ok())
        .and_then(|bytes| serde_json::from_slice::<UnverifiedHeader>(&bytes).ok())
        .and_then(|h| h.alg);
    match alg {
        Some(_) => AuthFailure::AlgorithmNotAllowed,
        None => AuthFailure::Malformed,
    }
}

fn jwt_failure(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::InvalidSignature => AuthFailure::BadSignature,
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
        ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
        ErrorKind::MissingRequiredClaim(_) => AuthFailure::MissingClaim,
        ErrorKind::InvalidAlgorithm => AuthFailure::AlgorithmNotAllowed,
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => AuthFailure::Malformed,
        _ => AuthFailure::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity() -> Activity {
        Activity {
            kind: "message".to_owned(),
            channel_id: Some("msteams".to_owned()),
            service_url: Some("https://smba.trafficmanager.net/amer/".to_owned()),
            ..Activity::default()
        }
    }

    fn enabled() -> ChannelAuthenticator {
        let config = AuthConfig {
            app_id: Some("app".to_owned()),
            // Unroutable: these tests must fail before any fetch.
            openid_metadata_url: "http://127.0.0.1:9/channel".to_owned(),
            emulator_openid_metadata_url: "http://127.0.0.1:9/emulator".to_owned(),
            ..AuthConfig::default()
        };
        ChannelAuthenticator::new(&config, reqwest::Client::new())
    }

    async fn failure(auth: &ChannelAuthenticator, header: Option<&str>) -> AuthFailure {
        auth.authenticate(header, &activity())
            .await
            .expect_err("must be refused")
            .failure()
            .clone()
    }

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[tokio::test]
    async fn disabled_accepts_anything() {
        let auth = ChannelAuthenticator::disabled();
        assert!(!auth.is_enabled());
        assert!(auth.authenticate(None, &activity()).await.is_ok());
    }

    #[tokio::test]
    async fn header_problems_are_refused_before_any_fetch() {
        let auth = enabled();
        assert!(auth.is_enabled());
        assert_eq!(failure(&auth, None).await, AuthFailure::MissingHeader);
        assert_eq!(
            failure(&auth, Some("Basic abc")).await,
            AuthFailure::WrongScheme
        );
        assert_eq!(
            failure(&auth, Some("bearer a.b.c")).await,
            AuthFailure::WrongScheme
        );
        assert_eq!(
            failure(&auth, Some("Bearer")).await,
            AuthFailure::WrongScheme
        );
        assert_eq!(
            failure(&auth, Some("Bearer ")).await,
            AuthFailure::Malformed
        );
        assert_eq!(
            failure(&auth, Some("Bearer garbage")).await,
            AuthFailure::Malformed
        );
        let claims = b64(r#"{"iss":"https://api.botframework.com","aud":"app"}"#);
        let none = format!("Bearer {}.{claims}.", b64(r#"{"alg":"none","kid":"k"}"#));
        assert_eq!(
            failure(&auth, Some(&none)).await,
            AuthFailure::AlgorithmNotAllowed
        );
        let hs = format!(
            "Bearer {}.{claims}.c2ln",
            b64(r#"{"alg":"HS256","kid":"k"}"#)
        );
        assert_eq!(
            failure(&auth, Some(&hs)).await,
            AuthFailure::AlgorithmNotAllowed
        );
        let no_kid = format!("Bearer {}.{claims}.c2ln", b64(r#"{"alg":"RS256"}"#));
        assert_eq!(
            failure(&auth, Some(&no_kid)).await,
            AuthFailure::MissingKeyId
        );
    }

    #[test]
    fn the_error_text_is_generic() {
        let error = AuthError::from(AuthFailure::ServiceUrlMismatch);
        assert_eq!(error.to_string(), "unauthorized");
    }
}
