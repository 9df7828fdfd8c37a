//! The notify API as a user of `cargo run` meets it: the local runner on port 0 with
//! `NOTIFY_API_KEY` set, conversations that talked to the bot (and one that uninstalled it),
//! one `POST /api/notify`, and the Connector stand-in counting what each conversation got. In
//! memory, and once on DynamoDB and SQS (moto), where the broadcast pages through the
//! registry's index.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use messages::local::LocalBot;
use proactive_bot::auth::AuthConfig;
use proactive_bot::config::Settings;
use proactive_bot::notify::api::NotifyAuth;
use proactive_bot::testing::connector::ConnectorStandIn;
use proactive_bot::testing::moto::MotoServer;
use proactive_bot::wiring::{Ports, Services};
use serde_json::{Value, json};
use support::*;

const KEY: &str = "local-notify-key";

fn notify_url(bot: &LocalBot) -> String {
    bot.endpoint().replace("/api/messages", "/api/notify")
}

async fn notify(bot: &LocalBot, body: Value, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(notify_url(bot)).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("bot reachable");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn status(bot: &LocalBot, id: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}/{id}", notify_url(bot)))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("bot reachable")
        .json()
        .await
        .expect("a JSON status")
}

/// Waits until the request has nothing pending, then returns its status.
async fn settled(bot: &LocalBot, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = status(bot, id).await;
        if status["pending"] == 0 && status["fanOut"] == "done" {
            return status;
        }
        assert!(Instant::now() < deadline, "never settled: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Proactive messages (not replies) per conversation path.
fn proactive_by_conversation(connector: &ConnectorStandIn) -> HashMap<String, Vec<String>> {
    let mut by = HashMap::new();
    for request in connector.requests() {
        if request.body.get("replyToId").is_none() {
            by.entry(request.path.clone())
                .or_insert_with(Vec::new)
                .push(request.text().to_owned());
        }
    }
    by
}

fn uninstall(conversation: &Conversation) -> Value {
    let mut activity = conversation.activity("installationUpdate");
    activity["action"] = json!("remove");
    activity
}

/// Three conversations talk to the bot and a fourth uninstalls it; a broadcast then reaches
/// each of the three exactly once and not the fourth.
async fn broadcast_reaches_those_who_talked(bot: &LocalBot, connector: &ConnectorStandIn) {
    let talked: Vec<Conversation> = ["a|livechat", "b|livechat", "c|livechat"]
        .iter()
        .enumerate()
        .map(|(n, id)| Conversation::new(id, &format!("user-{n}"), connector))
        .collect();
    let gone = Conversation::new("gone|livechat", "user-gone", connector);
    for conversation in talked.iter().chain([&gone]) {
        say(bot, connector, conversation, "hello").await;
    }
    let (code, body) = post(bot, &uninstall(&gone)).await;
    assert_eq!(code, 200, "{body}");

    let (code, answer) = notify(
        bot,
        json!({"all": true, "text": "Maintenance at 22:00"}),
        Some(KEY),
    )
    .await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["recipients"], 3, "{answer}");
    let status = settled(bot, answer["id"].as_str().unwrap()).await;
    assert_eq!(
        (status["sent"].as_u64(), status["failed"].as_u64()),
        (Some(3), Some(0)),
        "{status}"
    );
    // Late duplicates would arrive now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = proactive_by_conversation(connector);
    for conversation in &talked {
        assert_eq!(
            received.get(&conversation.proactive_path()),
            Some(&vec!["Maintenance at 22:00".to_owned()]),
            "{}: {received:?}",
            conversation.id
        );
    }
    assert!(
        !received.contains_key(&gone.proactive_path()),
        "nothing to the uninstalled conversation: {received:?}"
    );
    assert_eq!(received.len(), 3);
}

#[tokio::test]
async fn with_notify_api_key_a_broadcast_reaches_each_conversation_that_talked_once() {
    let connector = ConnectorStandIn::start().await;
    let (bot, _services) = start_bot(&[("NOTIFY_API_KEY", KEY)]).await;
    broadcast_reaches_those_who_talked(&bot, &connector).await;

    // Named: one registered, one stranger; and the key is required.
    let a = Conversation::new("a|livechat", "user-0", &connector);
    let (code, _) = notify(&bot, json!({"conversationId": a.id, "text": "x"}), None).await;
    assert_eq!(code, 401);
    let (code, _) = notify(
        &bot,
        json!({"conversationId": a.id, "text": "x"}),
        Some("wrong"),
    )
    .await;
    assert_eq!(code, 401);
    let (code, answer) = notify(
        &bot,
        json!({"conversationIds": [a.id, "never-talked|livechat"], "text": "Build 7 passed"}),
        Some(KEY),
    )
    .await;
    assert_eq!(code, 202, "{answer}");
    let status = settled(&bot, answer["id"].as_str().unwrap()).await;
    assert_eq!(status["sent"], 1, "{status}");
    assert_eq!(status["failed"], 1, "{status}");
    assert_eq!(
        status["failures"],
        json!([{"conversationId": "never-talked|livechat", "reason": "not registered"}])
    );
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn without_notify_api_key_every_notify_call_is_refused() {
    let connector = ConnectorStandIn::start().await;
    let (bot, _services) = start_bot(&[]).await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    say(&bot, &connector, &a, "hello").await;
    for key in [None, Some(KEY), Some("")] {
        let (code, answer) = notify(&bot, json!({"all": true, "text": "x"}), key).await;
        assert_eq!(code, 401, "{key:?}: {answer}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(proactive_by_conversation(&connector).is_empty());
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn on_dynamodb_and_sqs_a_broadcast_pages_through_the_registry_index() {
    let connector = ConnectorStandIn::start().await;
    let moto = MotoServer::shared();
    let resources = moto.create_resources("notify-e2e").await;
    let (config, counter) = moto.sdk_config().await;
    let ports: Ports = resources.ports(&config, &counter);
    let settings = Settings::from_lookup(|_| None).unwrap();
    let mut services = Services::with_ports(&AuthConfig::default(), &settings, ports).unwrap();
    services.notify_auth = NotifyAuth::ApiKey(Arc::from(KEY));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bot = LocalBot::start(&services, listener).unwrap();
    broadcast_reaches_those_who_talked(&bot, &connector).await;
    assert!(
        counter.count("DynamoDB", "Query") >= 2,
        "the broadcast counted and paged through the index: {:?}",
        counter.snapshot()
    );
    assert_eq!(counter.count("DynamoDB", "Scan"), 0, "never a scan");
    bot.stop().await.unwrap();
}
