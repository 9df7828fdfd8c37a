//! Shared helpers for the HTTP function's tests: a bot on port 0 and activities as channels
//! send them.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use messages::local::LocalBot;
use proactive_bot::config::Settings;
use proactive_bot::testing::connector::{ConnectorStandIn, RecordedRequest};
use proactive_bot::wiring::Services;
use serde_json::{Value, json};

pub const WAIT: Duration = Duration::from_secs(10);

/// A bot on 127.0.0.1:0 with the given environment, and its services for inspection.
pub async fn start_bot(env: &[(&str, &str)]) -> (LocalBot, Services) {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let settings = Settings::from_lookup(|name| env.get(name).cloned()).expect("settings");
    let services = Services::build(settings).await.expect("services");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let bot = LocalBot::start(&services, listener).expect("start");
    (bot, services)
}

/// A user's side of one conversation, as the Emulator would speak it.
pub struct Conversation {
    pub id: String,
    pub user: String,
    pub service_url: String,
    pub channel: String,
    counter: std::cell::Cell<u32>,
}

impl Conversation {
    pub fn new(id: &str, user: &str, connector: &ConnectorStandIn) -> Self {
        Conversation {
            id: id.to_owned(),
            user: user.to_owned(),
            service_url: connector.service_url(),
            channel: "emulator".to_owned(),
            counter: std::cell::Cell::new(0),
        }
    }

    pub fn activity(&self, kind: &str) -> Value {
        self.counter.set(self.counter.get() + 1);
        json!({
            "type": kind,
            "id": format!("{}-activity-{}", self.user, self.counter.get()),
            "timestamp": "2026-11-21T10:00:00.1234567Z",
            "serviceUrl": self.service_url,
            "channelId": self.channel,
            "from": {"id": self.user, "name": format!("User {}", self.user), "role": "user"},
            "recipient": {"id": "bot-id", "name": "Job Bot", "role": "bot"},
            "conversation": {"id": self.id},
            "locale": "en-US",
            "entities": [{"type": "ClientCapabilities", "requiresBotState": true}],
        })
    }

    pub fn message(&self, text: &str) -> Value {
        let mut activity = self.activity("message");
        activity["text"] = json!(text);
        activity
    }

    /// The path a reply to `activity` is posted to (ids percent-encoded).
    pub fn reply_path(&self, activity: &Value) -> String {
        format!(
            "/amer/v3/conversations/{}/activities/{}",
            encode(&self.id),
            encode(activity["id"].as_str().unwrap())
        )
    }

    /// The path a proactive message into this conversation is posted to.
    pub fn proactive_path(&self) -> String {
        format!("/amer/v3/conversations/{}/activities", encode(&self.id))
    }
}

pub fn encode(id: &str) -> String {
    proactive_bot::connector::encode_segment(id)
}

/// POSTs `body` to the bot and returns the status and body.
pub async fn post(bot: &LocalBot, body: &Value) -> (u16, String) {
    post_raw(bot, body.to_string().into_bytes(), None).await
}

pub async fn post_raw(bot: &LocalBot, body: Vec<u8>, authorization: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(bot.endpoint())
        .header("content-type", "application/json")
        .body(body);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("bot reachable");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Sends `text` in `conversation` and returns the bot's single reply to it.
pub async fn say(
    bot: &LocalBot,
    connector: &ConnectorStandIn,
    conversation: &Conversation,
    text: &str,
) -> RecordedRequest {
    say_activity(bot, connector, conversation, &conversation.message(text)).await
}

/// Sends `activity` (a message of `conversation`) and returns the bot's single reply to it.
pub async fn say_activity(
    bot: &LocalBot,
    connector: &ConnectorStandIn,
    conversation: &Conversation,
    activity: &Value,
) -> RecordedRequest {
    let before = connector.requests().len();
    let text = activity["text"].as_str().unwrap_or_default();
    let (status, body) = post(bot, activity).await;
    assert_eq!(status, 200, "bot answered {status}: {body}");
    assert_eq!(body, "", "the HTTP answer carries no reply body");
    // Waits for the reply itself: a proactive message may arrive before it.
    let path = conversation.reply_path(activity);
    let deadline = tokio::time::Instant::now() + WAIT;
    let reply = loop {
        let requests = connector.requests();
        if let Some(reply) = requests.iter().skip(before).find(|r| r.path == path) {
            break reply.clone();
        }
        if tokio::time::Instant::now() > deadline {
            panic!("no reply to {text:?} at {path} within {WAIT:?}: {requests:#?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(reply.body["replyToId"], activity["id"]);
    assert_eq!(reply.body["from"]["id"], "bot-id");
    assert_eq!(reply.body["recipient"]["id"], json!(conversation.user));
    reply
}

/// The job number in a `run` reply.
pub fn job_number(reply: &RecordedRequest) -> u32 {
    let text = reply.text();
    text.strip_prefix("Job ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no job number in {text:?}"))
}

/// The proactive messages `conversation` received so far: POSTs to the conversation, not
/// replies, not updates.
pub fn proactive(
    connector: &ConnectorStandIn,
    conversation: &Conversation,
) -> Vec<RecordedRequest> {
    connector
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == conversation.proactive_path())
        .collect()
}

/// The in-place updates (`PUT …/activities/{id}`) sent into `conversation` so far.
pub fn updates(connector: &ConnectorStandIn, conversation: &Conversation) -> Vec<RecordedRequest> {
    let prefix = format!("{}/", conversation.proactive_path());
    connector
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.starts_with(&prefix))
        .collect()
}

/// How long a proactive message may take with the defaults: the digest window and the quiet
/// period come to about 6 s; the rest is room for a loaded machine.
pub const PROACTIVE_WAIT: Duration = Duration::from_secs(20);

/// Waits until `conversation` has received `count` proactive messages (panics after
/// [`PROACTIVE_WAIT`]), then a moment more for any that should not come.
pub async fn wait_for_proactive(
    connector: &ConnectorStandIn,
    conversation: &Conversation,
    count: usize,
) -> Vec<RecordedRequest> {
    let deadline = tokio::time::Instant::now() + PROACTIVE_WAIT;
    loop {
        let sent = proactive(connector, conversation);
        if sent.len() >= count {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return proactive(connector, conversation);
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "expected {count} proactive messages in {} within {PROACTIVE_WAIT:?}: {:#?}",
                conversation.id,
                connector.requests()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `conversation`'s registration, which must exist.
pub async fn registration(
    services: &Services,
    conversation: &Conversation,
) -> proactive_bot::registry::Registration {
    services
        .registry
        .get(&conversation.id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{} is not registered", conversation.id))
}
