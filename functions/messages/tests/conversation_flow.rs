//! Notifications that fit the conversation, end to end through the local runner and a
//! Connector stand-in: the "running" reply updated in place, digests, holding while the user
//! talks (and folding into the bot's next reply), the Adaptive Card on Teams, and `show`
//! scoped to the tenant.

mod support;

use std::time::{Duration, Instant};

use proactive_bot::delivery::{DeliveryState, Notification, NotificationId};
use proactive_bot::jobs::{Job, JobNumber};
use proactive_bot::testing::connector::{ConnectorStandIn, RecordedRequest, ScriptedResponse};
use proactive_bot::wiring::Services;
use serde_json::{Value, json};
use support::*;

/// The job system's completion of job `number`: an event, no reply.
async fn complete_by_event(bot: &messages::local::LocalBot, system: &Conversation, number: u32) {
    let mut event = system.activity("event");
    event["name"] = json!("jobComplete");
    event["value"] = json!(number);
    assert_eq!(post(bot, &event).await.0, 200);
}

async fn stored_job(services: &Services, number: u32) -> Job {
    services
        .jobs
        .get(JobNumber::new(number).unwrap())
        .await
        .unwrap()
        .expect("the job exists")
}

async fn stored_notification(services: &Services, id: &NotificationId) -> Notification {
    services
        .notifications
        .get(id)
        .await
        .unwrap()
        .expect("the notification exists")
}

/// The id the stand-in gave the reply to `request` (its answers are `activity-<n>`, n the
/// request's position).
fn given_id(connector: &ConnectorStandIn, request: &RecordedRequest) -> String {
    let position = connector
        .requests()
        .iter()
        .position(|r| r.received_at == request.received_at && r.path == request.path)
        .expect("the request was recorded");
    format!("activity-{}", position + 1)
}

#[tokio::test]
async fn completing_a_job_updates_its_running_reply_in_place_and_still_notifies() {
    let connector = ConnectorStandIn::start().await;
    let (bot, _services) = start_bot(&[("QUIET_SECONDS", "0")]).await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let b = Conversation::new("b|livechat", "user-b", &connector);
    let running = say(&bot, &connector, &a, "run").await;
    let number = job_number(&running);
    let running_id = given_id(&connector, &running);

    say(&bot, &connector, &b, &format!("done {number}")).await;
    let sent = wait_for_proactive(&connector, &a, 1).await;
    assert_eq!(sent[0].text(), format!("Job {number} is complete."));
    let updates = updates(&connector, &a);
    assert_eq!(updates.len(), 1, "{:#?}", connector.requests());
    let update = &updates[0];
    assert_eq!(
        update.path,
        format!("{}/{}", a.proactive_path(), encode(&running_id)),
        "the PUT goes to the running reply's id"
    );
    assert_eq!(update.body["id"], json!(running_id));
    assert_eq!(update.body["type"], "message");
    assert_eq!(update.body["textFormat"], "plain");
    let text = update.text();
    assert!(
        text.starts_with(&format!("Job {number} is complete (started "))
            && text.ends_with(" UTC)."),
        "{text}"
    );
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn a_channel_refusing_updates_still_gets_the_notification_and_the_update_is_not_retried() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[("QUIET_SECONDS", "0")]).await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let system = Conversation::new("job-system", "jobs", &connector);
    let number = job_number(&say(&bot, &connector, &a, "run").await);
    // The update goes first (it waits for no digest window): the channel refuses it.
    connector.script(ScriptedResponse::status(
        400,
        Some(r#"{"error":{"code":"BadArgument","message":"updates not supported"}}"#),
    ));
    complete_by_event(&bot, &system, number).await;
    let sent = wait_for_proactive(&connector, &a, 1).await;
    assert_eq!(sent[0].text(), format!("Job {number} is complete."));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(updates(&connector, &a).len(), 1, "tried once, not retried");
    let job = stored_job(&services, number).await;
    let update = stored_notification(&services, &job.announcement_update_id()).await;
    match &update.state {
        DeliveryState::Failed { reason, .. } => {
            assert!(reason.starts_with("update refused: "), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let completion = stored_notification(&services, job.status.notification().unwrap()).await;
    assert!(matches!(completion.state, DeliveryState::Sent { .. }));
    // The conversation is not retired for it.
    assert!(registration(&services, &a).await.status.is_active());
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn twenty_completions_in_one_second_arrive_as_at_most_three_messages_naming_all_twenty() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[("QUIET_SECONDS", "0")]).await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let system = Conversation::new("job-system", "jobs", &connector);
    let mut numbers = Vec::new();
    for _ in 0..20 {
        numbers.push(job_number(&say(&bot, &connector, &a, "run").await));
    }
    connector.clear();
    // All twenty at once (well within a second on an idle machine; on a loaded one what
    // matters is that they all arrive within the digest window).
    let started = Instant::now();
    futures_util::future::join_all(
        numbers
            .iter()
            .map(|number| complete_by_event(&bot, &system, *number)),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Every completion is recorded sent; then count what the user saw.
    let deadline = Instant::now() + Duration::from_secs(20);
    for number in &numbers {
        loop {
            let job = stored_job(&services, *number).await;
            let notification =
                stored_notification(&services, job.status.notification().unwrap()).await;
            if matches!(notification.state, DeliveryState::Sent { .. }) {
                break;
            }
            assert!(Instant::now() < deadline, "job {number} never sent");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let messages = proactive(&connector, &a);
    assert!(
        (1..=3).contains(&messages.len()),
        "{} messages: {messages:#?}",
        messages.len()
    );
    let said: String = messages.iter().map(|m| m.text().to_owned()).collect();
    for number in &numbers {
        assert!(
            said.contains(&number.to_string()),
            "{number} missing from {said}"
        );
    }
    assert!(
        messages[0].text().contains(" jobs are complete: "),
        "{}",
        messages[0].text()
    );
    // And each running reply is updated in place (paced by the same limits: it takes a few
    // seconds more).
    let deadline = Instant::now() + Duration::from_secs(20);
    while updates(&connector, &a).len() < 20 {
        assert!(
            Instant::now() < deadline,
            "{} updates",
            updates(&connector, &a).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(updates(&connector, &a).len(), 20, "each once");
    assert_eq!(
        proactive(&connector, &a).len(),
        messages.len(),
        "nothing more"
    );
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn a_completion_is_held_while_the_user_talks_and_sent_once_it_is_quiet() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) =
        start_bot(&[("QUIET_SECONDS", "2"), ("DIGEST_WINDOW_SECONDS", "0")]).await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let system = Conversation::new("job-system", "jobs", &connector);
    let number = job_number(&say(&bot, &connector, &a, "run").await);
    // The user keeps talking (typing: no reply, but it counts).
    let completed = Instant::now();
    complete_by_event(&bot, &system, number).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(post(&bot, &a.activity("typing")).await.0, 200);
        assert!(
            proactive(&connector, &a).is_empty(),
            "sent while the user talks"
        );
    }
    let last_activity = Instant::now();
    let sent = wait_for_proactive(&connector, &a, 1).await;
    assert_eq!(sent[0].text(), format!("Job {number} is complete."));
    let quiet_for = sent[0].received_at.duration_since(last_activity);
    assert!(
        quiet_for >= Duration::from_secs(2),
        "sent {quiet_for:?} after the last activity"
    );
    assert!(completed.elapsed() < Duration::from_secs(10));
    let job = stored_job(&services, number).await;
    let notification = stored_notification(&services, job.status.notification().unwrap()).await;
    assert!(matches!(notification.state, DeliveryState::Sent { .. }));
    let registration = services.registry.get(&a.id).await.unwrap().unwrap();
    assert!(registration.held.is_empty(), "{:?}", registration.held);
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn a_held_completion_rides_on_the_reply_to_the_users_next_message() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) =
        start_bot(&[("QUIET_SECONDS", "30"), ("DIGEST_WINDOW_SECONDS", "0")]).await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    let system = Conversation::new("job-system", "jobs", &connector);
    let number = job_number(&say(&bot, &connector, &a, "run").await);
    complete_by_event(&bot, &system, number).await;
    // Held: noted in the registration.
    let deadline = Instant::now() + WAIT;
    while registration(&services, &a).await.held.is_empty() {
        assert!(Instant::now() < deadline, "never held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(proactive(&connector, &a).is_empty());

    let reply = say(&bot, &connector, &a, "hello").await;
    assert_eq!(
        reply.text(),
        format!(
            "{}\n\nJob {number} is complete.",
            proactive_bot::bot::HELP_TEXT
        )
    );
    assert_eq!(reply.body["textFormat"], "markdown");
    let job = stored_job(&services, number).await;
    let notification = stored_notification(&services, job.status.notification().unwrap()).await;
    match &notification.state {
        DeliveryState::Sent { activity_id, .. } => {
            assert_eq!(
                activity_id.as_deref(),
                Some(given_id(&connector, &reply).as_str())
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(registration(&services, &a).await.held.is_empty());
    // The engine finds it sent when the held message comes back: never a second bubble.
    let again = say(&bot, &connector, &a, "hello").await;
    assert_eq!(again.text(), proactive_bot::bot::HELP_TEXT);
    assert!(proactive(&connector, &a).is_empty());
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn an_urgent_notification_is_not_held_while_the_user_talks() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[
        ("QUIET_SECONDS", "30"),
        ("NOTIFY_API_KEY", "test-key-0123456789"),
    ])
    .await;
    let a = Conversation::new("a|livechat", "user-a", &connector);
    say(&bot, &connector, &a, "hello").await;
    // An API notification is urgent unless it says otherwise.
    let asked = Instant::now();
    let response = reqwest::Client::new()
        .post(bot.endpoint().replace("/api/messages", "/api/notify"))
        .bearer_auth("test-key-0123456789")
        .json(&json!({"conversationId": a.id, "text": "Build 7 **passed**"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let sent = wait_for_proactive(&connector, &a, 1).await;
    assert_eq!(sent[0].text(), "Build 7 **passed**");
    assert_eq!(sent[0].body["textFormat"], "markdown");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert!(registration(&services, &a).await.held.is_empty());
    bot.stop().await.unwrap();
}

fn card_rows(reply: &Value) -> Vec<Vec<String>> {
    let card = &reply["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    card["content"]["body"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|element| element["type"] == "ColumnSet")
        .map(|row| {
            row["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|column| column["items"][0]["text"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn show_is_an_adaptive_card_on_teams_and_a_markdown_table_elsewhere() {
    let connector = ConnectorStandIn::start().await;
    let (bot, _services) = start_bot(&[]).await;
    let mut teams = Conversation::new("19:t@thread.tacv2", "user-t", &connector);
    teams.channel = "msteams".to_owned();
    let web = Conversation::new("w|livechat", "user-w", &connector);
    let number = job_number(&say(&bot, &connector, &teams, "run").await);
    job_number(&say(&bot, &connector, &web, "run").await);

    let card = say(&bot, &connector, &teams, "show").await;
    assert!(card.body.get("text").is_none(), "{:#?}", card.body);
    assert!(card.body.get("textFormat").is_none());
    let rows = card_rows(&card.body);
    assert_eq!(rows[0], ["Job", "Conversation", "State"]);
    // Neither conversation names a tenant here: both jobs are listed, newest first.
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        rows[2],
        [
            number.to_string(),
            format!("{} (msteams)", teams.id),
            "running".to_owned()
        ]
    );

    let table = say(&bot, &connector, &web, "show").await;
    assert_eq!(table.body["textFormat"], "markdown");
    assert!(
        table.text().starts_with("| Job | Conversation | State |"),
        "{}",
        table.text()
    );
    assert!(table.body.get("attachments").is_none());
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn show_lists_only_the_jobs_of_the_conversations_tenant() {
    let connector = ConnectorStandIn::start().await;
    let (bot, _services) = start_bot(&[]).await;
    let in_tenant = |id: &str, user: &str, tenant: Option<&str>| {
        let mut conversation = Conversation::new(id, user, &connector);
        conversation.channel = "msteams".to_owned();
        (conversation, tenant.map(str::to_owned))
    };
    let with_tenant = |conversation: &Conversation, tenant: &Option<String>, text: &str| {
        let mut activity = conversation.message(text);
        if let Some(tenant) = tenant {
            activity["conversation"]["tenantId"] = json!(tenant);
            activity["channelData"] = json!({"tenant": {"id": tenant}});
        }
        activity
    };
    let (x1, tx) = in_tenant("x1", "user-x1", Some("tenant-x"));
    let (x2, _) = in_tenant("x2", "user-x2", Some("tenant-x"));
    let (y1, ty) = in_tenant("y1", "user-y1", Some("tenant-y"));
    let x_job =
        job_number(&say_activity(&bot, &connector, &x1, &with_tenant(&x1, &tx, "run")).await);
    let y_job =
        job_number(&say_activity(&bot, &connector, &y1, &with_tenant(&y1, &ty, "run")).await);

    let shown = |reply: &RecordedRequest| {
        card_rows(&reply.body)
            .into_iter()
            .skip(1)
            .map(|row| row[0].clone())
            .collect::<Vec<_>>()
    };
    // Another conversation of tenant X sees X's job (the seed procedure: the second
    // conversation lists the first's jobs), never Y's.
    let x_show = say_activity(&bot, &connector, &x2, &with_tenant(&x2, &tx, "show")).await;
    assert_eq!(shown(&x_show), [x_job.to_string()]);
    let y_show = say_activity(&bot, &connector, &y1, &with_tenant(&y1, &ty, "show")).await;
    assert_eq!(shown(&y_show), [y_job.to_string()]);
    // A channel without tenants sees neither.
    let web = Conversation::new("w|livechat", "user-w", &connector);
    assert_eq!(
        say(&bot, &connector, &web, "show").await.text(),
        proactive_bot::bot::EMPTY_LOG_TEXT
    );
    bot.stop().await.unwrap();
}
