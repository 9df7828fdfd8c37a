//! The notify API's storage on moto, over DynamoDB's real wire protocol, on the template's
//! `DeliveryTable`: notify requests (`req#`) and the `NotificationsByBatch` index a request's
//! progress is counted from.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use proactive_bot::adapters::dynamodb_delivery::DynamoDeliveryStore;
use proactive_bot::delivery::{
    Content, Notification, NotificationId, NotificationStore, Outcome, Progress, Source, StoreError,
};
use proactive_bot::notify::{
    CreatedRequest, FanOut, NotifyRequest, RequestStore, Target, recipient_id,
};
use proactive_bot::testing::moto::{self, MotoServer, RequestCounter};

struct Fixture {
    store: DynamoDeliveryStore,
    client: aws_sdk_dynamodb::Client,
    counter: RequestCounter,
    table: String,
}

async fn fixture(name: &str) -> Fixture {
    let moto = MotoServer::shared();
    let resources = moto.create_resources(name).await;
    let (config, counter) = moto.sdk_config().await;
    let client = moto::dynamodb_client(&config, &counter);
    Fixture {
        store: DynamoDeliveryStore::new(
            client.clone(),
            &resources.delivery_table_name,
            chrono::Duration::days(30),
        ),
        client,
        counter,
        table: resources.delivery_table_name,
    }
}

fn request(id: &str) -> NotifyRequest {
    NotifyRequest {
        id: id.to_owned(),
        created_at: chrono::DateTime::from_timestamp_millis(1_790_000_000_000).unwrap(),
        idempotency_key: Some("build-42".to_owned()),
        correlation_id: "c0ffee".to_owned(),
        target: Target::Conversations {
            ids: vec!["a".into(), "b".into()],
        },
        content: Content::text("build 42 passed"),
        urgent: true,
        recipients: 2,
        fan_out: FanOut::default(),
    }
}

#[tokio::test]
async fn a_request_is_created_once_and_its_fan_out_moves_in_one_request_each() {
    let f = fixture("requests").await;
    let first = request("k-0001");
    f.counter.reset();
    assert_eq!(
        RequestStore::create(&f.store, &first).await.unwrap(),
        CreatedRequest::New
    );
    assert_eq!(f.counter.total(), 1, "one PutItem");

    let mut other = request("k-0001");
    other.content = Content::text("something else");
    f.counter.reset();
    match RequestStore::create(&f.store, &other).await.unwrap() {
        CreatedRequest::Existing(stored) => assert_eq!(*stored, first, "never overwritten"),
        CreatedRequest::New => panic!("created twice"),
    }
    assert_eq!(
        f.counter.total(),
        1,
        "the refusal brings the stored one back"
    );

    assert_eq!(
        RequestStore::get(&f.store, "k-0001").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        RequestStore::get(&f.store, "k-unknown").await.unwrap(),
        None
    );

    let fan_out = FanOut {
        cursor: Some("opaque".into()),
        reached: 250,
        not_registered: vec!["stranger".into()],
        done: false,
    };
    f.counter.reset();
    f.store.save_fan_out("k-0001", &fan_out).await.unwrap();
    assert_eq!(f.counter.total(), 1, "one UpdateItem");
    let stored = RequestStore::get(&f.store, "k-0001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.fan_out, fan_out);
    assert_eq!(
        stored.content, first.content,
        "the request itself never changes"
    );
    assert!(
        f.store.save_fan_out("k-missing", &fan_out).await.is_err(),
        "no request, no fan-out"
    );

    let item = f
        .client
        .get_item()
        .table_name(&f.table)
        .key("pk", AttributeValue::S("req#k-0001".into()))
        .send()
        .await
        .unwrap()
        .item()
        .cloned()
        .unwrap();
    let expires: i64 = item["expiresAt"].as_n().unwrap().parse().unwrap();
    assert_eq!(
        expires,
        (first.created_at + chrono::Duration::days(30)).timestamp(),
        "expires with the retention, from its creation"
    );
}

#[tokio::test]
async fn a_corrupt_request_is_reported_not_panicked_on() {
    let f = fixture("requests-corrupt").await;
    f.client
        .put_item()
        .table_name(&f.table)
        .item("pk", AttributeValue::S("req#k-bad".into()))
        .item("request", AttributeValue::S("{not json".into()))
        .item("fanOut", AttributeValue::S("{}".into()))
        .send()
        .await
        .unwrap();
    match RequestStore::get(&f.store, "k-bad").await {
        Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, "req#k-bad"),
        other => panic!("{other:?}"),
    }
}

fn recipient(batch: &str, conversation: &str) -> Notification {
    let mut notification = Notification::new(
        recipient_id(batch, conversation),
        Source::Broadcast {
            id: batch.to_owned(),
        },
        proactive_bot::testing::reference("https://smba.trafficmanager.net/teams/", conversation),
        Content::text("hello"),
        Utc::now(),
    );
    notification.batch = Some(batch.to_owned());
    notification
}

#[tokio::test]
async fn a_batch_lists_its_notifications_by_page_with_their_progress() {
    let f = fixture("batches").await;
    for n in 0..25 {
        NotificationStore::create(
            &f.store,
            &recipient("r-batch", &format!("conversation-{n:02}")),
        )
        .await
        .unwrap();
    }
    // Another batch and a notification of no batch stay out of the listing.
    NotificationStore::create(&f.store, &recipient("r-other", "conversation-00"))
        .await
        .unwrap();
    let mut lone = recipient("r-none", "x");
    lone.batch = None;
    lone.id = NotificationId::parse("job-1-1").unwrap();
    NotificationStore::create(&f.store, &lone).await.unwrap();

    let sent = recipient_id("r-batch", "conversation-03");
    f.store
        .record(
            &sent,
            Outcome::Sent {
                activity_id: Some("a1".into()),
            },
            Utc::now(),
        )
        .await
        .unwrap();
    let failed = recipient_id("r-batch", "conversation-04");
    f.store
        .record(
            &failed,
            Outcome::Failed {
                reason: "403 BotNotInConversationRoster".into(),
            },
            Utc::now(),
        )
        .await
        .unwrap();
    let gave_up = recipient_id("r-batch", "conversation-05");
    f.store
        .record(
            &gave_up,
            Outcome::GaveUp {
                last_error: "503".into(),
                attempted: true,
            },
            Utc::now(),
        )
        .await
        .unwrap();

    let mut seen = BTreeSet::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = f
            .store
            .list_batch("r-batch", after.as_deref(), 10)
            .await
            .unwrap();
        pages += 1;
        assert!(page.entries.len() <= 10);
        for entry in page.entries {
            let progress = match entry.conversation.as_str() {
                "conversation-03" => Progress::Sent,
                "conversation-04" => Progress::Failed {
                    reason: "403 BotNotInConversationRoster".into(),
                },
                "conversation-05" => Progress::Failed {
                    reason: "gave up: 503".into(),
                },
                _ => Progress::Pending,
            };
            assert_eq!(entry.progress, progress, "{}", entry.conversation);
            assert_eq!(entry.id, recipient_id("r-batch", &entry.conversation));
            assert!(seen.insert(entry.conversation), "listed once");
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert!(pages >= 3, "paged: {pages}");
    assert!(
        f.store
            .list_batch("r-unknown", None, 10)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    assert!(matches!(
        f.store.list_batch("r-batch", Some("garbage"), 10).await,
        Err(StoreError::Corrupt { .. })
    ));
}
