//! Measures the local runner as a user meets it: the time from starting the built binary to
//! the first answered request, and the process's peak memory after 1,000 turns.
//!
//! `cargo bench -p messages --bench local_runner` (release build). The bot's replies go to an
//! in-process Connector stand-in; the figures are printed, not asserted.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proactive_bot::testing::connector::ConnectorStandIn;
use proactive_bot::testing::process::status_kib;
use serde_json::json;

const TURNS: usize = 1000;

fn activity(service_url: &str, conversation: &str, n: usize, text: &str) -> serde_json::Value {
    json!({
        "type": "message", "id": format!("m-{n}"), "text": text,
        "timestamp": "2026-11-21T10:00:00.1234567Z",
        "serviceUrl": service_url, "channelId": "emulator",
        "from": {"id": "user", "name": "User"}, "recipient": {"id": "bot", "name": "Bot"},
        "conversation": {"id": conversation}
    })
}

#[tokio::main]
async fn main() {
    let connector = ConnectorStandIn::start().await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}/api/messages");
    let client = reqwest::Client::new();
    let first = activity(&connector.service_url(), "bench|livechat", 0, "help");

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_messages"))
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .env_remove("JOBS_TABLE_NAME")
        .env_remove("COMPLETIONS_QUEUE_URL")
        .env_remove("MicrosoftAppId")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the bot binary");
    let pid = child.id();
    let startup = loop {
        if let Ok(response) = client.post(&endpoint).json(&first).send().await
            && response.status().is_success()
        {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the bot did not answer within 20 s");
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    };
    let rss_idle = status_kib(pid, "VmRSS:");

    let mut numbers = Vec::new();
    let turns_started = Instant::now();
    for n in 1..=TURNS {
        let conversation = format!("conv-{}", n % 20);
        let text = match n % 4 {
            0 => "show".to_owned(),
            1 => "run".to_owned(),
            2 => numbers
                .pop()
                .map(|j: String| format!("done {j}"))
                .unwrap_or_else(|| "done".into()),
            _ => "hello".to_owned(),
        };
        let before = connector.requests().len();
        let response = client
            .post(&endpoint)
            .json(&activity(&connector.service_url(), &conversation, n, &text))
            .send()
            .await
            .expect("bot reachable");
        assert!(
            response.status().is_success(),
            "turn {n} answered {}",
            response.status()
        );
        if text == "run" {
            let reply = connector.wait_for(before + 1, Duration::from_secs(5)).await;
            if let Some(j) = reply.iter().rev().find_map(|r| {
                r.text()
                    .strip_prefix("Job ")
                    .and_then(|t| t.split_whitespace().next())
                    .map(str::to_owned)
            }) {
                numbers.push(j);
            }
        }
        if n % 100 == 0 {
            connector.clear();
        }
    }
    let turns_elapsed = turns_started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak = status_kib(pid, "VmHWM:");
    let rss = status_kib(pid, "VmRSS:");
    let _ = child.kill();
    let _ = child.wait();

    println!(
        "startup: {:.1} ms from spawn to the first answered request",
        startup.as_secs_f64() * 1000.0
    );
    println!(
        "turns: {TURNS} in {:.2} s ({:.2} ms per turn, sequential, including the reply to the Connector stand-in)",
        turns_elapsed.as_secs_f64(),
        turns_elapsed.as_secs_f64() * 1000.0 / TURNS as f64
    );
    println!(
        "memory: RSS {} KiB after the first request, {} KiB after {TURNS} turns, peak (VmHWM) {} KiB",
        rss_idle.unwrap_or(0),
        rss.unwrap_or(0),
        peak.unwrap_or(0)
    );
}
