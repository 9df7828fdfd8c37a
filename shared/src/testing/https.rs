//! HTTPS for tests: a test CA, a server certificate it issued (for the name `localhost` only,
//! valid until 2126), and a loopback server that serves a router with it.
//!
//! Clients trust the CA through [`crate::tls::client_config_trusting`]: the product's own
//! configuration and verifier (rustls' WebPKI: chain, name, validity) with one more root, so a
//! test over HTTPS exercises the real validation path; [`crate::tls::client_config`] alone
//! refuses this server. The CA's private key was not kept: nothing else can be issued by it.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const CA: &str = include_str!("tls/ca.pem");
const SERVER_CERT: &str = include_str!("tls/server.pem");
const SERVER_KEY: &str = include_str!("tls/server.key");

/// The test CA's certificate.
pub fn test_ca() -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(CA.as_bytes()).expect("the test CA is PEM")
}

/// The product's TLS client configuration, trusting the test CA too.
pub fn client_config() -> rustls::ClientConfig {
    crate::tls::client_config_trusting([test_ca()]).expect("the test CA is a valid root")
}

fn server_config() -> rustls::ServerConfig {
    let cert = CertificateDer::from_pem_slice(SERVER_CERT.as_bytes()).expect("server cert PEM");
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY.as_bytes()).expect("server key PEM");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("the test certificate and key match");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Serves `router` over HTTPS (HTTP/1.1) on a free port of 127.0.0.1 until the returned task
/// is aborted; reach it as `https://localhost:{port}`. A client that does not trust the test
/// CA fails its handshake, and the server goes on serving others.
pub async fn serve_on_loopback(
    router: axum::Router,
    what: &str,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind the {what} on 127.0.0.1: {e}"));
    let addr = listener.local_addr().expect("local addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config()));
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, server)
}
