//! A local identity provider for authentication tests: an HTTP server on 127.0.0.1 serving
//! the Bot Framework channel OpenID metadata and JWKS (keys with `endorsements`), the
//! Emulator/AAD OpenID metadata and JWKS, and an AAD-like token endpoint
//! `/{tenant}/oauth2/v2.0/token` that records every request. It counts every fetch.
//!
//! RSA test keys are generated once per test process; the free functions here mint tokens
//! signed with them (channel tokens, Emulator v1/v2 tokens, or any header and claims).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use crate::auth::{AuthConfig, CHANNEL_ISSUER, EMULATOR_ISSUERS};

/// The kid of the channel key endorsed for `msteams`, `webchat`, `directline` and `emulator`.
pub const CHANNEL_KID: &str = "channel-key";
/// The kid of a channel key (same material) endorsed for `msteams` only.
pub const TEAMS_ONLY_KID: &str = "teams-only-key";
/// The kid of a channel key (same material) without `endorsements`.
pub const UNENDORSED_KID: &str = "unendorsed-key";
/// The channels [`CHANNEL_KID`] is endorsed for.
pub const CHANNEL_ENDORSEMENTS: &[&str] = &["msteams", "webchat", "directline", "emulator"];
/// The kid of the Emulator/AAD key.
pub const EMULATOR_KID: &str = "emulator-key";
/// The secret [`TestIdp::auth_config`] configures.
pub const TEST_APP_PASSWORD: &str = "test-app-secret-do-not-log";

/// An RSA key pair generated for the tests.
pub struct RsaTestKey {
    private_der: Vec<u8>,
    public_der: Vec<u8>,
    n: String,
    e: String,
}

impl RsaTestKey {
    fn generate() -> Self {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
            .expect("generate an RSA test key");
        let private_der = key
            .to_pkcs1_der()
            .expect("encode the RSA test key")
            .as_bytes()
            .to_vec();
        let public_der = key
            .to_public_key()
            .to_pkcs1_der()
            .expect("encode the RSA test public key")
            .as_bytes()
            .to_vec();
        RsaTestKey {
            private_der,
            public_der,
            n: URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            e: URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        }
    }

    /// The signing key (PKCS#1 DER).
    pub fn encoding_key(&self) -> EncodingKey {
        EncodingKey::from_rsa_der(&self.private_der)
    }

    /// The public key as PKCS#1 DER (for example to key an HS256 forgery with it).
    pub fn public_der(&self) -> &[u8] {
        &self.public_der
    }

    /// The public key as a JWKS entry.
    pub fn jwk(&self, kid: &str, endorsements: Option<&[&str]>) -> Value {
        let mut jwk = json!({"kty": "RSA", "use": "sig", "kid": kid, "n": self.n, "e": self.e});
        if let Some(endorsements) = endorsements {
            jwk["endorsements"] = json!(endorsements);
        }
        jwk
    }
}

/// The key behind [`CHANNEL_KID`], [`TEAMS_ONLY_KID`] and [`UNENDORSED_KID`].
pub fn channel_key() -> &'static RsaTestKey {
    static KEY: OnceLock<RsaTestKey> = OnceLock::new();
    KEY.get_or_init(RsaTestKey::generate)
}

/// The key behind [`EMULATOR_KID`].
pub fn emulator_key() -> &'static RsaTestKey {
    static KEY: OnceLock<RsaTestKey> = OnceLock::new();
    KEY.get_or_init(RsaTestKey::generate)
}

/// A key the IdP does not publish (forgeries, rotation).
pub fn other_key() -> &'static RsaTestKey {
    static KEY: OnceLock<RsaTestKey> = OnceLock::new();
    KEY.get_or_init(RsaTestKey::generate)
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The claims of a channel token for `app_id` and `service_url`, valid for an hour.
pub fn channel_claims(app_id: &str, service_url: &str) -> Value {
    let now = now();
    json!({
        "iss": CHANNEL_ISSUER,
        "aud": app_id,
        "serviceurl": service_url,
        "nbf": now - 10,
        "iat": now - 10,
        "exp": now + 3600,
    })
}

/// The claims of an Emulator v1 token (`ver` 1.0, `appid`) for `app_id`.
pub fn emulator_v1_claims(app_id: &str) -> Value {
    let now = now();
    json!({
        "iss": EMULATOR_ISSUERS[0],
        "aud": app_id,
        "appid": app_id,
        "ver": "1.0",
        "nbf": now - 10,
        "iat": now - 10,
        "exp": now + 3600,
    })
}

/// The claims of an Emulator v2 token (`ver` 2.0, `azp`) for `app_id`.
pub fn emulator_v2_claims(app_id: &str) -> Value {
    let now = now();
    json!({
        "iss": EMULATOR_ISSUERS[1],
        "aud": app_id,
        "azp": app_id,
        "ver": "2.0",
        "nbf": now - 10,
        "iat": now - 10,
        "exp": now + 3600,
    })
}

/// `claims` signed with `key` under `alg` (RS*), the header naming `kid`.
pub fn sign(key: &RsaTestKey, kid: &str, alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    sign_with(&header, claims, &key.encoding_key())
}

/// `claims` signed under any header with any key (HS256 forgeries included).
pub fn sign_with(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).expect("sign a test token")
}

/// A token with any header (`{"alg":"none"}` included) and no signature.
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// A valid channel token for `app_id` and `service_url`, signed under [`CHANNEL_KID`].
pub fn channel_token(app_id: &str, service_url: &str) -> String {
    sign(
        channel_key(),
        CHANNEL_KID,
        Algorithm::RS256,
        &channel_claims(app_id, service_url),
    )
}

/// A valid Emulator v1 token for `app_id`, signed under [`EMULATOR_KID`].
pub fn emulator_token_v1(app_id: &str) -> String {
    sign(
        emulator_key(),
        EMULATOR_KID,
        Algorithm::RS256,
        &emulator_v1_claims(app_id),
    )
}

/// A valid Emulator v2 token for `app_id`, signed under [`EMULATOR_KID`].
pub fn emulator_token_v2(app_id: &str) -> String {
    sign(
        emulator_key(),
        EMULATOR_KID,
        Algorithm::RS256,
        &emulator_v2_claims(app_id),
    )
}

/// One request to the token endpoint.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The tenant path segment.
    pub tenant: String,
    pub path: String,
    pub form: BTreeMap<String, String>,
}

impl TokenRequest {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Counters {
    channel_metadata: AtomicUsize,
    channel_jwks: AtomicUsize,
    emulator_metadata: AtomicUsize,
    emulator_jwks: AtomicUsize,
}

struct IdpState {
    base_url: String,
    channel_keys: Mutex<Vec<Value>>,
    emulator_keys: Mutex<Vec<Value>>,
    counters: Counters,
    token_requests: Mutex<Vec<TokenRequest>>,
    token_expires_in: AtomicU64,
    token_failures: Mutex<VecDeque<u16>>,
    delay_ms: AtomicU64,
}

impl IdpState {
    async fn pause(&self) {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The identity provider. Stops when dropped.
pub struct TestIdp {
    addr: SocketAddr,
    state: Arc<IdpState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestIdp {
    /// Starts on 127.0.0.1 on a free port, publishing [`CHANNEL_KID`], [`TEAMS_ONLY_KID`],
    /// [`UNENDORSED_KID`] and [`EMULATOR_KID`]; tokens expire in 3600 s.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the identity provider on 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let channel = channel_key();
        let state = Arc::new(IdpState {
            base_url: format!("http://{addr}"),
            channel_keys: Mutex::new(vec![
                channel.jwk(CHANNEL_KID, Some(CHANNEL_ENDORSEMENTS)),
                channel.jwk(TEAMS_ONLY_KID, Some(&["msteams"])),
                channel.jwk(UNENDORSED_KID, None),
            ]),
            emulator_keys: Mutex::new(vec![emulator_key().jwk(EMULATOR_KID, None)]),
            counters: Counters::default(),
            token_requests: Mutex::new(Vec::new()),
            token_expires_in: AtomicU64::new(3600),
            token_failures: Mutex::new(VecDeque::new()),
            delay_ms: AtomicU64::new(0),
        });
        let app = Router::new()
            .route(
                "/channel/.well-known/openidconfiguration",
                get(channel_metadata),
            )
            .route("/channel/keys", get(channel_jwks))
            .route(
                "/emulator/.well-known/openid-configuration",
                get(emulator_metadata),
            )
            .route("/emulator/keys", get(emulator_jwks))
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestIdp {
            addr,
            state,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`, also the login base (`BOTFRAMEWORK_LOGIN_URL`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// For `BOTFRAMEWORK_OPENID_METADATA_URL`.
    pub fn channel_metadata_url(&self) -> String {
        format!(
            "{}/channel/.well-known/openidconfiguration",
            self.base_url()
        )
    }

    /// For `BOTFRAMEWORK_EMULATOR_OPENID_METADATA_URL`.
    pub fn emulator_metadata_url(&self) -> String {
        format!(
            "{}/emulator/.well-known/openid-configuration",
            self.base_url()
        )
    }

    /// A MultiTenant configuration for `app_id` (password [`TEST_APP_PASSWORD`]) using this
    /// IdP for keys and tokens, with the default serviceUrl allowlist.
    pub fn auth_config(&self, app_id: &str) -> AuthConfig {
        AuthConfig {
            app_id: Some(app_id.to_owned()),
            app_password: Some(TEST_APP_PASSWORD.to_owned()),
            openid_metadata_url: self.channel_metadata_url(),
            emulator_openid_metadata_url: self.emulator_metadata_url(),
            login_url: self.base_url(),
            ..AuthConfig::default()
        }
    }

    pub fn channel_metadata_fetches(&self) -> usize {
        self.state.counters.channel_metadata.load(Ordering::SeqCst)
    }

    pub fn channel_jwks_fetches(&self) -> usize {
        self.state.counters.channel_jwks.load(Ordering::SeqCst)
    }

    pub fn emulator_metadata_fetches(&self) -> usize {
        self.state.counters.emulator_metadata.load(Ordering::SeqCst)
    }

    pub fn emulator_jwks_fetches(&self) -> usize {
        self.state.counters.emulator_jwks.load(Ordering::SeqCst)
    }

    /// Every token request so far, in order.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        lock(&self.state.token_requests).clone()
    }

    pub fn token_request_count(&self) -> usize {
        lock(&self.state.token_requests).len()
    }

    /// The `expires_in` of tokens issued from now on.
    pub fn set_token_expires_in(&self, seconds: u64) {
        self.state.token_expires_in.store(seconds, Ordering::SeqCst);
    }

    /// The next token requests answer these statuses, one each, before tokens again.
    pub fn fail_next_token_requests(&self, statuses: &[u16]) {
        lock(&self.state.token_failures).extend(statuses.iter().copied());
    }

    /// Every answer waits this long first (to widen races in concurrency tests).
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Publishes another channel key (key rotation).
    pub fn add_channel_key(&self, key: &RsaTestKey, kid: &str, endorsements: Option<&[&str]>) {
        lock(&self.state.channel_keys).push(key.jwk(kid, endorsements));
    }
}

async fn channel_metadata(State(state): State<Arc<IdpState>>) -> Response {
    state
        .counters
        .channel_metadata
        .fetch_add(1, Ordering::SeqCst);
    state.pause().await;
    axum::Json(json!({
        "issuer": CHANNEL_ISSUER,
        "authorization_endpoint": "https://invalid.botframework.com/v1/auth",
        "jwks_uri": format!("{}/channel/keys", state.base_url),
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
    }))
    .into_response()
}

async fn channel_jwks(State(state): State<Arc<IdpState>>) -> Response {
    state.counters.channel_jwks.fetch_add(1, Ordering::SeqCst);
    state.pause().await;
    let keys = lock(&state.channel_keys).clone();
    axum::Json(json!({ "keys": keys })).into_response()
}

async fn emulator_metadata(State(state): State<Arc<IdpState>>) -> Response {
    state
        .counters
        .emulator_metadata
        .fetch_add(1, Ordering::SeqCst);
    state.pause().await;
    axum::Json(json!({
        "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0",
        "jwks_uri": format!("{}/emulator/keys", state.base_url),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn emulator_jwks(State(state): State<Arc<IdpState>>) -> Response {
    state.counters.emulator_jwks.fetch_add(1, Ordering::SeqCst);
    state.pause().await;
    let keys = lock(&state.emulator_keys).clone();
    axum::Json(json!({ "keys": keys })).into_response()
}

async fn token(
    State(state): State<Arc<IdpState>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let n = {
        let mut requests = lock(&state.token_requests);
        requests.push(TokenRequest {
            path: format!("/{tenant}/oauth2/v2.0/token"),
            tenant,
            form,
        });
        requests.len()
    };
    state.pause().await;
    if let Some(status) = lock(&state.token_failures).pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({
            "error": "temporarily_unavailable",
            "error_description": "AADSTS50196: injected failure",
            "error_codes": [50196],
        });
        return (status, axum::Json(body)).into_response();
    }
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": state.token_expires_in.load(Ordering::SeqCst),
        "ext_expires_in": state.token_expires_in.load(Ordering::SeqCst),
        "access_token": format!("test-access-token-{n}"),
    }))
    .into_response()
}
