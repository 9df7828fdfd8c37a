//! A broadcast at scale, as deployed but on this machine: the local runner (the HTTP function's
//! router, and five pollers consuming the delivery queue as Lambda's event source mapping
//! would) with its state in memory, on moto's DynamoDB with the queue in memory (moto's FIFO
//! queue slows down with its depth; see the README), or on moto's servers (DynamoDB and SQS),
//! sending one `POST /api/notify {"all": true, "tenantId": …}` to N conversations registered
//! in one tenant, through a Teams simulator that enforces Teams' limits exactly (50 messages a
//! second per tenant) and answers as Teams does, after 100–300 ms. While it drains, 20 urgent
//! notify calls go to conversations of another tenant, spread over the drain.
//!
//! `cargo bench -p messages --bench broadcast` runs the three with N = 10,000, once each.
//! `BROADCAST_BENCH=memory`, `moto-dynamodb` or `moto` picks them (comma-separated),
//! `BROADCAST_RECIPIENTS=1000` sets N, `BROADCAST_RUNS=5` repeats each, and
//! `BROADCAST_LATENCY_MS=150` / `BROADCAST_JITTER_MS=50` set the simulator's answer time
//! (uniform in latency ± jitter).
//!
//! Prints, for each run: the time from the request to the last recipient's delivery divided
//! by the floor the tenant limit allows (N / 50 per second; `RATE_LIMITS` sets another), 429s, lost, duplicates, out of
//! order, queue receives per notification, DynamoDB and SQS requests per recipient (moto; by
//! the same request interceptor as the cost table), and the urgent notifications' time from
//! the call to the channel (median, worst). The figures are printed, not asserted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use messages::local::LocalBot;
use proactive_bot::auth::AuthConfig;
use proactive_bot::config::{Backend, Settings};
use proactive_bot::notify::api::NotifyAuth;
use proactive_bot::testing::moto::{self, MotoServer, RequestCounter};
use proactive_bot::testing::queue::CountingQueue;
use proactive_bot::testing::simulator::{SimulatorConfig, TeamsSimulator};
use proactive_bot::testing::teams_reference;
use proactive_bot::wiring::{Ports, Services};

const TENANT: &str = "tenant-broadcast";
const OTHER_TENANT: &str = "tenant-other";
const KEY: &str = "bench-key";
/// Urgent notify calls to the other tenant during the drain, and the conversations they go to.
const PROBES: usize = 20;
const PROBE_CONVERSATIONS: usize = 5;

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

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        proactive_bot::telemetry::init(false);
    }
    let only = std::env::var("BROADCAST_BENCH").unwrap_or_default();
    let recipients = env_number("BROADCAST_RECIPIENTS", 10_000) as usize;
    let runs = env_number("BROADCAST_RUNS", 1).max(1);
    let latency = env_number("BROADCAST_LATENCY_MS", 150);
    let jitter = env_number("BROADCAST_JITTER_MS", 50).min(latency);
    for store in [Store::Memory, Store::MotoDynamodb, Store::Moto] {
        if only.is_empty() || only.split(',').any(|o| o == store.name()) {
            for run_number in 1..=runs {
                eprintln!("{store:?}: run {run_number} of {runs}");
                run(store, recipients, latency, jitter).await;
            }
        }
    }
}

async fn run(store: Store, recipients: usize, latency_ms: u64, jitter_ms: u64) {
    let settings = Settings::from_env().expect("settings");
    // The channel enforces the limits the bot is configured with (Teams' unless RATE_LIMITS
    // says otherwise: a tenant limit moto can carry, say).
    let limits = settings.limits.default.clone();
    let simulator = TeamsSimulator::start(SimulatorConfig {
        conversation: limits.conversation.clone(),
        tenant: limits.tenant.clone(),
        latency: Duration::from_millis(latency_ms - jitter_ms),
        jitter: Duration::from_millis(2 * jitter_ms),
        ..SimulatorConfig::default()
    })
    .await;
    let tenant_rate = limits
        .tenant
        .iter()
        .map(|w| f64::from(w.count) / w.per.as_secs_f64())
        .fold(f64::INFINITY, f64::min);
    let (mut ports, counter) = match store {
        Store::Memory => {
            let mut ports = Ports::in_memory(settings.max_receives);
            // The default in-memory store keeps 10,000 notifications; a broadcast's are all
            // created ahead of their sends.
            ports.notifications = Arc::new(
                proactive_bot::adapters::memory::MemoryNotificationStore::with_capacity(
                    recipients * 2 + PROBES,
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
    let queue = CountingQueue::new(ports.queue.clone());
    ports.queue = queue.clone();
    let mut services =
        Services::with_ports(&AuthConfig::default(), &settings, ports).expect("services");
    services.notify_auth = NotifyAuth::ApiKey(Arc::from(KEY));

    eprintln!("{store:?}: registering {recipients} conversations in one tenant…");
    let service_url = simulator.service_url();
    let registry = services.registry.clone();
    let broadcast: Vec<String> = (0..recipients).map(|n| format!("c{n:05}")).collect();
    let probes: Vec<String> = (0..PROBE_CONVERSATIONS)
        .map(|n| format!("other-{n}"))
        .collect();
    let registrations = broadcast
        .iter()
        .map(|c| (c.clone(), TENANT))
        .chain(probes.iter().map(|c| (c.clone(), OTHER_TENANT)));
    futures_util::stream::iter(registrations)
        .for_each_concurrent(32, |(conversation, tenant)| {
            let registry = registry.clone();
            let reference = teams_reference(&service_url, &conversation, tenant);
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
    let floor = Duration::from_secs_f64(recipients as f64 / tenant_rate);

    eprintln!("{store:?}: broadcasting to {recipients} through the Teams simulator…");
    counter.reset();
    queue.reset();
    let started = Instant::now();
    let answer: serde_json::Value = http
        .post(&endpoint)
        .bearer_auth(KEY)
        .json(&serde_json::json!({"all": true, "tenantId": TENANT, "text": "maintenance tonight"}))
        .send()
        .await
        .expect("POST /api/notify")
        .json()
        .await
        .expect("a JSON answer");
    let answered_in = started.elapsed();
    let id = answer["id"].as_str().expect("an id").to_owned();
    assert_eq!(answer["recipients"], recipients, "{answer}");

    // The urgent calls, spread over the first 80% of the drain, from 1 s in.
    let probing = {
        let http = http.clone();
        let endpoint = endpoint.clone();
        let probes = probes.clone();
        let spacing = floor.mul_f64(0.8) / PROBES as u32;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut called = Vec::with_capacity(PROBES);
            for k in 0..PROBES {
                let at = Instant::now();
                let status = http
                    .post(&endpoint)
                    .bearer_auth(KEY)
                    .json(&serde_json::json!({
                        "conversationId": probes[k % PROBE_CONVERSATIONS],
                        "text": format!("urgent {k}"),
                    }))
                    .send()
                    .await
                    .expect("POST /api/notify (urgent)")
                    .status();
                assert!(status.is_success(), "urgent call {k}: {status}");
                called.push(at);
                tokio::time::sleep(spacing).await;
            }
            called
        })
    };

    let broadcast_set: HashSet<&str> = broadcast.iter().map(String::as_str).collect();
    let delivered = |simulator: &TeamsSimulator| broadcast_sends(simulator, &broadcast_set).len();
    let mut fanned_out_in = None;
    let mut last_progress = (0, Instant::now());
    let mut drained_at = None;
    for round in 0.. {
        let accepted = delivered(&simulator);
        // Every 2 s: the polling's own requests (a GetItem and the batch index's pages) stay
        // out of the per-recipient figures.
        if fanned_out_in.is_none() && round % 10 == 0 {
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
        if accepted >= recipients && drained_at.is_none() {
            drained_at = Some(last_accepted(&simulator, &broadcast_set, started));
        }
        if drained_at.is_some() && probing.is_finished() {
            break;
        }
        if accepted != last_progress.0 {
            last_progress = (accepted, Instant::now());
        }
        if last_progress.1.elapsed() > Duration::from_secs(60) {
            eprintln!("stopped waiting: {accepted} accepted, no progress for 60 s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let called = probing.await.expect("the urgent calls");
    // Late duplicates, and the last urgent ones, would arrive now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests = counter.snapshot();
    let received = queue.received();
    bot.stop().await.unwrap();

    let accepted = simulator.accepted();
    let mut per_conversation: HashMap<String, usize> = HashMap::new();
    for request in &accepted {
        let conversation = request.conversation_id.clone().unwrap_or_default();
        if broadcast_set.contains(conversation.as_str()) {
            *per_conversation.entry(conversation).or_default() += 1;
        }
    }
    let duplicates: usize = per_conversation.values().map(|n| n - 1).sum();
    let lost = recipients - per_conversation.len().min(recipients);
    // The urgent ones: each probe conversation's texts must arrive in the order they were sent.
    let mut urgent_latencies = Vec::new();
    let mut out_of_order = 0;
    let mut urgent_lost = 0;
    for conversation in &probes {
        let numbers: Vec<usize> = simulator
            .accepted_texts_for(conversation)
            .iter()
            .filter_map(|t| t.strip_prefix("urgent ")?.parse().ok())
            .collect();
        out_of_order += numbers.windows(2).filter(|w| w[0] > w[1]).count();
    }
    for (k, at) in called.iter().enumerate() {
        let text = format!("urgent {k}");
        match accepted.iter().find(|r| r.text() == text) {
            Some(request) => urgent_latencies.push(request.arrived.saturating_duration_since(*at)),
            None => urgent_lost += 1,
        }
    }
    urgent_latencies.sort();
    let elapsed = drained_at.unwrap_or_else(|| started.elapsed());
    let total = |prefix: &str| -> usize {
        requests
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && *k != "SQS.ReceiveMessage")
            .map(|(_, n)| n)
            .sum()
    };
    let per = |n: usize| n as f64 / recipients as f64;

    println!(
        "broadcast benchmark ({store:?}): one POST /api/notify {{\"all\": true}} to {recipients} conversations of one tenant, Teams simulator answering in {}–{} ms, local runner",
        latency_ms - jitter_ms,
        latency_ms + jitter_ms
    );
    println!(
        "  answered in                {:>8.3} s",
        answered_in.as_secs_f64()
    );
    match fanned_out_in {
        Some(at) => println!(
            "  fanned out in              {:>8.2} s   (polled every 2 s)",
            at.as_secs_f64()
        ),
        None => println!("  fanned out in                   n/a (not seen done)"),
    }
    println!(
        "  delivered in               {:>8.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  floor (N / {tenant_rate} per s)       {:>8.2} s",
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
    println!("  out of order               {out_of_order:>8}");
    println!(
        "  queue receives / notif.    {:>8.3}   (goal <= 1.2; {received} for {} notifications)",
        received as f64 / (recipients + PROBES) as f64,
        recipients + PROBES
    );
    match (
        urgent_latencies.get(urgent_latencies.len() / 2),
        urgent_latencies.last(),
    ) {
        (Some(median), Some(worst)) => println!(
            "  urgent, other tenant       {:>8.3} s median, {:.3} s worst of {} (goal <= 1 s){}",
            median.as_secs_f64(),
            worst.as_secs_f64(),
            urgent_latencies.len(),
            match urgent_lost {
                0 => String::new(),
                n => format!("; {n} never arrived"),
            }
        ),
        _ => println!("  urgent, other tenant            n/a (none arrived)"),
    }
    if store != Store::Memory {
        println!(
            "  DynamoDB requests / recip. {:>8.2}   (goal <= 6)",
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

/// The sends the channel accepted for the broadcast's recipients.
fn broadcast_sends(
    simulator: &TeamsSimulator,
    broadcast: &HashSet<&str>,
) -> Vec<proactive_bot::testing::simulator::SimulatedRequest> {
    simulator
        .accepted()
        .into_iter()
        .filter(|r| {
            r.conversation_id
                .as_deref()
                .is_some_and(|c| broadcast.contains(c))
        })
        .collect()
}

/// When the last broadcast recipient's send reached the channel, from `started`.
fn last_accepted(
    simulator: &TeamsSimulator,
    broadcast: &HashSet<&str>,
    started: Instant,
) -> Duration {
    broadcast_sends(simulator, broadcast)
        .iter()
        .map(|r| r.arrived.saturating_duration_since(started))
        .max()
        .unwrap_or_default()
}
