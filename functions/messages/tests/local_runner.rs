//! The local runner end to end: the router on port 0, in-memory state, a Connector stand-in.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use proactive_bot::bot::{EMPTY_LOG_TEXT, HELP_TEXT, WELCOME_TEXT};
use proactive_bot::delivery::Delivered;
use proactive_bot::delivery::consumer::sqs_record;
use proactive_bot::jobs::JobNumber;
use proactive_bot::testing::connector::ConnectorStandIn;
use serde_json::json;
use support::*;

#[tokio::test]
async fn the_test_your_bot_procedure_notifies_the_original_conversation_once() {
    let connector = ConnectorStandIn::start().await;
    let (bot, _services) = start_bot(&[]).await;
    let a = Conversation::new(
        "8a684db0-5c7e-11ee-8c99-0242ac120002|livechat",
        "user-a",
        &connector,
    );
    let b = Conversation::new(
        "19:b0b@thread.skype;messageid=1490000000000",
        "user-b",
        &connector,
    );

    let empty = say(&bot, &connector, &b, "show").await;
    assert_eq!(empty.text(), EMPTY_LOG_TEXT);

    let first = job_number(&say(&bot, &connector, &a, "run").await);
    let second_reply = say(&bot, &connector, &a, "run").await;
    assert!(
        second_reply
            .text()
            .contains("We'll notify you when it's complete"),
        "{}",
        second_reply.text()
    );
    let second = job_number(&second_reply);
    assert_ne!(first, second);

    let table = say(&bot, &connector, &b, "show").await;
    assert!(
        table.text().contains(&first.to_string()) && table.text().contains(&second.to_string()),
        "{}",
        table.text()
    );
    assert!(table.text().contains("running"), "{}", table.text());

    connector.clear();
    let completing = say(&bot, &connector, &b, &format!("done {first}")).await;
    assert_eq!(completing.text(), format!("Completing job {first}."));

    // The proactive message arrives unprompted in A, with the defaults within a few seconds
    // (the digest window, and A's quiet period after its last `run`).
    let asked = std::time::Instant::now();
    let proactive = wait_for_proactive(&connector, &a, 1).await;
    let requests = connector.requests();
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        proactive.len(),
        1,
        "exactly one proactive message: {requests:#?}"
    );
    let message = &proactive[0];
    assert_eq!(message.text(), format!("Job {first} is complete."));
    assert_eq!(message.body["from"]["id"], "bot-id");
    assert_eq!(message.body["recipient"]["id"], "user-a");
    assert_eq!(message.body["conversation"]["id"], json!(a.id));
    assert!(message.body.get("replyToId").is_none());
    // And A's "Job N is running" reply now says it is complete, in place.
    let updates = updates(&connector, &a);
    assert_eq!(updates.len(), 1, "{requests:#?}");
    assert!(
        updates[0]
            .text()
            .starts_with(&format!("Job {first} is complete (started ")),
        "{}",
        updates[0].text()
    );
    assert_eq!(connector.requests().len(), 3, "nothing else was sent");

    let again = say(&bot, &connector, &b, &format!("done {first}")).await;
    assert_eq!(again.text(), format!("Job {first} is already complete."));
    let unknown = say(&bot, &connector, &b, "done 999999").await;
    assert!(
        unknown.text().starts_with("There is no job 999999."),
        "{}",
        unknown.text()
    );
    let bare = say(&bot, &connector, &b, "done").await;
    assert!(bare.text().starts_with("Which job?"), "{}", bare.text());
    let word = say(&bot, &connector, &b, "done abc").await;
    assert!(
        word.text().contains("\"abc\" is not a job number"),
        "{}",
        word.text()
    );

    let table = say(&bot, &connector, &b, "show").await;
    assert!(table.text().contains("notified"), "{}", table.text());
    bot.stop().await.unwrap();
}

#[tokio::test]
async fn a_new_member_is_welcomed_and_the_bot_joining_is_not() {
    let connector = ConnectorStandIn::start().await;
    let (bot, _services) = start_bot(&[]).await;
    let a = Conversation::new("conv|livechat", "user-a", &connector);
    let mut update = a.activity("conversationUpdate");
    update["membersAdded"] = json!([{"id": "bot-id"}]);
    assert_eq!(post(&bot, &update).await.0, 200);
    update["membersAdded"] = json!([{"id": "bot-id"}, {"id": "user-a", "name": "A"}]);
    assert_eq!(post(&bot, &update).await.0, 200);
    let requests = connector.wait_for(1, WAIT).await;
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert!(requests[0].text().starts_with(WELCOME_TEXT));
    assert!(requests[0].text().contains(HELP_TEXT));
}

#[tokio::test]
async fn anything_else_gets_help_and_a_message_without_text_too() {
    let connector = ConnectorStandIn::start().await;
    let (bot, _services) = start_bot(&[]).await;
    let a = Conversation::new("conv|livechat", "user-a", &connector);
    assert_eq!(
        say(&bot, &connector, &a, "what can you do?").await.text(),
        HELP_TEXT
    );
    let mut no_text = a.activity("message");
    no_text["attachments"] = json!([{"contentType": "image/png", "contentUrl": "http://x/y.png"}]);
    assert_eq!(post(&bot, &no_text).await.0, 200);
    let requests = connector.wait_for(2, WAIT).await;
    assert_eq!(requests[1].text(), HELP_TEXT);
}

#[tokio::test]
async fn the_job_complete_event_completes_without_a_reply() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[]).await;
    let a = Conversation::new("conv-a|livechat", "user-a", &connector);
    let system = Conversation::new("job-system", "job-runner", &connector);
    let first = job_number(&say(&bot, &connector, &a, "run").await);
    let second = job_number(&say(&bot, &connector, &a, "run").await);
    connector.clear();

    for (name, value) in [
        ("jobComplete", json!(first)),
        ("jobCompleted", json!(second.to_string())),
    ] {
        let mut event = system.activity("event");
        event["name"] = json!(name);
        event["value"] = value;
        assert_eq!(post(&bot, &event).await.0, 200);
    }
    // Unknown event names and jobs are ignored quietly.
    let mut other = system.activity("event");
    other["name"] = json!("somethingElse");
    other["value"] = json!(first);
    assert_eq!(post(&bot, &other).await.0, 200);
    let mut unknown = system.activity("event");
    unknown["name"] = json!("jobComplete");
    unknown["value"] = json!(999_999);
    assert_eq!(post(&bot, &unknown).await.0, 200);

    // Both completions, due within the digest window, arrive as one message; each "running"
    // reply is updated in place.
    let proactive = wait_for_proactive(&connector, &a, 1).await;
    let requests_now = connector.requests();
    assert_eq!(proactive.len(), 1, "{requests_now:#?}");
    assert_eq!(
        proactive[0].text(),
        format!("2 jobs are complete: {first}, {second}.")
    );
    assert_eq!(updates(&connector, &a).len(), 2, "{requests_now:#?}");
    assert_eq!(requests_now.len(), 3, "{requests_now:#?}");
    let page = services.jobs.list_recent(None, 10).await.unwrap();
    assert!(page.jobs.iter().all(|j| !j.status.is_running()));
}

#[tokio::test]
async fn fifty_concurrent_runs_get_fifty_distinct_numbers() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[]).await;
    let conversations: Vec<Conversation> = (0..50)
        .map(|i| Conversation::new(&format!("conv-{i}"), &format!("user-{i}"), &connector))
        .collect();
    let activities: Vec<_> = conversations.iter().map(|c| c.message("run")).collect();
    let runs = activities.iter().map(|activity| post(&bot, activity));
    for (status, body) in futures_util::future::join_all(runs).await {
        assert_eq!(status, 200, "{body}");
    }
    let replies = connector.wait_for(50, WAIT).await;
    let numbers: HashSet<u32> = replies.iter().map(job_number).collect();
    assert_eq!(numbers.len(), 50);
    let page = services.jobs.list_recent(None, 100).await.unwrap();
    assert_eq!(page.total, 50);
    let stored: HashSet<u32> = page.jobs.iter().map(|j| j.number.get()).collect();
    assert_eq!(stored, numbers);
}

#[tokio::test]
async fn the_same_delivery_message_consumed_twice_sends_one_message() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[]).await;
    let a = Conversation::new("conv-a|livechat", "user-a", &connector);
    let number = job_number(&say(&bot, &connector, &a, "run").await);
    say(&bot, &connector, &a, &format!("done {number}")).await;
    let proactive = wait_for_proactive(&connector, &a, 1).await;
    assert_eq!(proactive[0].text(), format!("Job {number} is complete."));
    connector.clear();

    // The message again (a redelivery, a redrive): the notification is Sent, nothing is sent.
    let job = services
        .jobs
        .get(JobNumber::new(number).unwrap())
        .await
        .unwrap()
        .unwrap();
    let notification = services
        .notifications
        .get(job.status.notification().unwrap())
        .await
        .unwrap()
        .unwrap();
    let body = notification.message().to_body();
    let results = services
        .engine
        .handle_batch(&[sqs_record("m-1", &body), sqs_record("m-2", &body)])
        .await;
    assert!(
        results.iter().all(|r| r.delivered == Delivered::Duplicate),
        "{results:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(connector.requests().len(), 0);
}
