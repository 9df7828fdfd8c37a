//! Reminders end to end, created through real bot turns: in memory through the local runner
//! (its in-process timer and the delivery engine's pollers), and on moto with EventBridge
//! Scheduler, whose stored schedule's target input is fed through the delivery worker.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use messages::local::LocalBot;
use proactive_bot::adapters::eventbridge::at_expression;
use proactive_bot::adapters::local_reminders::{LocalTimer, MemoryReminderStore};
use proactive_bot::adapters::memory::{
    MemoryJobStore, MemoryNotificationStore, MemoryQueue, MemoryRateLimitStore,
};
use proactive_bot::auth::AuthConfig;
use proactive_bot::config::Settings;
use proactive_bot::delivery::consumer::sqs_record;
use proactive_bot::delivery::{Delivered, DeliveryMessage, DeliveryState, Source};
use proactive_bot::reminders::Reminder;
use proactive_bot::reminders::parse::ParseError;
use proactive_bot::schema::Activity;
use proactive_bot::testing::connector::{ConnectorStandIn, RecordedRequest};
use proactive_bot::testing::moto::{self, MotoServer, RequestCounter};
use proactive_bot::wiring::{MEMORY_VISIBILITY_TIMEOUT, Ports, ReminderPorts, Services};
use serde_json::{Value, json};
use support::*;

/// The local runner in memory, with handles on the reminders' store and timer.
struct MemoryBot {
    bot: LocalBot,
    services: Services,
    store: Arc<MemoryReminderStore>,
    timer: Arc<LocalTimer>,
    queue: Arc<MemoryQueue>,
}

async fn start_in_memory() -> MemoryBot {
    let queue = Arc::new(MemoryQueue::new(MEMORY_VISIBILITY_TIMEOUT, 100));
    let store = Arc::new(MemoryReminderStore::new());
    let timer = Arc::new(LocalTimer::new(queue.clone()));
    let ports = Ports {
        jobs: Arc::new(MemoryJobStore::new()),
        notifications: Arc::new(MemoryNotificationStore::new()),
        limits: Arc::new(MemoryRateLimitStore::new()),
        queue: queue.clone(),
        registry: Arc::new(
            proactive_bot::adapters::memory_registry::MemoryConversationRegistry::new(),
        ),
        requests: Arc::new(proactive_bot::adapters::memory_requests::MemoryRequestStore::new()),
        reminders: ReminderPorts {
            store: store.clone(),
            scheduler: timer.clone(),
        },
    };
    let settings = Settings::from_lookup(|_| None).unwrap();
    let services = Services::with_ports(&AuthConfig::default(), &settings, ports).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bot = LocalBot::start(&services, listener).unwrap();
    MemoryBot {
        bot,
        services,
        store,
        timer,
        queue,
    }
}

/// A message of `conversation` whose sender is at UTC+01:00 (as Teams and Web Chat say it).
fn message_at_plus_one(conversation: &Conversation, text: &str) -> Value {
    let mut activity = conversation.message(text);
    activity["localTimestamp"] = json!("2026-11-21T11:00:00.1234567+01:00");
    activity
}

/// The conversation's pending reminders, as the service sees them.
async fn pending(services: &Services, activity: &Value) -> Vec<Reminder> {
    let activity: Activity = serde_json::from_value(activity.clone()).unwrap();
    services
        .reminders
        .pending(&activity, Utc::now())
        .await
        .unwrap()
}

/// The proactive (not reply) messages posted into `conversation` so far.
fn proactive(connector: &ConnectorStandIn, conversation: &Conversation) -> Vec<RecordedRequest> {
    connector
        .requests()
        .into_iter()
        .filter(|r| r.path == conversation.proactive_path())
        .collect()
}

async fn wait_for_proactive(
    connector: &ConnectorStandIn,
    conversation: &Conversation,
    count: usize,
    timeout: Duration,
) -> Vec<RecordedRequest> {
    let deadline = Instant::now() + timeout;
    loop {
        let sent = proactive(connector, conversation);
        if sent.len() >= count {
            return sent;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} proactive messages in {} within {timeout:?}: {:#?}",
            conversation.id,
            connector.requests()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn remind_me_in_one_second_goes_off_about_a_second_later_through_the_engine() {
    let connector = ConnectorStandIn::start().await;
    let local = start_in_memory().await;
    let a = Conversation::new("19:a@thread.skype;messageid=1", "user-a", &connector);

    let activity = message_at_plus_one(&a, "<at>Job Bot</at> remind me in 1 second to Stretch");
    let asked = Instant::now();
    let reply = say_activity(&local.bot, &connector, &a, &activity).await;
    let text = reply.text();
    assert!(text.starts_with("Reminder 1 is set"), "{text}");
    assert!(
        text.contains("\"Stretch\""),
        "the text keeps its case: {text}"
    );
    assert!(
        text.contains(" UTC on ") && text.contains("your time, UTC+01:00"),
        "when, in UTC and the user's time: {text}"
    );
    assert!(text.contains("in 1 second"), "{text}");
    let reminders = pending(&local.services, &activity).await;
    assert_eq!(reminders.len(), 1);
    let id = reminders[0].notification_id();
    let stored = local
        .services
        .notifications
        .get(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.state, DeliveryState::Queued, "created, waiting");
    assert!(local.queue.is_empty(), "not on the queue before it is due");
    assert_eq!(local.timer.len(), 1);

    let sent = wait_for_proactive(&connector, &a, 1, Duration::from_secs(10)).await;
    let after = sent[0].received_at - asked;
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "went off {after:?} after it was asked for"
    );
    assert_eq!(sent[0].text(), "Reminder: Stretch");
    assert_eq!(sent[0].body["from"]["id"], "bot-id");
    assert_eq!(sent[0].body["recipient"]["id"], "user-a");
    assert!(
        sent[0].body.get("replyToId").is_none(),
        "proactive, not a reply"
    );
    // Delivered by the engine: the notification is Sent, from the reminder.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stored = local
        .services
        .notifications
        .get(&id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(stored.state, DeliveryState::Sent { .. }),
        "{stored:?}"
    );
    assert!(
        matches!(&stored.source, Source::Reminder { id } if *id == reminders[0].id.to_string())
    );
    assert!(
        local.timer.is_empty(),
        "a fired timer leaves nothing behind"
    );
    assert_eq!(proactive(&connector, &a).len(), 1, "once");

    let list = say(&local.bot, &connector, &a, "reminders").await;
    assert!(
        list.text().starts_with("There are no pending reminders"),
        "{}",
        list.text()
    );
    let again = say(&local.bot, &connector, &a, "cancel reminder 1").await;
    assert!(
        again.text().contains("already went off"),
        "it is still known for an hour: {}",
        again.text()
    );
    local.bot.stop().await.unwrap();
}

#[tokio::test]
async fn reminders_lists_this_conversations_and_a_cancelled_one_never_arrives() {
    let connector = ConnectorStandIn::start().await;
    let local = start_in_memory().await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let b = Conversation::new("b|livechat", "user-b", &connector);
    let bot = &local.bot;

    let first = say(bot, &connector, &a, "remind me in 2 seconds to drink water").await;
    assert!(first.text().starts_with("Reminder 1 "), "{}", first.text());
    let second = say(bot, &connector, &a, "remind me to call Bob in 1 hour").await;
    assert!(
        second.text().starts_with("Reminder 2 "),
        "{}",
        second.text()
    );
    let third = say(bot, &connector, &a, "Remind me at 23:59 to Leave").await;
    assert!(third.text().starts_with("Reminder 3 "), "{}", third.text());
    let in_b = say(
        bot,
        &connector,
        &b,
        "remind me in 1 hour to water the plants",
    )
    .await;
    assert!(
        in_b.text().starts_with("Reminder 1 "),
        "numbers are per conversation: {}",
        in_b.text()
    );

    let list = say(bot, &connector, &a, "reminders").await;
    let text = list.text();
    assert!(
        text.starts_with("Pending reminders in this conversation"),
        "{text}"
    );
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle} in {text}"))
    };
    assert!(
        at("**Reminder 1**") < at("**Reminder 2**"),
        "soonest first: {text}"
    );
    assert!(text.contains("drink water") && text.contains("call Bob") && text.contains("Leave"));
    assert!(
        !text.contains("water the plants"),
        "only this conversation's: {text}"
    );

    // B cannot reach A's reminders.
    let from_b = say(bot, &connector, &b, "cancel reminder 2").await;
    assert!(
        from_b
            .text()
            .starts_with("There is no reminder 2 in this conversation"),
        "{}",
        from_b.text()
    );
    assert_eq!(pending(&local.services, &a.message("x")).await.len(), 3);

    let activity = a.message("cancel reminder 1");
    let cancelled = say_activity(bot, &connector, &a, &activity).await;
    assert_eq!(
        cancelled.text(),
        "Reminder 1 (\"drink water\") is cancelled."
    );
    assert_eq!(
        local.timer.len(),
        3,
        "its timer is gone (A's 2 and 3, B's 1)"
    );
    let list = say(bot, &connector, &a, "reminders").await;
    assert!(
        !list.text().contains("drink water") && list.text().contains("call Bob"),
        "{}",
        list.text()
    );
    // Past its time: nothing arrived.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        proactive(&connector, &a).is_empty(),
        "{:#?}",
        connector.requests()
    );

    let again = say(bot, &connector, &a, "cancel reminder 1").await;
    assert!(
        again.text().starts_with("Reminder 1 is no longer pending"),
        "{}",
        again.text()
    );
    let unknown = say(bot, &connector, &a, "cancel reminder 9").await;
    assert!(
        unknown.text().starts_with("There is no reminder 9"),
        "{}",
        unknown.text()
    );
    let bare = say(bot, &connector, &a, "cancel reminder").await;
    assert!(
        bare.text().starts_with("Which reminder?"),
        "{}",
        bare.text()
    );
    let word = say(bot, &connector, &a, "cancel reminder two").await;
    assert!(
        word.text().starts_with("\"two\" is not a reminder number"),
        "{}",
        word.text()
    );
    // `show` keeps working as before.
    let show = say(bot, &connector, &a, "show").await;
    assert_eq!(show.text(), proactive_bot::bot::EMPTY_LOG_TEXT);
    local.bot.stop().await.unwrap();
}

#[tokio::test]
async fn a_fire_that_races_the_cancel_sends_nothing() {
    let connector = ConnectorStandIn::start().await;
    let local = start_in_memory().await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let activity = a.message("remind me in 1 hour to stretch");
    say_activity(&local.bot, &connector, &a, &activity).await;
    let reminder = pending(&local.services, &activity).await.remove(0);
    let message = local
        .services
        .notifications
        .get(&reminder.notification_id())
        .await
        .unwrap()
        .unwrap()
        .message();
    let cancelled = say(&local.bot, &connector, &a, "cancel reminder 1").await;
    assert!(
        cancelled.text().ends_with("is cancelled."),
        "{}",
        cancelled.text()
    );
    let stored = local
        .services
        .notifications
        .get(&reminder.notification_id())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&stored.state, DeliveryState::Failed { reason, .. } if reason == "cancelled"),
        "{stored:?}"
    );
    // The schedule's message arrives anyway (it was already on its way): the engine's claim
    // finds the notification final.
    connector.clear();
    let results = local
        .services
        .engine
        .handle_batch(&[sqs_record("late-fire", &message.to_body())])
        .await;
    assert_eq!(results[0].delivered, Delivered::Duplicate);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(connector.requests().is_empty());
    local.bot.stop().await.unwrap();
}

#[tokio::test]
async fn bad_reminders_get_a_clear_answer_and_nothing_is_stored_or_scheduled() {
    let connector = ConnectorStandIn::start().await;
    let local = start_in_memory().await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let cases: Vec<(&str, String)> = vec![
        (
            "remind me at 2020-01-01 10:00 to x",
            ParseError::Past("2020-01-01 10:00 UTC".into()).to_string(),
        ),
        (
            "remind me in -5 minutes to x",
            ParseError::Negative("-5 minutes".into()).to_string(),
        ),
        ("remind me in 0 seconds to x", ParseError::Zero.to_string()),
        (
            "remind me at 25:99 to x",
            ParseError::NotATime("25:99".into()).to_string(),
        ),
        ("remind me in 366 days to x", ParseError::TooFar.to_string()),
        (
            "remind me in 2 years to x",
            ParseError::UnknownUnit("years".into()).to_string(),
        ),
        ("remind me in 10 minutes", ParseError::NoText.to_string()),
        ("remind me in 10 minutes to", ParseError::NoText.to_string()),
        ("remind me to stretch", ParseError::NoTime.to_string()),
        ("remind me", ParseError::Usage.to_string()),
    ];
    for (input, expected) in &cases {
        let reply = say(&local.bot, &connector, &a, input).await;
        assert_eq!(reply.text(), expected, "{input}");
    }
    let long = format!("remind me in 1 hour to {}", "x".repeat(1001));
    let reply = say(&local.bot, &connector, &a, &long).await;
    assert_eq!(
        reply.text(),
        "That reminder is too long (1001 characters); keep it to 1000."
    );
    assert_eq!(local.store.reminders(), 0, "nothing stored");
    assert!(local.timer.is_empty(), "nothing scheduled");
    assert!(local.queue.is_empty(), "nothing queued");
    let list = say(&local.bot, &connector, &a, "reminders").await;
    assert!(list.text().starts_with("There are no pending reminders"));

    // At most 50 pending in one conversation; the 51st stores and schedules nothing.
    for n in 1..=50 {
        let reply = say(
            &local.bot,
            &connector,
            &a,
            &format!("remind me in {n} hours to r{n}"),
        )
        .await;
        assert!(
            reply.text().starts_with(&format!("Reminder {n} ")),
            "{}",
            reply.text()
        );
    }
    let full = say(&local.bot, &connector, &a, "remind me in 1 day to one more").await;
    assert!(
        full.text()
            .starts_with("This conversation already has 50 pending reminders"),
        "{}",
        full.text()
    );
    assert_eq!(local.store.reminders(), 50);
    assert_eq!(local.timer.len(), 50);
    // Another conversation is not bound by A's.
    let b = Conversation::new("b|livechat", "user-b", &connector);
    let other = say(&local.bot, &connector, &b, "remind me in 1 day to one more").await;
    assert!(other.text().starts_with("Reminder 1 "), "{}", other.text());
    local.bot.stop().await.unwrap();
}

#[tokio::test]
async fn help_and_welcome_mention_reminders() {
    let connector = ConnectorStandIn::start().await;
    let local = start_in_memory().await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let help = say(&local.bot, &connector, &a, "help").await;
    assert!(
        help.text().contains("remind me in 10 minutes to stretch")
            && help.text().contains("**reminders**")
            && help.text().contains("cancel reminder N"),
        "{}",
        help.text()
    );
    let mut update = a.activity("conversationUpdate");
    update["membersAdded"] = json!([{"id": "user-a"}]);
    assert_eq!(post(&local.bot, &update).await.0, 200);
    let welcome = connector.wait_for(2, WAIT).await;
    assert!(
        welcome[1].text().contains("cancel reminder N"),
        "{}",
        welcome[1].text()
    );
    local.bot.stop().await.unwrap();
}

/// The bot on moto: DynamoDB, SQS, and EventBridge Scheduler for reminders.
struct AwsBot {
    bot: LocalBot,
    services: Services,
    counter: RequestCounter,
    scheduler: aws_sdk_scheduler::Client,
    sqs: aws_sdk_sqs::Client,
    resources: moto::LocalResources,
}

async fn start_on_moto(prefix: &str) -> AwsBot {
    let moto = MotoServer::shared();
    let resources = moto.create_resources(prefix).await;
    let (config, counter) = moto.sdk_config().await;
    let ports = resources.ports_with_eventbridge(&config, &counter);
    let settings = Settings::from_lookup(|_| None).unwrap();
    let services = Services::with_ports(&AuthConfig::default(), &settings, ports).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bot = LocalBot::start(&services, listener).unwrap();
    AwsBot {
        bot,
        services,
        counter,
        scheduler: moto::scheduler_client(&config, &RequestCounter::default()),
        sqs: moto::sqs_client(&config, &RequestCounter::default()),
        resources,
    }
}

#[tokio::test]
async fn on_aws_a_reminder_is_a_one_time_schedule_whose_input_the_worker_delivers() {
    let connector = ConnectorStandIn::start().await;
    let aws = start_on_moto("rem").await;
    let a = Conversation::new("19:a@thread.skype;messageid=1", "user-a", &connector);

    aws.counter.reset();
    let activity = message_at_plus_one(&a, "remind me in 10 minutes to stretch");
    let reply = say_activity(&aws.bot, &connector, &a, &activity).await;
    assert!(
        reply.text().starts_with("Reminder 1 is set"),
        "{}",
        reply.text()
    );
    let counts: Vec<(String, usize)> = aws
        .counter
        .snapshot()
        .into_iter()
        .filter(|(operation, _)| operation != "SQS.ReceiveMessage")
        .collect();
    assert_eq!(
        counts,
        vec![
            ("DynamoDB.GetItem".to_owned(), 1),
            ("DynamoDB.PutItem".to_owned(), 2),
            ("DynamoDB.UpdateItem".to_owned(), 1),
            ("Scheduler.CreateSchedule".to_owned(), 1),
        ],
        "the conversation registered (its first turn), its reminders' record read and written, \
         the notification created, one schedule; nothing queued"
    );

    let reminder = pending(&aws.services, &activity).await.remove(0);
    let target = aws.resources.eventbridge_target();
    let schedule = aws
        .scheduler
        .get_schedule()
        .name(reminder.schedule_name().as_str())
        .group_name(&target.group)
        .send()
        .await
        .expect("the schedule exists");
    assert_eq!(schedule.group_name(), Some(target.group.as_str()));
    assert_eq!(
        schedule.schedule_expression(),
        Some(at_expression(reminder.due).as_str())
    );
    assert_eq!(schedule.schedule_expression_timezone(), Some("UTC"));
    assert_eq!(
        schedule.action_after_completion().map(|a| a.as_str()),
        Some("DELETE")
    );
    assert_eq!(
        schedule.flexible_time_window().map(|w| w.mode().as_str()),
        Some("OFF")
    );
    let scheduled = schedule.target().expect("a target");
    assert_eq!(scheduled.arn(), target.queue_arn);
    assert!(scheduled.arn().ends_with(".fifo"), "{}", scheduled.arn());
    assert_eq!(scheduled.role_arn(), target.role_arn);
    assert_eq!(
        scheduled.dead_letter_config().and_then(|d| d.arn()),
        Some(target.dead_letter_queue_arn.as_str())
    );
    assert!(!target.dead_letter_queue_arn.ends_with(".fifo"));
    let retry = scheduled.retry_policy().expect("a retry policy");
    assert_eq!(
        (
            retry.maximum_retry_attempts(),
            retry.maximum_event_age_in_seconds()
        ),
        (Some(185), Some(86_400))
    );
    let input = scheduled.input().expect("an input").to_owned();
    let message = DeliveryMessage::from_body(&input).expect("a delivery message");
    assert_eq!(message.id, reminder.notification_id());
    assert_eq!(message.conversation, a.id);
    let group = scheduled
        .sqs_parameters()
        .and_then(|p| p.message_group_id())
        .expect("a message group")
        .to_owned();
    assert_eq!(group, message.group());

    // Play the scheduler: the input onto the FIFO queue in its group, with no deduplication
    // id (Scheduler cannot set one; the queue's content-based deduplication must be on).
    aws.sqs
        .send_message()
        .queue_url(&aws.resources.queue_url)
        .message_body(&input)
        .message_group_id(&group)
        .send()
        .await
        .expect("the queue takes a message without a deduplication id");
    let sent = wait_for_proactive(&connector, &a, 1, Duration::from_secs(30)).await;
    assert_eq!(sent[0].text(), "Reminder: stretch");
    assert_eq!(sent[0].body["recipient"]["id"], "user-a");
    // The delivery is over once its message is deleted (then nothing of it is counted below).
    let deadline = Instant::now() + Duration::from_secs(30);
    while aws.counter.count("SQS", "DeleteMessageBatch") == 0 {
        assert!(
            Instant::now() < deadline,
            "the delivered message was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Cancel: the schedule is deleted, and its input (had it fired anyway) sends nothing.
    let second = say(&aws.bot, &connector, &a, "remind me in 1 hour to call Bob").await;
    assert!(
        second.text().starts_with("Reminder 2 "),
        "{}",
        second.text()
    );
    let reminder = pending(&aws.services, &activity)
        .await
        .into_iter()
        .find(|r| r.number == 2)
        .expect("reminder 2 is pending");
    let name = reminder.schedule_name();
    let input = aws
        .scheduler
        .get_schedule()
        .name(name.as_str())
        .group_name(&target.group)
        .send()
        .await
        .unwrap()
        .target()
        .and_then(|t| t.input())
        .unwrap()
        .to_owned();
    aws.counter.reset();
    let cancelled = say(&aws.bot, &connector, &a, "cancel reminder 2").await;
    assert_eq!(cancelled.text(), "Reminder 2 (\"call Bob\") is cancelled.");
    let counts: Vec<(String, usize)> = aws
        .counter
        .snapshot()
        .into_iter()
        .filter(|(operation, _)| operation != "SQS.ReceiveMessage")
        .collect();
    assert_eq!(
        counts,
        vec![
            ("DynamoDB.GetItem".to_owned(), 2),
            ("DynamoDB.PutItem".to_owned(), 1),
            ("DynamoDB.UpdateItem".to_owned(), 2),
            ("Scheduler.DeleteSchedule".to_owned(), 1),
        ],
        "the record and the notification read, the notification cancelled, the record written, the schedule deleted; and the turn's registry write (every turn, with holding on)"
    );
    let gone = aws
        .scheduler
        .get_schedule()
        .name(name.as_str())
        .group_name(&target.group)
        .send()
        .await
        .unwrap_err();
    assert!(
        gone.as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception()),
        "{gone:?}"
    );
    connector.clear();
    let results = aws
        .services
        .engine
        .handle_batch(&[sqs_record("late-fire", &input)])
        .await;
    assert_eq!(results[0].delivered, Delivered::Duplicate);
    assert!(connector.requests().is_empty());
    aws.bot.stop().await.unwrap();
}
