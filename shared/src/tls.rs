//! One TLS client set-up for every HTTPS client of the process: the Bot Connector client, the
//! token and signing-key fetches (reqwest), and the AWS SDK's clients (DynamoDB, SQS,
//! EventBridge Scheduler, Secrets Manager), which [`sdk_http_client`] sends through reqwest
//! too. One rustls [`ClientConfig`](rustls::ClientConfig) with one root store, made on first
//! use and shared (clones share its verifier and session cache).
//!
//! **Why compiled-in roots.** The trusted roots are Mozilla's, compiled into the binary
//! (`webpki-roots`): making the store costs a copy of a static table, with nothing read or
//! parsed. The alternatives read the file system when a client is built: reqwest's default
//! (rustls-platform-verifier) and the SDK's default client (rustls-native-certs) each load and
//! parse the system's CA bundle, and every file of `SSL_CERT_DIR` when it is set, once per
//! client stack — most of a cold start's work before this module. Every host the bot calls
//! chains to a root in Mozilla's programme: `login.microsoftonline.com`,
//! `login.botframework.com`, `smba.trafficmanager.net` and the other channel hosts (DigiCert,
//! Microsoft), and the AWS endpoints (Amazon, Starfield). The price: a root added to or
//! removed from Mozilla's programme reaches the binary with a `webpki-roots` update (a
//! `cargo update` and a deploy), and a private CA (a TLS-inspecting proxy) is trusted only
//! through [`client_config_trusting`]. Verification itself is rustls' WebPKI verifier, the
//! same as before: chain, name, validity, signature algorithms.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use http_body_util::BodyExt;
use rustls::pki_types::CertificateDer;

/// The process's TLS client configuration, made on first use.
static SHARED: LazyLock<rustls::ClientConfig> = LazyLock::new(|| {
    build(webpki_roots()).expect("the compiled-in roots make a valid configuration")
});

/// The process's TLS client configuration: Mozilla's roots, TLS 1.2 and 1.3 with rustls' safe
/// defaults, ALPN offering HTTP/2 and HTTP/1.1. A clone shares the verifier (and so the root
/// store) and the session cache.
pub fn client_config() -> rustls::ClientConfig {
    SHARED.clone()
}

/// [`client_config`] with more trusted roots: a private CA, or a test CA. The roots given are
/// parsed here; a certificate that is not a usable trust anchor is an error.
pub fn client_config_trusting(
    extra_roots: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = webpki_roots();
    for root in extra_roots {
        roots.add(root)?;
    }
    build(roots)
}

/// A reqwest client builder over `tls` (usually [`client_config()`]): building the client
/// reads no certificate.
pub fn reqwest_builder(tls: rustls::ClientConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder().tls_backend_preconfigured(tls)
}

/// A reqwest client over [`client_config()`], with reqwest's defaults otherwise.
pub fn reqwest_client() -> reqwest::Client {
    reqwest_builder(client_config())
        .build()
        .expect("a reqwest client over a rustls configuration builds")
}

fn webpki_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn build(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // reqwest leaves ALPN to a preconfigured configuration; this is what it offers itself.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The AWS SDK's HTTP client for `aws_config::ConfigLoader::http_client`: requests go through
/// reqwest over `tls` (usually [`client_config()`]) instead of the SDK's own hyper and rustls
/// stack, which would load the system's roots again. The SDK's connect and read timeouts are
/// honoured: one reqwest client per distinct pair, made on first use. Request bodies must be in
/// memory (every operation of the services this bot calls sends JSON or a form); responses are
/// read whole (theirs are small JSON documents).
pub fn sdk_http_client(tls: rustls::ClientConfig) -> SharedHttpClient {
    SharedHttpClient::new(SdkHttpClient {
        tls,
        connectors: Mutex::new(Vec::new()),
    })
}

type Timeouts = (Option<Duration>, Option<Duration>);

struct SdkHttpClient {
    tls: rustls::ClientConfig,
    connectors: Mutex<Vec<(Timeouts, SharedHttpConnector)>>,
}

impl std::fmt::Debug for SdkHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdkHttpClient").finish_non_exhaustive()
    }
}

impl HttpClient for SdkHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let timeouts = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = self.connectors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, connector)) = connectors.iter().find(|(t, _)| *t == timeouts) {
            return connector.clone();
        }
        let mut builder = reqwest_builder(self.tls.clone())
            // The SDK signs the request: a redirect would send it somewhere unsigned for.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(connect) = timeouts.0 {
            builder = builder.connect_timeout(connect);
        }
        if let Some(read) = timeouts.1 {
            builder = builder.read_timeout(read);
        }
        let connector = SharedHttpConnector::new(SdkConnector {
            client: builder
                .build()
                .expect("a reqwest client over a rustls configuration builds"),
        });
        connectors.push((timeouts, connector.clone()));
        connector
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        Some(ConnectorMetadata::new("reqwest", None))
    }
}

#[derive(Debug)]
struct SdkConnector {
    client: reqwest::Client,
}

impl HttpConnector for SdkConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let request = to_reqwest(request).await?;
            let response = client.execute(request).await.map_err(connector_error)?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.bytes().await.map_err(connector_error)?;
            let mut http = http::Response::new(SdkBody::from(body));
            *http.status_mut() = http::StatusCode::from_u16(status)
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            *http.headers_mut() = headers;
            HttpResponse::try_from(http).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

async fn to_reqwest(request: HttpRequest) -> Result<reqwest::Request, ConnectorError> {
    let request = request
        .try_into_http1x()
        .map_err(|e| ConnectorError::user(e.into()))?;
    let (parts, body) = request.into_parts();
    if body.bytes().is_none() {
        return Err(ConnectorError::user(
            "a streaming request body (not supported)".into(),
        ));
    }
    // Read through the body, not around it: the SDK's stalled-stream protection wraps it to
    // count what is sent, and a body never read looks like a stalled upload. That fails every
    // request still unanswered after the grace period (5 s), such as SQS's 10 s long poll.
    let bytes = body
        .collect()
        .await
        .map_err(ConnectorError::user)?
        .to_bytes();
    reqwest::Request::try_from(http::Request::from_parts(parts, bytes))
        .map_err(|e| ConnectorError::user(e.into()))
}

/// As the SDK's own client classifies: timeouts and I/O failures are transient (retried),
/// anything else is not.
fn connector_error(error: reqwest::Error) -> ConnectorError {
    if error.is_timeout() {
        ConnectorError::timeout(error.into())
    } else if error.is_connect() || error.is_request() || error.is_body() {
        ConnectorError::io(error.into())
    } else {
        ConnectorError::other(error.into(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_provider_and_the_roots_are_compiled_in() {
        let (a, b) = (client_config(), client_config());
        assert!(Arc::ptr_eq(
            &a.crypto_provider().clone(),
            b.crypto_provider()
        ));
        assert!(
            webpki_roots().len() > 100,
            "Mozilla's roots are compiled in"
        );
        assert_eq!(a.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn an_extra_root_must_be_a_certificate() {
        assert!(client_config_trusting([CertificateDer::from(vec![1, 2, 3])]).is_err());
    }
}
