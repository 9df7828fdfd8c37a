//! A broadcast at scale, as deployed but on this machine: the local runner (the HTTP function's
//! router, and five pollers consuming the delivery queue as Lambda's event source mapping
//! would) with its state on moto's servers (DynamoDB and SQS), on moto's DynamoDB with the
//! queue in memory (moto's FIFO queue slows down with its depth; see the README), or in memory
//! for comparison,
//! sending one `POST /api/notify {"all": true}` to N conversations registered in one tenant,
//! through a Teams simulator that enforces Teams' limits exactly (50 messages a second per
//! tenant).
//!
//! `cargo bench -p messages --bench broadcast` runs the three with N = 10,000;
//! `BROADCAST_BENCH=memory`, `moto-dynamodb` or `moto` picks them (comma-separated) and
//! `BROADCAST_RECIPIENTS=2000` sets N.
//! Prints: the time from the request to the last delivery divided by the floor the tenant
//! limit allows (N / 50 per second), 429s, duplicates, lost, the fan-out's own time, and AWS
//! requests per recipient by operation. The figures are printed, not asserted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use messages::local::LocalBot;
use proactive_bot::auth::AuthConfig;
use proactive_bot::config::{Backend, Settings};
use proactive_bot::notify::api::NotifyAuth;
use proactive_bot::testing::moto::{self, MotoServer, RequestCounter};
use proactive_bot::testing::simulator::{SimulatorConfig, TeamsSimulator};
use proactive_bot::testing::teams_reference;
use proactive_bot::wiring::{Ports, Services};

const TENANT: &str = "tenant-broadcast";
const KEY: &str = "bench-key";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Store {
    Memory,
    /// DynamoDB on moto, the queue in memory (with SQS's FIFO rules).
    MotoDynamodb,
    Moto,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::MotoDynamodb => "moto-dynamodb",
            Store::Moto => "moto",
        }
    }
}

/// The second moto server, for SQS (one moto process serves one request at a time).
fn sqs_moto() -> &'static MotoServer {
    static SQS: std::sync::OnceLock<MotoServer> = std::sync::OnceLock::new();
    SQS.get_or_init(MotoServer::start)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        proactive_bot::telemetry::init(false);
    }
    let only = std::env::var("BROADCAST_BENCH").unwrap_or_default();
    let recipients: usize = std::env::var("BROADCAST_RECIPIENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    for store in [Store::Memory, Store::MotoDynamodb, Store::Moto] {
        if only.is_empty() || only.split(',').any(|o| o == store.name()) {
            run(store, recipients).await;
        }
    }
}

async fn run(store: Store, recipients: usize) {
    let simulator = TeamsSimulator::start(SimulatorConfig::default()).await;
    let settings = Settings::from_env().expect("settings");
    let (ports, counter) = match store {
        Store::Memory => {
            let mut ports = Ports::in_memory(settings.max_receives);
            // The default in-memory store keeps 10,000 notifications; a broadcast's are all
            // in flight at once.
            ports.notifications = Arc::new(
                proactive_bot::adapters::memory::MemoryNotificationStore::with_capacity(
                    recipients * 2,
                ),
            );
            (ports, RequestCounter::default())
        }
        Store::MotoDynamodb | Store::Moto => {
            let dynamodb = MotoServer::shared();
            let sqs = sqs_moto();
            let tables = dynamodb.create_resources("broadcast").await;
            let queues = sqs.create_resources("broadcast").await;
            let (dynamodb_config, counter) = dynamodb.sdk_config().await;
            let (sqs_config, _) = sqs.sdk_config().await;
            let ports = Ports::aws(
                moto::dynamodb_client(&dynamodb_config, &counter),
                moto::sqs_client(&sqs_config, &counter),
                &Backend::Aws {
                    jobs_table: tables.table_name.clone(),
                    delivery_table: tables.delivery_table_name.clone(),
                    queue_url: queues.queue_url.clone(),
                    dead_letter_queue_url: queues.dead_letter_queue_url.clone(),
                },
                chrono::Duration::days(1),
                proactive_bot::registry::RegistryRetention::default(),
            )
            .expect("AWS ports");
            let ports = if store == Store::MotoDynamodb {
                let queue = Arc::new(proactive_bot::adapters::memory::MemoryQueue::new(
                    proactive_bot::wiring::MEMORY_VISIBILITY_TIMEOUT,
                    settings.max_receives,
                ));
                Ports {
                    queue: queue.clone(),
                    reminders: proactive_bot::wiring::ReminderPorts::in_memory(queue),
                    ..ports
                }
            } else {
                ports
            };
            (ports, counter)
        }
    };
    let mut services =
        Services::with_ports(&AuthConfig::default(), &settings, ports).expect("services");
    services.notify_auth = NotifyAuth::ApiKey(Arc::from(KEY));

    eprintln!("{store:?}: registering {recipients} conversations in one tenant…");
    let service_url = simulator.service_url();
    let registry = services.registry.clone();
    futures_util::stream::iter(0..recipients)
        .for_each_concurrent(32, |n| {
            let registry = registry.clone();
            let reference = teams_reference(&service_url, &format!("c{n:05}"), TENANT);
            // They talked to the bot an hour ago: quiet now, so the broadcast is not held.
            async move {
                registry
                    .seen(&reference, Utc::now() - chrono::Duration::hours(1))
                    .await
                    .expect("registered");
            }
        })
        .await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bot = LocalBot::start(&services, listener).expect("the local runner");
    let http = reqwest::Client::new();
    let endpoint = bot.endpoint().replace("/api/messages", "/api/notify");

    eprintln!("{store:?}: broadcasting to {recipients} through the Teams simulator…");
    counter.reset();
    let started = Instant::now();
    let answer: serde_json::Value = http
        .post(&endpoint)
        .bearer_auth(KEY)
        .json(&serde_json::json!({"all": true, "text": "maintenance tonight"}))
        .send()
        .await
        .expect("POST /api/notify")
        .json()
        .await
        .expect("a JSON answer");
    let answered_in = started.elapsed();
    let id = answer["id"].as_str().expect("an id").to_owned();
    assert_eq!(answer["recipients"], recipients, "{answer}");

    let mut fanned_out_in = None;
    let mut last_progress = (0, Instant::now());
    let elapsed = loop {
        let accepted = simulator.accepted().len();
        if fanned_out_in.is_none() {
            let status: serde_json::Value = http
                .get(format!("{endpoint}/{id}"))
                .bearer_auth(KEY)
                .send()
                .await
                .expect("GET status")
                .json()
                .await
                .expect("status JSON");
            if status["fanOut"] == "done" {
                fanned_out_in = Some(started.elapsed());
            }
        }
        if accepted >= recipients {
            break started.elapsed();
        }
        if accepted != last_progress.0 {
            last_progress = (accepted, Instant::now());
        }
        if last_progress.1.elapsed() > Duration::from_secs(60) {
            eprintln!("stopped waiting: {accepted} accepted, no progress for 60 s");
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Late duplicates, if any, would arrive now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests = counter.snapshot();
    bot.stop().await.unwrap();

    let mut per_conversation: HashMap<String, usize> = HashMap::new();
    for request in simulator.accepted() {
        let conversation = request.body["conversation"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *per_conversation.entry(conversation).or_default() += 1;
    }
    let duplicates: usize = per_conversation.values().map(|n| n - 1).sum();
    let lost = recipients - per_conversation.len().min(recipients);
    let floor = Duration::from_secs_f64(recipients as f64 / 50.0);
    let total = |prefix: &str| -> usize {
        requests
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && *k != "SQS.ReceiveMessage")
            .map(|(_, n)| n)
            .sum()
    };
    let per = |n: usize| n as f64 / recipients as f64;

    println!(
        "broadcast benchmark ({store:?}): one POST /api/notify {{\"all\": true}} to {recipients} conversations of one tenant, Teams simulator, local runner"
    );
    println!(
        "  answered in                {:>8.3} s",
        answered_in.as_secs_f64()
    );
    match fanned_out_in {
        Some(at) => println!("  fanned out in              {:>8.2} s", at.as_secs_f64()),
        None => println!("  fanned out in                   n/a (not seen done)"),
    }
    println!(
        "  delivered in               {:>8.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  floor (N / 50 per s)       {:>8.2} s",
        floor.as_secs_f64()
    );
    println!(
        "  time / floor               {:>8.3}   (goal <= 1.1)",
        elapsed.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "  429s received              {:>8}   (goal 0)",
        simulator.throttled_count()
    );
    println!("  lost                       {lost:>8}");
    println!("  duplicates                 {duplicates:>8}");
    if store != Store::Memory {
        println!(
            "  DynamoDB requests / recip. {:>8.2}",
            per(total("DynamoDB."))
        );
        if store == Store::Moto {
            println!(
                "  SQS requests / recip.      {:>8.2}   (+ the pollers' ReceiveMessage: {:.2})",
                per(total("SQS.")),
                per(requests.get("SQS.ReceiveMessage").copied().unwrap_or(0))
            );
        }
        println!("  requests by operation      {requests:?}");
    }
}
