//! The conversation registry end to end: the local runner on port 0, activities posted as a
//! channel sends them, a Connector stand-in as the channel, jobs completed by `done` or the
//! job system's event, and the delivery engine consuming the queue. In memory, and once on
//! DynamoDB and SQS (moto).
//!
//! The lifecycle: a conversation is registered by any activity; uninstalling the bot, removing
//! it, or a 403/404 from the Connector retires it, and then nothing is sent to it; its next
//! activity makes it active again; its latest serviceUrl is the one used.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use messages::local::LocalBot;
use proactive_bot::adapters::memory_registry::MemoryConversationRegistry;
use proactive_bot::auth::AuthConfig;
use proactive_bot::bot::HELP_TEXT;
use proactive_bot::config::Settings;
use proactive_bot::delivery::engine::NOT_REGISTERED;
use proactive_bot::delivery::{DeliveryState, Notification};
use proactive_bot::jobs::JobNumber;
use proactive_bot::registry::{
    ActivePage, ConversationRegistry, Registration, RegistryError, Status,
};
use proactive_bot::schema::ConversationReference;
use proactive_bot::testing::connector::{ConnectorStandIn, ScriptedResponse};
use proactive_bot::testing::moto::{MotoServer, RequestCounter};
use proactive_bot::wiring::{Ports, Services};
use serde_json::{Value, json};
use support::*;

/// The job system's own conversation, which completes jobs with an event (no reply).
const JOB_SYSTEM: &str = "job-system|livechat";

/// Counts the registry's writes.
#[derive(Default)]
struct Counting {
    inner: MemoryConversationRegistry,
    seen: AtomicUsize,
    retired: AtomicUsize,
}

impl Counting {
    fn writes(&self) -> usize {
        self.seen.load(Ordering::SeqCst) + self.retired.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ConversationRegistry for Counting {
    async fn seen(
        &self,
        reference: &ConversationReference,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, RegistryError> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        self.inner.seen(reference, now).await
    }

    async fn hold(&self, conversation_id: &str, notification: &str) -> Result<bool, RegistryError> {
        self.inner.hold(conversation_id, notification).await
    }

    async fn release(
        &self,
        conversation_id: &str,
        notifications: &[String],
    ) -> Result<(), RegistryError> {
        self.inner.release(conversation_id, notifications).await
    }

    async fn retire(
        &self,
        conversation_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, RegistryError> {
        self.retired.fetch_add(1, Ordering::SeqCst);
        self.inner.retire(conversation_id, reason, now).await
    }

    async fn get(&self, conversation_id: &str) -> Result<Option<Registration>, RegistryError> {
        self.inner.get(conversation_id).await
    }

    async fn get_many(&self, ids: &[String]) -> Result<Vec<Registration>, RegistryError> {
        self.inner.get_many(ids).await
    }

    async fn list_active(
        &self,
        tenant: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ActivePage, RegistryError> {
        self.inner.list_active(tenant, after, limit).await
    }
}

/// The local runner over `ports`, with default settings (no authentication).
async fn start_with(ports: Ports) -> (LocalBot, Services) {
    start_with_env(ports, &[]).await
}

/// The local runner over `ports`, with `env` as its environment.
async fn start_with_env(ports: Ports, env: &[(&str, &str)]) -> (LocalBot, Services) {
    let settings = Settings::from_lookup(|name| {
        env.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    })
    .unwrap();
    let services = Services::with_ports(&AuthConfig::default(), &settings, ports).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bot = LocalBot::start(&services, listener).unwrap();
    (bot, services)
}

/// Posts an activity the bot must not answer: 200, and no Connector request follows.
async fn post_unanswered(bot: &LocalBot, connector: &ConnectorStandIn, activity: &Value) {
    let before = connector.requests().len();
    let (status, body) = post(bot, activity).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = connector.requests();
    assert_eq!(
        requests.len(),
        before,
        "no answer expected: {:#?}",
        &requests[before..]
    );
}

fn uninstall(conversation: &Conversation) -> Value {
    let mut activity = conversation.activity("installationUpdate");
    activity["action"] = json!("remove");
    activity
}

fn install(conversation: &Conversation) -> Value {
    let mut activity = conversation.activity("installationUpdate");
    activity["action"] = json!("add");
    activity
}

fn bot_removed(conversation: &Conversation) -> Value {
    let mut activity = conversation.activity("conversationUpdate");
    activity["membersRemoved"] = json!([{"id": "bot-id", "name": "Job Bot"}]);
    activity
}

fn user_added(conversation: &Conversation) -> Value {
    let mut activity = conversation.activity("conversationUpdate");
    activity["membersAdded"] = json!([{"id": conversation.user}]);
    activity
}

/// The job system says job `number` is complete (an event: no reply).
async fn complete_by_event(bot: &LocalBot, job_system: &Conversation, number: u32) {
    let mut event = job_system.activity("event");
    event["name"] = json!("jobComplete");
    event["value"] = json!(number);
    let (status, body) = post(bot, &event).await;
    assert_eq!(status, 200, "{body}");
}

/// The completion notification of job `number`, once it has left Queued/Sending.
async fn settled_completion(services: &Services, number: u32) -> Notification {
    // With the defaults a completion waits out the digest window and, right after the user
    // talked, the quiet period (about 6 s in all); on moto under a loaded machine, more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let job = services
            .jobs
            .get(JobNumber::new(number).unwrap())
            .await
            .unwrap()
            .expect("the job exists");
        if let Some(id) = job.status.notification()
            && let Some(notification) = services.notifications.get(id).await.unwrap()
            && notification.state.is_final()
        {
            return notification;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {number}'s notification never settled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn assert_sent(services: &Services, number: u32) {
    let notification = settled_completion(services, number).await;
    assert!(
        matches!(notification.state, DeliveryState::Sent { .. }),
        "{notification:?}"
    );
}

fn failed_reason(notification: &Notification) -> &str {
    match &notification.state {
        DeliveryState::Failed { reason, .. } => reason,
        other => panic!("{} is {other:?}, not failed", notification.id),
    }
}

fn retired_reason(registration: &Registration) -> &str {
    match &registration.status {
        Status::Retired { reason, .. } => reason,
        Status::Active => panic!("{} is still active", registration.conversation_id()),
    }
}

fn posts_to(connector: &ConnectorStandIn, conversation: &Conversation) -> usize {
    connector
        .requests()
        .iter()
        .filter(|r| r.path == conversation.proactive_path())
        .count()
}

#[tokio::test]
async fn a_message_registers_its_conversation_with_its_reference() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[]).await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    assert!(services.registry.get(&a.id).await.unwrap().is_none());

    let reply = say(&bot, &connector, &a, "hello").await;
    assert_eq!(reply.text(), HELP_TEXT, "the turn goes on as before");
    let registered = registration(&services, &a).await;
    assert_eq!(registered.status, Status::Active);
    assert_eq!(registered.reference.service_url, connector.service_url());
    assert_eq!(registered.channel_id(), "emulator");
    assert_eq!(registered.user_id(), "user-a");
    assert_eq!(registered.reference.bot.id, "bot-id");
    assert_eq!(registered.first_seen, registered.last_seen);
    let listed = services.registry.list_active(None, None, 10).await.unwrap();
    assert_eq!(listed.conversations, vec![registered]);
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn uninstalling_retires_the_conversation_unanswered_and_its_job_is_not_announced() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[]).await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let b = Conversation::new("b|livechat", "user-b", &connector);
    let number = job_number(&say(&bot, &connector, &a, "run").await);

    post_unanswered(&bot, &connector, &uninstall(&a)).await;
    assert_eq!(
        retired_reason(&registration(&services, &a).await),
        "uninstalled"
    );

    let completing = say(&bot, &connector, &b, &format!("done {number}")).await;
    assert_eq!(completing.text(), format!("Completing job {number}."));
    let notification = settled_completion(&services, number).await;
    assert_eq!(failed_reason(&notification), NOT_REGISTERED);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(posts_to(&connector, &a), 0, "nothing POSTed to A");
    let table = say(&bot, &connector, &b, "show").await;
    assert!(
        table
            .text()
            .contains("complete, notification failed: not registered"),
        "{}",
        table.text()
    );

    // Installed again: active at once, and notified again.
    post_unanswered(&bot, &connector, &install(&a)).await;
    assert!(registration(&services, &a).await.status.is_active());
    let again = job_number(&say(&bot, &connector, &a, "run").await);
    say(&bot, &connector, &b, &format!("done {again}")).await;
    assert_sent(&services, again).await;
    assert_eq!(posts_to(&connector, &a), 1);
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn removing_the_bot_retires_the_conversation_unanswered_and_its_job_is_not_announced() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[]).await;
    let a = Conversation::new("19:team@thread.skype", "user-a", &connector);
    let job_system = Conversation::new(JOB_SYSTEM, "jobs", &connector);
    let number = job_number(&say(&bot, &connector, &a, "run").await);

    post_unanswered(&bot, &connector, &bot_removed(&a)).await;
    assert_eq!(
        retired_reason(&registration(&services, &a).await),
        "bot removed"
    );
    // Even an update that also adds someone: the bot is gone, nobody is welcomed.
    let c = Conversation::new("c|livechat", "user-c", &connector);
    let mut both = bot_removed(&c);
    both["membersAdded"] = json!([{"id": "user-c"}]);
    post_unanswered(&bot, &connector, &both).await;

    complete_by_event(&bot, &job_system, number).await;
    let notification = settled_completion(&services, number).await;
    assert_eq!(failed_reason(&notification), NOT_REGISTERED);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        connector.requests().len() == 1,
        "only the `run` reply, nothing after: {:#?}",
        connector.requests()
    );

    // Someone talks in it again (the bot was added back): active, and answered.
    let reply = say(&bot, &connector, &a, "hello").await;
    assert_eq!(reply.text(), HELP_TEXT);
    assert!(registration(&services, &a).await.status.is_active());
    bot.stop().await.unwrap();
}

/// The Connector answers a proactive send with `status` `code`: the conversation is retired
/// with that reason, a later completion for it is not sent, and its next message revives it.
async fn a_gone_answer_retires_until_the_next_message(status: u16, code: &str) {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[]).await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let job_system = Conversation::new(JOB_SYSTEM, "jobs", &connector);
    let first = job_number(&say(&bot, &connector, &a, "run").await);
    let second = job_number(&say(&bot, &connector, &a, "run").await);

    // The event has no reply: the next Connector requests are the update of the "running"
    // reply in place, refused (quietly: an update's refusal retires nothing), then the
    // proactive send, refused the same way.
    for _ in 0..2 {
        connector.script(ScriptedResponse::status(
            status,
            Some(&format!(
                r#"{{"error":{{"code":"{code}","message":"gone"}}}}"#
            )),
        ));
    }
    complete_by_event(&bot, &job_system, first).await;
    let notification = settled_completion(&services, first).await;
    assert!(
        failed_reason(&notification).contains(code),
        "{notification:?}"
    );
    let reason = retired_reason(&registration(&services, &a).await).to_owned();
    assert!(reason.contains(code), "{reason}");
    assert!(reason.contains(&status.to_string()), "{reason}");
    assert_eq!(posts_to(&connector, &a), 1, "the one refused send");

    complete_by_event(&bot, &job_system, second).await;
    let notification = settled_completion(&services, second).await;
    assert_eq!(failed_reason(&notification), NOT_REGISTERED);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        posts_to(&connector, &a),
        1,
        "no second send to a gone conversation"
    );

    // The user talks again: active at once, and the next completion reaches them.
    let reply = say(&bot, &connector, &a, "hello").await;
    assert_eq!(reply.text(), HELP_TEXT);
    assert!(registration(&services, &a).await.status.is_active());
    let third = job_number(&say(&bot, &connector, &a, "run").await);
    complete_by_event(&bot, &job_system, third).await;
    assert_sent(&services, third).await;
    assert_eq!(posts_to(&connector, &a), 2);
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn a_403_bot_not_in_roster_retires_the_conversation_until_it_talks_again() {
    a_gone_answer_retires_until_the_next_message(403, "BotNotInConversationRoster").await;
}

#[tokio::test]
async fn a_404_conversation_not_found_retires_the_conversation_until_it_talks_again() {
    a_gone_answer_retires_until_the_next_message(404, "ConversationNotFound").await;
}

#[tokio::test]
async fn a_completion_goes_to_the_conversations_latest_service_url() {
    let old = ConnectorStandIn::start().await;
    let new = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[]).await;
    let a_before = Conversation::new("a|livechat", "user-a", &old);
    let job_system = Conversation::new(JOB_SYSTEM, "jobs", &old);
    // The job holds the reference of the turn that created it: the old serviceUrl.
    let number = job_number(&say(&bot, &old, &a_before, "run").await);

    // The channel moved the conversation; its next activity comes with the new serviceUrl.
    let a_after = Conversation::new("a|livechat", "user-a", &new);
    say(&bot, &new, &a_after, "hello").await;
    assert_eq!(
        registration(&services, &a_after)
            .await
            .reference
            .service_url,
        new.service_url()
    );

    complete_by_event(&bot, &job_system, number).await;
    assert_sent(&services, number).await;
    let sent = wait_for_proactive(&new, &a_after, 1).await;
    assert_eq!(sent[0].text(), format!("Job {number} is complete."));
    assert_eq!(
        updates(&new, &a_after).len(),
        1,
        "the update goes there too"
    );
    assert_eq!(
        posts_to(&old, &a_before),
        0,
        "nothing to the old serviceUrl"
    );
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn a_conversation_is_written_once_however_many_messages_but_on_every_lifecycle_activity() {
    let connector = ConnectorStandIn::start().await;
    let counting = Arc::new(Counting::default());
    let mut ports = Ports::in_memory(100);
    ports.registry = counting.clone();
    // Holding off: nothing needs each turn's time, so writes are skipped (see the next test).
    let (bot, services) = start_with_env(ports, &[("QUIET_SECONDS", "0")]).await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let b = Conversation::new("b|livechat", "user-b", &connector);

    for _ in 0..5 {
        say(&bot, &connector, &a, "hello").await;
    }
    assert_eq!(counting.writes(), 1, "five messages in a row: one write");
    let number = job_number(&say(&bot, &connector, &a, "run").await);
    say(&bot, &connector, &a, "show").await;
    post_unanswered(&bot, &connector, &a.activity("typing")).await;
    assert_eq!(counting.writes(), 1, "nor for `run`, `show` or typing");

    // A welcome turn writes, every time.
    for expected in [2, 3] {
        let before = connector.requests().len();
        assert_eq!(post(&bot, &user_added(&a)).await.0, 200);
        // Replies go out during the turn, before the HTTP answer.
        assert!(connector.requests()[before].text().starts_with("Welcome"));
        assert_eq!(
            counting.writes(),
            expected,
            "conversationUpdate always writes"
        );
    }
    post_unanswered(&bot, &connector, &install(&a)).await;
    assert_eq!(counting.writes(), 4, "installationUpdate always writes");
    say(&bot, &connector, &b, "hello").await;
    assert_eq!(counting.writes(), 5, "another conversation: its own write");

    // The engine reads the registry; it writes only to retire.
    say(&bot, &connector, &b, &format!("done {number}")).await;
    settled_completion(&services, number).await;
    assert_eq!(counting.writes(), 5);
    assert_eq!(counting.seen.load(Ordering::SeqCst), 5);
    assert_eq!(counting.retired.load(Ordering::SeqCst), 0);
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn with_holding_on_every_turn_writes_once_and_reads_back_what_is_held() {
    let connector = ConnectorStandIn::start().await;
    let counting = Arc::new(Counting::default());
    let mut ports = Ports::in_memory(100);
    ports.registry = counting.clone();
    let (bot, _services) = start_with(ports).await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    for expected in 1..=3 {
        say(&bot, &connector, &a, "hello").await;
        assert_eq!(counting.writes(), expected, "one write per turn, no more");
    }
    post_unanswered(&bot, &connector, &a.activity("typing")).await;
    assert_eq!(counting.writes(), 4, "any activity counts as talking");
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn a_registry_failure_is_logged_and_the_user_is_still_answered() {
    struct Broken;
    #[async_trait]
    impl ConversationRegistry for Broken {
        async fn seen(
            &self,
            _: &ConversationReference,
            _: DateTime<Utc>,
        ) -> Result<Vec<String>, RegistryError> {
            Err(RegistryError::Unavailable("down".into()))
        }
        async fn hold(&self, _: &str, _: &str) -> Result<bool, RegistryError> {
            Err(RegistryError::Unavailable("down".into()))
        }
        async fn release(&self, _: &str, _: &[String]) -> Result<(), RegistryError> {
            Err(RegistryError::Unavailable("down".into()))
        }
        async fn retire(&self, _: &str, _: &str, _: DateTime<Utc>) -> Result<bool, RegistryError> {
            Err(RegistryError::Unavailable("down".into()))
        }
        async fn get(&self, _: &str) -> Result<Option<Registration>, RegistryError> {
            Err(RegistryError::Unavailable("down".into()))
        }
        async fn get_many(&self, _: &[String]) -> Result<Vec<Registration>, RegistryError> {
            Err(RegistryError::Unavailable("down".into()))
        }
        async fn list_active(
            &self,
            _: Option<&str>,
            _: Option<&str>,
            _: usize,
        ) -> Result<ActivePage, RegistryError> {
            Err(RegistryError::Unavailable("down".into()))
        }
    }
    let connector = ConnectorStandIn::start().await;
    let mut ports = Ports::in_memory(100);
    ports.registry = Arc::new(Broken);
    let (bot, _services) = start_with(ports).await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let reply = say(&bot, &connector, &a, "hello").await;
    assert_eq!(reply.text(), HELP_TEXT);
    let run = say(&bot, &connector, &a, "run").await;
    assert!(run.text().starts_with("Job "), "{}", run.text());
    // A failed retirement still gets no reply.
    post_unanswered(&bot, &connector, &uninstall(&a)).await;
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn the_lifecycle_on_dynamodb_costs_one_write_per_change() {
    let connector = ConnectorStandIn::start().await;
    let moto = MotoServer::shared();
    let resources = moto.create_resources("registry-e2e").await;
    let (config, counter) = moto.sdk_config().await;
    let (bot, services) = start_with(resources.ports(&config, &counter)).await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let b = Conversation::new("b|livechat", "user-b", &connector);
    let updates = |counter: &RequestCounter| counter.count("DynamoDB", "UpdateItem");

    counter.reset();
    say(&bot, &connector, &a, "hello").await;
    assert_eq!(updates(&counter), 1, "registered in one write");
    assert!(registration(&services, &a).await.status.is_active());
    let number = job_number(&say(&bot, &connector, &a, "run").await);
    counter.reset();
    for _ in 0..3 {
        say(&bot, &connector, &a, "hello").await;
    }
    // With holding on (the default) the registry keeps each turn's time, in the one write
    // that also reads back what is held: one per message, never more.
    assert_eq!(updates(&counter), 3, "messages in a row: one write each");

    counter.reset();
    post_unanswered(&bot, &connector, &uninstall(&a)).await;
    assert_eq!(updates(&counter), 1, "retired in one write");
    assert_eq!(
        retired_reason(&registration(&services, &a).await),
        "uninstalled"
    );
    let listed = services.registry.list_active(None, None, 10).await.unwrap();
    assert!(listed.conversations.is_empty(), "{listed:?}");

    say(&bot, &connector, &b, &format!("done {number}")).await;
    assert_eq!(
        failed_reason(&settled_completion(&services, number).await),
        NOT_REGISTERED
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(posts_to(&connector, &a), 0);

    counter.reset();
    post_unanswered(&bot, &connector, &install(&a)).await;
    assert_eq!(updates(&counter), 1, "revived in one write");
    let revived = registration(&services, &a).await;
    assert!(revived.status.is_active());
    assert!(revived.first_seen < revived.last_seen, "first seen kept");
    let again = job_number(&say(&bot, &connector, &a, "run").await);
    say(&bot, &connector, &b, &format!("done {again}")).await;
    assert_sent(&services, again).await;
    assert_eq!(posts_to(&connector, &a), 1);
    let listed = services.registry.list_active(None, None, 10).await.unwrap();
    let mut ids: Vec<&str> = listed
        .conversations
        .iter()
        .map(|r| r.conversation_id())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["a|livechat", "b|livechat"]);
    bot.stop().await.unwrap();
}
