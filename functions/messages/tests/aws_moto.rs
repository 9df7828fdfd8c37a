//! The "Test your bot" procedure on DynamoDB and SQS over the real AWS wire protocol (moto's
//! server), with the AWS requests of every operation counted.

mod support;

use std::time::Duration;

use messages::local::LocalBot;
use proactive_bot::auth::AuthConfig;
use proactive_bot::config::Settings;
use proactive_bot::delivery::DeliveryState;
use proactive_bot::jobs::{JobNumber, JobStatus};
use proactive_bot::testing::connector::ConnectorStandIn;
use proactive_bot::testing::moto::{self, MotoServer, RequestCounter};
use proactive_bot::wiring::Services;
use support::*;

struct AwsBot {
    bot: LocalBot,
    services: Services,
    counter: RequestCounter,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

async fn start_on_moto(prefix: &str) -> AwsBot {
    let moto = MotoServer::shared();
    let resources = moto.create_resources(prefix).await;
    let (config, counter) = moto.sdk_config().await;
    let ports = resources.ports(&config, &counter);
    // The floor: no digest window and no holding, so every request counted below is one the
    // procedure itself needs (holding adds one registry write per turn, and a held
    // notification a note and a second receive; the window a second receive).
    let settings = Settings::from_lookup(|name| {
        matches!(name, "DIGEST_WINDOW_SECONDS" | "QUIET_SECONDS").then(|| "0".to_owned())
    })
    .unwrap();
    let services = Services::with_ports(&AuthConfig::default(), &settings, ports).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bot = LocalBot::start(&services, listener).unwrap();
    AwsBot {
        bot,
        services,
        counter,
        sqs: moto::sqs_client(&config, &RequestCounter::default()),
        queue_url: resources.queue_url,
    }
}

#[tokio::test]
async fn the_test_your_bot_procedure_runs_on_dynamodb_and_sqs_at_the_request_floor() {
    let connector = ConnectorStandIn::start().await;
    let aws = start_on_moto("e2e").await;
    let (bot, counter) = (&aws.bot, &aws.counter);
    let a = Conversation::new(
        "19:a@thread.skype;messageid=1490000000000",
        "user-a",
        &connector,
    );
    let b = Conversation::new("b|livechat", "user-b", &connector);

    counter.reset();
    let first = job_number(&say(bot, &connector, &a, "run").await);
    assert_eq!(
        bot_requests(counter),
        vec![
            ("DynamoDB.PutItem".to_owned(), 1),
            ("DynamoDB.UpdateItem".to_owned(), 2)
        ],
        "run = the job's write and its reply's id (1 update), and the conversation's first \
         message registers it (1 update)"
    );
    counter.reset();
    let second = job_number(&say(bot, &connector, &a, "run").await);
    assert_ne!(first, second);
    assert_eq!(
        bot_requests(counter),
        vec![
            ("DynamoDB.PutItem".to_owned(), 1),
            ("DynamoDB.UpdateItem".to_owned(), 1)
        ],
        "run = the job's two writes; a conversation registered moments ago is not written again"
    );

    counter.reset();
    let table = say(bot, &connector, &b, "show").await;
    assert!(
        table.text().contains(&first.to_string()) && table.text().contains(&second.to_string()),
        "{}",
        table.text()
    );
    assert_eq!(
        counter.count("DynamoDB", "Query"),
        2,
        "{:?}",
        counter.snapshot()
    );
    assert_eq!(counter.count("DynamoDB", "Scan"), 0);
    assert_eq!(
        counter.count("DynamoDB", "UpdateItem"),
        1,
        "b's first message registers it"
    );
    assert_eq!(counter.service_total("SQS"), 0);

    connector.clear();
    counter.reset();
    let completing = say(bot, &connector, &b, &format!("done {first}")).await;
    assert_eq!(completing.text(), format!("Completing job {first}."));
    let proactive = wait_for_proactive(&connector, &a, 1).await;
    assert_eq!(proactive.len(), 1, "{:#?}", connector.requests());
    assert_eq!(proactive[0].text(), format!("Job {first} is complete."));
    assert_eq!(proactive[0].body["recipient"]["id"], "user-a");
    // The engine records both deliveries (the message, and the update of the "running"
    // reply), then the poller deletes their messages (in one batch or two).
    wait_until(|| async {
        counter.count("DynamoDB", "UpdateItem") >= 5
            && counter.count("SQS", "DeleteMessageBatch") >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = counter.snapshot();
    assert_eq!(
        updates(&connector, &a).len(),
        1,
        "{:#?}",
        connector.requests()
    );
    // The turn: read the job, create the two notifications, queue them, complete the job (b
    // is registered already). Each delivery: read the conversation's registration, and the
    // conversation's send log unless this process wrote it last (it keeps its copy). The
    // message and the update are in message groups of their own, so two pollers may deliver
    // them at once: then both read the log (one more GetItem), and on DynamoDB the second
    // write of it is refused and read again (one more of each; on moto, whose conditional
    // writes are not atomic, it may also go through).
    let gets = counts.get("DynamoDB.GetItem").copied().unwrap_or(0);
    let log_reads = gets.saturating_sub(3);
    assert!((1..=3).contains(&log_reads), "{counts:?}");
    assert_eq!(
        counts.get("SQS.SendMessage"),
        Some(&2),
        "done queues two deliveries: {counts:?}"
    );
    // Each delivery: one conditional write of the send log, the claim and the record (two
    // conditional updates), beside the turn's job update. A log correction (a PutItem) is
    // written only when a send left later than its slot (a loaded machine can make moto
    // that slow).
    let puts = counts.get("DynamoDB.PutItem").copied().unwrap_or(0);
    assert!((4..=6).contains(&puts), "{counts:?}");
    // A log read beyond the first is either the overlap's or a refused write's.
    assert!(log_reads <= 1 + (puts - 4) + 1, "{counts:?}");
    assert_eq!(counts.get("DynamoDB.UpdateItem"), Some(&5), "{counts:?}");
    assert_eq!(counts.get("DynamoDB.Scan"), None);
    let deletes = counts.get("SQS.DeleteMessageBatch").copied().unwrap_or(0);
    assert!((1..=2).contains(&deletes), "{counts:?}");
    let number = JobNumber::new(first).unwrap();
    let job = aws.services.jobs.get(number).await.unwrap().unwrap();
    let id = job.status.notification().expect("complete").clone();
    let stored = aws.services.notifications.get(&id).await.unwrap().unwrap();
    assert!(
        matches!(stored.state, DeliveryState::Sent { .. }),
        "{stored:?}"
    );

    counter.reset();
    let again = say(bot, &connector, &b, &format!("done {first}")).await;
    assert_eq!(again.text(), format!("Job {first} is already complete."));
    let unknown = say(bot, &connector, &b, "done 999999").await;
    assert!(unknown.text().starts_with("There is no job 999999."));
    assert_eq!(
        counter.count("SQS", "SendMessage"),
        0,
        "no SQS message when nothing is to be completed"
    );
    assert_eq!(counter.count("DynamoDB", "GetItem"), 2);
    counter.reset();
    let bare = say(bot, &connector, &b, "done").await;
    assert!(bare.text().starts_with("Which job?"));
    assert_eq!(
        counter.service_total("DynamoDB") + counter.count("SQS", "SendMessage"),
        0,
        "asking for the number costs nothing"
    );

    // The job is in the table as the turn left it, and `show` reports the delivery.
    assert!(matches!(job.status, JobStatus::Complete { .. }));
    assert_eq!(job.reference.conversation.id, a.id);
    let table = say(bot, &connector, &b, "show").await;
    assert!(
        table.text().contains("complete, notified"),
        "{}",
        table.text()
    );

    // A redelivered message (the same body again on SQS, past the queue's deduplication)
    // sends nothing.
    connector.clear();
    let stored = aws.services.notifications.get(&id).await.unwrap().unwrap();
    let message = stored.message();
    aws.sqs
        .send_message()
        .queue_url(&aws.queue_url)
        .message_body(message.to_body())
        .message_group_id(message.group())
        .message_deduplication_id("a-redelivery")
        .send()
        .await
        .unwrap();
    counter.reset();
    wait_until(|| async { counter.count("DynamoDB", "UpdateItem") >= 1 }).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        connector.requests().is_empty(),
        "duplicate sent a message: {:#?}",
        connector.requests()
    );
    aws.bot.stop().await.unwrap();
}

/// The requests counted, less the pollers' `ReceiveMessage` (Lambda's event source mapping
/// makes those in AWS, not the bot).
fn bot_requests(counter: &RequestCounter) -> Vec<(String, usize)> {
    counter
        .snapshot()
        .into_iter()
        .filter(|(operation, _)| operation != "SQS.ReceiveMessage")
        .collect()
}

async fn wait_until<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
