//! The delivery engine at load, as deployed but on this machine: the local runner in AWS mode
//! (DynamoDB and SQS on moto's server, the FIFO queue consumed by five pollers as Lambda's
//! event source mapping would) — and, for comparison, on its in-memory state — delivering 1,000 notifications into a Teams simulator that
//! enforces Teams' limits exactly — 970 spread over 100 conversations of one tenant, and a
//! burst of 30 into one more conversation of that tenant.
//!
//! `cargo bench -p messages --bench delivery` runs four cases: state in memory (the engine
//! alone) and on moto, each with the producers paced at the tenant's rate and with all 1,000
//! queued at once; `DELIVERY_BENCH=moto-paced,memory-backlog` picks some. Prints: 429s received, the time to deliver all
//! divided by the floor the limits allow, lost, duplicates, out of order, and AWS requests per
//! notification. The figures are printed, not asserted.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use messages::local::LocalBot;
use proactive_bot::auth::AuthConfig;
use proactive_bot::config::{Backend, Settings};
use proactive_bot::delivery::limits::{ChannelLimits, SendLog, Window};
use proactive_bot::delivery::{Content, Notification, NotificationId, Source};
use proactive_bot::registry::RegistryRetention;
use proactive_bot::testing::moto::{self, MotoServer, RequestCounter};
use proactive_bot::testing::simulator::{SimulatorConfig, TeamsSimulator};
use proactive_bot::wiring::{Ports, Services};

const SPREAD: usize = 970;
const CONVERSATIONS: usize = 100;
const BURST: usize = 30;
const TENANT: &str = "tenant-bench";

/// The second moto server, for SQS.
fn sqs_moto() -> &'static MotoServer {
    static SQS: std::sync::OnceLock<MotoServer> = std::sync::OnceLock::new();
    SQS.get_or_init(MotoServer::start)
}

/// The shortest time `n` sends into one conversation can take under `windows` (greedy, exact).
fn conversation_floor(windows: &[Window], n: usize) -> Duration {
    let mut log = SendLog::default();
    let mut last = 0;
    for _ in 0..n {
        last = log.next_allowed(windows, 0, Duration::ZERO);
        log.sends = log.with_send(last);
    }
    Duration::from_millis(last as u64)
}

/// How the producers hand the notifications over.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Production {
    /// The burst at once, the rest at the tenant's rate (a busy system in steady state).
    Paced,
    /// All 1,000 at once (a backlog to drain).
    Backlog,
}

/// Where the state lives.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Store {
    /// The local runner's default: in process memory (the engine alone).
    Memory,
    /// DynamoDB and SQS on moto's server (the deployed shape).
    Moto,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Logs only when asked for (RUST_LOG=info,…), to look into a run.
    if std::env::var_os("RUST_LOG").is_some() {
        proactive_bot::telemetry::init(false);
    }
    let only = std::env::var("DELIVERY_BENCH").unwrap_or_default();
    for (store, production) in [
        (Store::Memory, Production::Paced),
        (Store::Memory, Production::Backlog),
        (Store::Moto, Production::Paced),
        (Store::Moto, Production::Backlog),
    ] {
        let name = format!("{store:?}-{production:?}").to_lowercase();
        if only.is_empty() || only.split(',').any(|o| o == name) {
            run(store, production).await;
        }
    }
}

async fn run(store: Store, production: Production) {
    let simulator = TeamsSimulator::start(SimulatorConfig::default()).await;
    // The environment's settings (RATE_LIMITS, RATE_LIMIT_MAX_WAIT_MS, …) apply, for tuning.
    let settings = Settings::from_env().expect("settings");
    let (ports, counter) = match store {
        Store::Memory => (
            Ports::in_memory(settings.max_receives),
            RequestCounter::default(),
        ),
        Store::Moto => {
            // DynamoDB and SQS each on a moto server of its own: one moto process serves one
            // request at a time (Python's GIL), and AWS runs them as separate services too.
            let dynamodb = MotoServer::shared();
            let sqs = sqs_moto();
            let tables = dynamodb
                .create_resources(&format!("bench-{production:?}"))
                .await;
            let queues = sqs.create_resources(&format!("bench-{production:?}")).await;
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
                RegistryRetention::default(),
            )
            .expect("AWS ports");
            (ports, counter)
        }
    };
    let services =
        Services::with_ports(&AuthConfig::default(), &settings, ports).expect("services");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bot = LocalBot::start(&services, listener).expect("the local runner");

    // The plan: (conversation, sequence number), interleaved as they would arrive.
    let mut plan: Vec<(String, usize)> = Vec::new();
    let per_conversation: Vec<usize> = (0..CONVERSATIONS)
        .map(|c| SPREAD / CONVERSATIONS + usize::from(c < SPREAD % CONVERSATIONS))
        .collect();
    let most = per_conversation
        .iter()
        .max()
        .copied()
        .unwrap_or(0)
        .max(BURST);
    for round in 0..most {
        if round < BURST {
            plan.push(("burst".to_owned(), round));
        }
        for (c, count) in per_conversation.iter().enumerate() {
            if round < *count {
                plan.push((format!("c{c:03}"), round));
            }
        }
    }
    assert_eq!(plan.len(), SPREAD + BURST);

    let reference = |conversation: &str| {
        proactive_bot::testing::teams_reference(&simulator.service_url(), conversation, TENANT)
    };

    eprintln!(
        "{store:?}, {production:?}: delivering {} notifications ({SPREAD} over {CONVERSATIONS} conversations, {BURST} into one) through the Teams simulator…",
        plan.len()
    );
    // Every conversation has talked to the bot (the engine messages no other), before the
    // clock starts.
    let mut conversations: Vec<&str> = plan.iter().map(|(c, _)| c.as_str()).collect();
    conversations.sort_unstable();
    conversations.dedup();
    for conversation in conversations {
        services
            .registry
            .seen(&reference(conversation), Utc::now())
            .await
            .expect("registered");
    }
    counter.reset();
    let notifier = services.notifier.clone();
    let started = Instant::now();
    let produce = |(conversation, seq): (String, usize)| {
        let notifier = notifier.clone();
        let reference = reference(&conversation);
        async move {
            let notification = Notification::new(
                NotificationId::parse(&format!("bench-{conversation}-{seq}")).unwrap(),
                Source::Api {
                    request: "bench".into(),
                },
                reference,
                Content::text(format!("{conversation} #{seq}")),
                Utc::now(),
            );
            notifier.notify(notification).await.expect("queued");
        }
    };
    // Each conversation's notifications are queued one after the other (their order is the
    // order to keep); conversations concurrently.
    let mut by_conversation: Vec<(String, Vec<(String, usize)>)> = Vec::new();
    for item in &plan {
        match by_conversation.iter_mut().find(|(c, _)| *c == item.0) {
            Some((_, items)) => items.push(item.clone()),
            None => by_conversation.push((item.0.clone(), vec![item.clone()])),
        }
    }
    match production {
        Production::Backlog => {
            futures_util::stream::iter(by_conversation)
                .for_each_concurrent(16, |(_, items)| async {
                    for item in items {
                        produce(item).await;
                    }
                })
                .await;
        }
        Production::Paced => {
            let (burst, rest): (Vec<_>, Vec<_>) =
                plan.iter().cloned().partition(|(c, _)| c == "burst");
            for item in burst {
                produce(item).await;
            }
            // The rest at 50 per second, in ticks of 100 ms (five conversations a tick, each
            // in its rounds' order).
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            for chunk in rest.chunks(5) {
                ticks.tick().await;
                futures_util::future::join_all(chunk.iter().cloned().map(produce)).await;
            }
        }
    }
    let queued_in = started.elapsed();

    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last_progress = (0, Instant::now());
    let elapsed = loop {
        let accepted = simulator.accepted().len();
        if accepted >= plan.len() {
            break started.elapsed();
        }
        if accepted != last_progress.0 {
            last_progress = (accepted, Instant::now());
        }
        if Instant::now() > deadline || last_progress.1.elapsed() > Duration::from_secs(60) {
            eprintln!("stopped waiting: {accepted} accepted");
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Late duplicates, if any, would arrive now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests_total = counter.snapshot();
    bot.stop().await.unwrap();

    let accepted = simulator.accepted();
    let mut seen: HashSet<String> = HashSet::new();
    let mut duplicates = 0;
    let mut delivered_order: HashMap<String, Vec<usize>> = HashMap::new();
    for request in &accepted {
        let text = request.text().to_owned();
        if !seen.insert(text.clone()) {
            duplicates += 1;
            continue;
        }
        if let Some((conversation, seq)) = text.split_once(" #") {
            delivered_order
                .entry(conversation.to_owned())
                .or_default()
                .push(seq.parse().unwrap_or(usize::MAX));
        }
    }
    let lost = plan.len() - seen.len().min(plan.len());
    let out_of_order: usize = delivered_order
        .values()
        .map(|seqs| seqs.windows(2).filter(|w| w[1] < w[0]).count())
        .sum();
    for (conversation, seqs) in &delivered_order {
        if seqs.windows(2).any(|w| w[1] < w[0]) {
            eprintln!("out of order in {conversation}: {seqs:?}");
        }
    }

    let teams = ChannelLimits::teams();
    let tenant_floor = teams
        .tenant
        .iter()
        .map(|w| w.per.mul_f64((plan.len() as f64) / f64::from(w.count)))
        .max()
        .unwrap_or_default();
    let floor = tenant_floor
        .max(conversation_floor(&teams.conversation, BURST))
        .max(conversation_floor(
            &teams.conversation,
            per_conversation.iter().copied().max().unwrap_or(0),
        ));
    let dynamodb: usize = requests_total
        .iter()
        .filter(|(k, _)| k.starts_with("DynamoDB."))
        .map(|(_, n)| n)
        .sum();
    let sqs_without_polls: usize = requests_total
        .iter()
        .filter(|(k, _)| k.starts_with("SQS.") && *k != "SQS.ReceiveMessage")
        .map(|(_, n)| n)
        .sum();
    let per = |n: usize| n as f64 / plan.len() as f64;

    println!(
        "delivery benchmark ({store:?}, {production:?}): {} notifications through the Teams simulator, local runner",
        plan.len()
    );
    println!(
        "  queued in                  {:>8.2} s",
        queued_in.as_secs_f64()
    );
    println!(
        "  delivered in               {:>8.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  floor the limits allow     {:>8.2} s (50 / s per tenant; the burst alone {:.2} s)",
        floor.as_secs_f64(),
        conversation_floor(&teams.conversation, BURST).as_secs_f64()
    );
    println!(
        "  time / floor               {:>8.2}   (goal <= 1.2)",
        elapsed.as_secs_f64() / floor.as_secs_f64()
    );
    println!(
        "  429s received              {:>8}   (goal 0)",
        simulator.throttled_count()
    );
    println!("  lost                       {lost:>8}");
    println!("  duplicates                 {duplicates:>8}");
    println!("  out of order               {out_of_order:>8}");
    println!("  DynamoDB requests / notif. {:>8.2}", per(dynamodb));
    println!(
        "  SQS requests / notif.      {:>8.2}   (+ the pollers' ReceiveMessage: {:.2})",
        per(sqs_without_polls),
        per(requests_total
            .get("SQS.ReceiveMessage")
            .copied()
            .unwrap_or(0))
    );
    println!("  requests by operation      {requests_total:?}");
}
