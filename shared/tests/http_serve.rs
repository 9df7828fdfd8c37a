//! `http::serve` over raw TCP: slow clients are cut off by the header and body timeouts,
//! normal requests are served, and shutdown waits for the requests in progress. Also the body
//! limit for a body that declares no length.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use proactive_bot::auth::AuthConfig;
use proactive_bot::http::{ServeConfig, serve_with};
use proactive_bot::wiring::Services;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const SHORT: ServeConfig = ServeConfig {
    header_read_timeout: Duration::from_millis(300),
    body_read_timeout: Duration::from_millis(300),
};

/// The bot's router (Emulator mode, in memory), served with `config` on 127.0.0.1:0.
async fn start(config: ServeConfig) -> (SocketAddr, Services, oneshot::Sender<()>) {
    let services = Services::in_memory(&AuthConfig::default()).expect("services");
    let (addr, stop) = start_router(services.router(), config).await;
    (addr, services, stop)
}

async fn start_router(router: Router, config: ServeConfig) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_with(
        listener,
        router,
        async move {
            let _ = stopped.await;
        },
        config,
    ));
    (addr, stop)
}

/// Everything the server sends until it closes the connection, and how long that took;
/// panics if it is still open after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            stream.read(&mut buffer),
        )
        .await
        {
            Err(_) => panic!(
                "the connection is still open after {limit:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

fn typing_activity() -> String {
    serde_json::json!({
        "type": "typing",
        "serviceUrl": "http://127.0.0.1:9/",
        "channelId": "emulator",
        "conversation": {"id": "c|livechat"},
        "from": {"id": "user"},
        "recipient": {"id": "bot"},
    })
    .to_string()
}

#[tokio::test]
async fn a_client_that_stalls_in_its_headers_is_disconnected() {
    let (addr, _services, _stop) = start(SHORT).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /api/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        .await
        .unwrap();
    let (received, after) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(
        after >= Duration::from_millis(250),
        "closed before the timeout: {after:?}"
    );
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "{received}"
    );
}

#[tokio::test]
async fn a_body_that_stalls_gets_408() {
    let (addr, services, _stop) = start(SHORT).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /api/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":\"m",
        )
        .await
        .unwrap();
    let (received, after) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(received.starts_with("HTTP/1.1 408"), "{received:?}");
    assert!(
        after >= Duration::from_millis(250),
        "answered before the timeout: {after:?}"
    );
    assert_eq!(services.jobs.list_recent(None, 10).await.unwrap().total, 0);
}

#[tokio::test]
async fn a_normal_request_is_served_while_a_slow_client_waits() {
    let (addr, _services, _stop) = start(ServeConfig::default()).await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /api/messages HTTP/1.1\r\n")
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/api/messages"))
        .header("content-type", "application/json")
        .body(typing_activity())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // Over raw TCP too, with the body in two pieces well within the timeout.
    let body = typing_activity();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (first, second) = body.as_bytes().split_at(10);
    stream
        .write_all(
            format!(
                "POST /prod/api/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    stream.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(second).await.unwrap();
    let (received, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received:?}");
}

#[tokio::test]
async fn shutdown_waits_for_the_request_in_progress() {
    // The stop is given once the request is being handled (not after a fixed sleep, which a
    // loaded machine can outrun).
    let handling = std::sync::Arc::new(tokio::sync::Notify::new());
    let handler_started = handling.clone();
    let router = Router::new().route(
        "/slow",
        post(move || {
            let handler_started = handler_started.clone();
            async move {
                handler_started.notify_one();
                tokio::time::sleep(Duration::from_millis(400)).await;
                "done"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_with(
        listener,
        router,
        async move {
            let _ = stopped.await;
        },
        ServeConfig::default(),
    ));
    let request = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(format!("http://{addr}/slow"))
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    });
    handling.notified().await;
    let started = Instant::now();
    stop.send(()).unwrap();
    server.await.unwrap().expect("serve ends cleanly");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "serve returned before the request in progress was answered: {:?}",
        started.elapsed()
    );
    assert_eq!(request.await.unwrap(), "done");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn a_body_without_a_declared_length_is_cut_off_at_the_limit() {
    use tower::ServiceExt;
    let services = Services::in_memory(&AuthConfig::default()).expect("services");
    let send = |chunks: usize| {
        let stream = futures_util::stream::iter(
            (0..chunks).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])),
        );
        axum::http::Request::post("/api/messages")
            .header("content-type", "application/json")
            .body(axum::body::Body::from_stream(stream))
            .unwrap()
    };
    let over = services.router().oneshot(send(5)).await.unwrap();
    assert_eq!(over.status().as_u16(), 413);
    // Within the limit the body is read (and, being only spaces, is not an activity).
    let within = services.router().oneshot(send(3)).await.unwrap();
    assert_eq!(within.status().as_u16(), 400);
}
