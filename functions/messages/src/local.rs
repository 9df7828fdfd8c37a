//! The local runner: the bot on `127.0.0.1:3978` (or `$PORT`), no cloud account needed.
//!
//! With the AWS variables unset, jobs, notifications and the delivery queue live in process
//! memory; with them set, in DynamoDB and SQS (moto locally, via `AWS_ENDPOINT_URL`). Either
//! way the delivery queue is consumed in-process by the very handler the delivery function
//! runs, fed the same Lambda-shaped records, by as many pollers as the template lets Lambda
//! run at once.

use std::net::SocketAddr;

use proactive_bot::config::{Backend, Settings};
use proactive_bot::delivery::consumer::consume;
use proactive_bot::wiring::Services;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Error;

/// Concurrent batches, like the template's `ScalingConfig: MaximumConcurrency`.
pub const CONSUMERS: usize = 5;

/// A running local bot: where it listens, and how to stop it.
pub struct LocalBot {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    consumer: JoinHandle<()>,
}

impl LocalBot {
    /// Serves `services` on `listener` and starts consuming the delivery queue.
    pub fn start(services: &Services, listener: TcpListener) -> std::io::Result<LocalBot> {
        let addr = listener.local_addr()?;
        let (shutdown, signal) = oneshot::channel::<()>();
        let router = services.router();
        // With header and body read timeouts: a slow client cannot hold a connection open.
        let server = tokio::spawn(proactive_bot::http::serve(listener, router, async {
            let _ = signal.await;
        }));
        let consumer = tokio::spawn(consume(
            services.engine.clone(),
            services.queue.clone(),
            CONSUMERS,
        ));
        Ok(LocalBot {
            addr,
            shutdown: Some(shutdown),
            server,
            consumer,
        })
    }

    /// The messaging endpoint, as a Bot Framework client would be configured with it.
    pub fn endpoint(&self) -> String {
        format!("http://{}/api/messages", self.addr)
    }

    /// Stops accepting, finishes the requests in flight, then stops the consumer.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let served = (&mut self.server).await.unwrap_or(Ok(()));
        self.consumer.abort();
        served
    }
}

/// `cargo run`: serve until Ctrl-C.
pub async fn run(settings: Settings) -> Result<(), Error> {
    let state = match &settings.backend {
        Backend::Memory => "state is in memory (lost on exit)".to_owned(),
        Backend::Aws {
            jobs_table,
            delivery_table,
            queue_url,
            ..
        } => format!(
            "state is in DynamoDB tables {jobs_table} and {delivery_table} and SQS queue {queue_url}"
        ),
    };
    if !settings.auth.is_enabled() {
        tracing::warn!(
            "MicrosoftAppId is not set: authentication is off (Emulator mode); do not expose this port"
        );
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], settings.port));
    let services = Services::build(settings).await?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bot = LocalBot::start(&services, listener)?;
    tracing::info!("bot listening on {}; {state}", bot.endpoint());
    match &services.notify_auth {
        proactive_bot::notify::api::NotifyAuth::ApiKey(_) => tracing::info!(
            "notify API on http://{addr}/api/notify (Authorization: Bearer $NOTIFY_API_KEY)"
        ),
        _ => tracing::info!("notify API closed: set NOTIFY_API_KEY to open /api/notify"),
    }
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    bot.stop().await?;
    Ok(())
}
