//! The "Test your bot" procedure on DynamoDB and SQS over the real AWS wire protocol (moto's
//! server), with the AWS requests of every operation counted.

mod support;

use std::sync::Arc;
use std::time::Duration;

use messages::local::LocalBot;
use proactive_bot::adapters::dynamodb::DynamoJobStore;
use proactive_bot::adapters::sqs::{SqsCompletionQueue, SqsPoller};
use proactive_bot::auth::AuthConfig;
use proactive_bot::jobs::{Completion, JobNumber, JobStatus};
use proactive_bot::testing::connector::ConnectorStandIn;
use proactive_bot::testing::moto::{self, MotoServer, RequestCounter};
use proactive_bot::wiring::{QueueSource, Services};
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
    // The poller stands in for Lambda's event source mapping; its requests are not the bot's.
    let (poll_config, _) = moto.sdk_config().await;
    let store = DynamoJobStore::new(
        moto::dynamodb_client(&config, &counter),
        resources.table_name.clone(),
        DynamoJobStore::DEFAULT_RETENTION,
    );
    let sqs = moto::sqs_client(&config, &counter);
    let queue = SqsCompletionQueue::new(sqs.clone(), resources.queue_url.clone());
    let services =
        Services::with_ports(&AuthConfig::default(), Arc::new(store), Arc::new(queue)).unwrap();
    let poller = SqsPoller::new(
        moto::sqs_client(&poll_config, &RequestCounter::default()),
        resources.queue_url.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bot = LocalBot::start(&services, QueueSource::Sqs(poller), listener).unwrap();
    AwsBot {
        bot,
        services,
        counter,
        sqs,
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
        counter.snapshot().into_iter().collect::<Vec<_>>(),
        vec![("DynamoDB.PutItem".to_owned(), 1)],
        "run = 1 DynamoDB write"
    );
    let second = job_number(&say(bot, &connector, &a, "run").await);
    assert_ne!(first, second);

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
    assert_eq!(counter.service_total("SQS"), 0);

    connector.clear();
    counter.reset();
    let completing = say(bot, &connector, &b, &format!("done {first}")).await;
    assert_eq!(completing.text(), format!("Completing job {first}."));
    let requests = connector.wait_for(2, Duration::from_secs(30)).await;
    let proactive: Vec<_> = requests
        .iter()
        .filter(|r| r.path == a.proactive_path())
        .collect();
    assert_eq!(proactive.len(), 1, "{requests:#?}");
    assert_eq!(proactive[0].text(), format!("Job {first} is complete."));
    assert_eq!(proactive[0].body["recipient"]["id"], "user-a");
    // Let the worker record the delivery.
    let number = JobNumber::new(first).unwrap();
    wait_until(|| async { counter.count("DynamoDB", "UpdateItem") >= 2 }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counts = counter.snapshot();
    assert_eq!(
        counts.get("DynamoDB.GetItem"),
        Some(&1),
        "done reads the job once: {counts:?}"
    );
    assert_eq!(
        counts.get("SQS.SendMessage"),
        Some(&1),
        "done queues one completion: {counts:?}"
    );
    assert_eq!(
        counts.get("DynamoDB.UpdateItem"),
        Some(&2),
        "a completion = 2 DynamoDB requests: {counts:?}"
    );
    assert_eq!(counter.total(), 4, "{counts:?}");

    counter.reset();
    let again = say(bot, &connector, &b, &format!("done {first}")).await;
    assert_eq!(again.text(), format!("Job {first} is already complete."));
    let unknown = say(bot, &connector, &b, "done 999999").await;
    assert!(unknown.text().starts_with("There is no job 999999."));
    assert_eq!(
        counter.service_total("SQS"),
        0,
        "no SQS request when nothing is to be completed"
    );
    assert_eq!(counter.count("DynamoDB", "GetItem"), 2);
    counter.reset();
    let bare = say(bot, &connector, &b, "done").await;
    assert!(bare.text().starts_with("Which job?"));
    assert_eq!(counter.total(), 0, "asking for the number costs nothing");

    // The job is in the table, as the worker left it.
    let stored = aws.services.store.get(number).await.unwrap().unwrap();
    assert!(matches!(stored.status, JobStatus::Notified { .. }));
    assert_eq!(stored.reference.conversation.id, a.id);

    // A redelivered completion (the same body again on SQS) sends nothing.
    connector.clear();
    counter.reset();
    let duplicate = Completion::new(number, a.id.clone());
    aws.sqs
        .send_message()
        .queue_url(&aws.queue_url)
        .message_body(duplicate.to_body())
        .send()
        .await
        .unwrap();
    wait_until(|| async { counter.count("DynamoDB", "UpdateItem") >= 1 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        connector.requests().is_empty(),
        "duplicate sent a message: {:#?}",
        connector.requests()
    );
    assert_eq!(
        counter.count("DynamoDB", "UpdateItem"),
        1,
        "a duplicate costs one conditional write"
    );
    aws.bot.stop().await.unwrap();
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
