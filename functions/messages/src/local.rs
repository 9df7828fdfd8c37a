//! The local runner: the bot on `127.0.0.1:3978` (or `$PORT`), no cloud account needed.
//!
//! With `JOBS_TABLE_NAME` and `COMPLETIONS_QUEUE_URL` unset, jobs and completions live in
//! process memory; with them set, in DynamoDB and SQS (moto locally, via `AWS_ENDPOINT_URL`).
//! Either way the completion queue is consumed in-process by the very handler the SQS function
//! runs, fed the same Lambda-shaped records.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proactive_bot::config::{Backend, Settings};
use proactive_bot::wiring::{QueueSource, Services};
use proactive_bot::worker::{CompletionWorker, sqs_event, sqs_record};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Error;

/// Like SQS's `maxReceiveCount` in the template: a completion failing this often is given up.
const MAX_ATTEMPTS: u32 = 5;
/// Like SQS's `ReceiveMessage` batch size.
const BATCH_SIZE: usize = 10;

/// A running local bot: where it listens, and how to stop it.
pub struct LocalBot {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    consumer: JoinHandle<()>,
}

impl LocalBot {
    /// Serves `services` on `listener` and starts consuming `source`.
    pub fn start(
        services: &Services,
        source: QueueSource,
        listener: TcpListener,
    ) -> std::io::Result<LocalBot> {
        let addr = listener.local_addr()?;
        let (shutdown, signal) = oneshot::channel::<()>();
        let router = services.router();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = signal.await;
                })
                .await
        });
        let consumer = tokio::spawn(consume(services.worker.clone(), source));
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
            table_name,
            queue_url,
        } => {
            format!("state is in DynamoDB table {table_name} and SQS queue {queue_url}")
        }
    };
    if !settings.auth.is_enabled() {
        tracing::warn!(
            "MicrosoftAppId is not set: authentication is off (Emulator mode); do not expose this port"
        );
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], settings.port));
    let (services, source) = Services::build(settings).await?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bot = LocalBot::start(&services, source, listener)?;
    tracing::info!("bot listening on {}; {state}", bot.endpoint());
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    bot.stop().await?;
    Ok(())
}

async fn consume(worker: Arc<CompletionWorker>, source: QueueSource) {
    match source {
        QueueSource::Memory(mut receiver) => {
            while let Some(first) = receiver.recv().await {
                let mut batch = vec![first];
                while batch.len() < BATCH_SIZE {
                    match receiver.try_recv() {
                        Ok(message) => batch.push(message),
                        Err(_) => break,
                    }
                }
                let records = batch
                    .iter()
                    .map(|m| sqs_record(&m.message_id, &m.body))
                    .collect();
                tokio::spawn(deliver_with_retries(worker.clone(), records));
            }
        }
        QueueSource::Sqs(poller) => loop {
            let messages = match poller.receive(BATCH_SIZE as i32, 10).await {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(error = %error, "polling the completion queue failed");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            if messages.is_empty() {
                continue;
            }
            let response = worker.handle_sqs_event(sqs_event(messages.clone())).await;
            let failed: Vec<&str> = response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.as_str())
                .collect();
            // As Lambda's event source mapping does: delete what succeeded; failures come back
            // after the visibility timeout.
            for message in &messages {
                let id = message.message_id.as_deref().unwrap_or_default();
                if failed.contains(&id) {
                    continue;
                }
                if let Some(handle) = message.receipt_handle.as_deref()
                    && let Err(error) = poller.delete(handle).await
                {
                    tracing::warn!(error = %error, message_id = id, "could not delete a processed message");
                }
            }
        },
    }
}

/// The in-memory queue's redelivery: failed records come back after the worker's lease has
/// lapsed (as SQS's visibility timeout does), at most [`MAX_ATTEMPTS`] times.
async fn deliver_with_retries(
    worker: Arc<CompletionWorker>,
    mut records: Vec<aws_lambda_events::event::sqs::SqsMessage>,
) {
    for attempt in 1..=MAX_ATTEMPTS {
        let response = worker.handle_sqs_event(sqs_event(records.clone())).await;
        if response.batch_item_failures.is_empty() {
            return;
        }
        let failed: Vec<String> = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        records.retain(|r| {
            failed
                .iter()
                .any(|id| Some(id.as_str()) == r.message_id.as_deref())
        });
        if attempt == MAX_ATTEMPTS {
            tracing::error!(
                ?failed,
                "completions given up after {MAX_ATTEMPTS} attempts (SQS would move them to the dead-letter queue)"
            );
            return;
        }
        tokio::time::sleep(worker.retry_after()).await;
    }
}
