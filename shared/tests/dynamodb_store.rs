//! The DynamoDB job store against moto, over DynamoDB's real wire protocol, on the table
//! template.yaml defines (created by scripts/local_resources.py).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use proactive_bot::adapters::dynamodb::DynamoJobStore;
use proactive_bot::delivery::NotificationId;
use proactive_bot::jobs::{CompleteOutcome, Job, JobNumber, JobStatus, JobStore, StoreError};
use proactive_bot::schema::ConversationReference;
use proactive_bot::testing::moto::{self, MotoServer, RequestCounter};
use serde_json::json;

/// The tenant of [`teams_job`]'s conversation.
const TENANT: &str = "72f988bf-0000-0000-0000-000000000000";

struct Fixture {
    store: DynamoJobStore,
    client: aws_sdk_dynamodb::Client,
    counter: RequestCounter,
    table: String,
}

async fn fixture(name: &str) -> Fixture {
    let moto = MotoServer::shared();
    let resources = moto.create_resources(name).await;
    let (config, counter) = moto.sdk_config().await;
    let client = moto::dynamodb_client(&config, &counter);
    let store = DynamoJobStore::new(
        client.clone(),
        &resources.table_name,
        DynamoJobStore::DEFAULT_RETENTION,
    );
    Fixture {
        store,
        client,
        counter,
        table: resources.table_name,
    }
}

impl Fixture {
    async fn raw_item(&self, number: JobNumber) -> HashMap<String, AttributeValue> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("jobNumber", AttributeValue::N(number.to_string()))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem")
            .item()
            .cloned()
            .expect("the item exists")
    }
}

fn at(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).expect("a valid instant")
}

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, in ms

fn number(n: u32) -> JobNumber {
    JobNumber::new(n).expect("a job number")
}

/// A job started in a Teams channel thread, whose reference carries fields this version does
/// not model.
fn teams_job(n: u32, created_ms: i64) -> Job {
    let mut reference: ConversationReference = serde_json::from_value(json!({
        "activityId": "1712345678901",
        "user": {"id": "29:1abc", "name": "Ada", "aadObjectId": "00000000-0000-0000-0000-000000000001", "userRole": "user"},
        "bot": {"id": "28:bot-app-id", "name": "Jobs"},
        "conversation": {
            "id": "19:f00dfeed@thread.skype;messageid=1",
            "isGroup": true,
            "conversationType": "channel",
            "tenantId": TENANT,
            "futureConversationField": {"nested": [1, 2, 3]}
        },
        "channelId": "msteams",
        "serviceUrl": "https://smba.trafficmanager.net/emea/",
        "locale": "en-GB",
        "futureReferenceField": "kept"
    }))
    .expect("a reference");
    reference.conversation.id = format!("19:f00dfeed{n}@thread.skype;messageid=1");
    Job::new_running(number(n), reference, at(created_ms))
}

#[tokio::test]
async fn a_created_job_reads_back_unchanged_with_unknown_reference_fields_and_a_teams_thread_id() {
    let f = fixture("roundtrip").await;
    let job = teams_job(123_456, T0 + 7);

    f.store.create(&job).await.expect("create");
    let read = f
        .store
        .get(job.number)
        .await
        .expect("get")
        .expect("the job exists");

    assert_eq!(read, job);
    assert_eq!(
        read.reference.conversation.id,
        "19:f00dfeed123456@thread.skype;messageid=1"
    );
    assert_eq!(read.reference.extra["futureReferenceField"], "kept");
    assert_eq!(
        read.reference.conversation.extra["futureConversationField"],
        json!({"nested": [1, 2, 3]})
    );
    assert_eq!(read.requester.extra["userRole"], "user");
    let item = f.raw_item(job.number).await;
    // Listed under its tenant: `show` in another tenant never reads it.
    assert_eq!(item["listKey"], AttributeValue::S(format!("job#{TENANT}")));
    assert_eq!(item["createdAt"], AttributeValue::N((T0 + 7).to_string()));
    assert_eq!(item["state"], AttributeValue::S("running".into()));
    assert!(
        !item.contains_key("expiresAt"),
        "a running job never expires"
    );
}

#[tokio::test]
async fn creating_an_existing_number_is_a_duplicate_and_leaves_the_original_unchanged() {
    let f = fixture("duplicate").await;
    let original = teams_job(200_001, T0);
    f.store.create(&original).await.expect("create");
    let mut impostor = teams_job(200_001, T0 + 60_000);
    impostor.reference.service_url = "https://attacker.example/".into();

    f.counter.reset();
    let error = f
        .store
        .create(&impostor)
        .await
        .expect_err("a second create must fail");

    assert!(
        matches!(error, StoreError::Duplicate(n) if n == original.number),
        "{error:?}"
    );
    assert_eq!(f.counter.count("DynamoDB", "PutItem"), 1);
    assert_eq!(
        f.store.get(original.number).await.expect("get"),
        Some(original)
    );
}

#[tokio::test]
async fn getting_an_unknown_number_is_none() {
    let f = fixture("unknown").await;
    assert_eq!(f.store.get(number(999_999)).await.expect("get"), None);
}

#[tokio::test]
async fn an_item_missing_its_reference_is_reported_corrupt_without_a_panic() {
    let f = fixture("corrupt").await;
    f.client
        .put_item()
        .table_name(&f.table)
        .item("jobNumber", AttributeValue::N("424242".into()))
        .item("listKey", AttributeValue::S(format!("job#{TENANT}")))
        .item("createdAt", AttributeValue::N(T0.to_string()))
        .item("state", AttributeValue::S("running".into()))
        .item("requester", AttributeValue::S("{}".into()))
        .send()
        .await
        .expect("PutItem");

    let error = f
        .store
        .get(number(424_242))
        .await
        .expect_err("a corrupt item is an error");
    match &error {
        StoreError::Corrupt { number, detail } => {
            assert_eq!(number, "424242");
            assert!(detail.contains("reference"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A completion of it is refused the same way, and listing leaves it out.
    assert!(matches!(
        f.store
            .complete(number(424_242), &notification("n"), at(T0))
            .await,
        Err(StoreError::Corrupt { .. })
    ));
    f.store
        .create(&teams_job(100_001, T0 + 1))
        .await
        .expect("create");
    let page = f.store.list_recent(Some(TENANT), 10).await.expect("list");
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(page.total, 2);
}

#[tokio::test]
async fn listing_25_jobs_with_limit_10_returns_the_10_most_recent_in_order_by_query_not_scan() {
    let f = fixture("list").await;
    // Created in shuffled order: the index, not insertion order, sorts them.
    let mut numbers: Vec<u32> = (1..=25).collect();
    fastrand::shuffle(&mut numbers);
    for n in numbers {
        f.store
            .create(&teams_job(300_000 + n, T0 + i64::from(n) * 1_000))
            .await
            .expect("create");
    }

    f.counter.reset();
    let page = f.store.list_recent(Some(TENANT), 10).await.expect("list");

    let listed: Vec<u32> = page.jobs.iter().map(|j| j.number.get() - 300_000).collect();
    assert_eq!(listed, (16..=25).rev().collect::<Vec<_>>());
    assert_eq!(page.total, 25);
    assert_eq!(
        f.counter.count("DynamoDB", "Query"),
        2,
        "{:?}",
        f.counter.snapshot()
    );
    assert_eq!(f.counter.count("DynamoDB", "Scan"), 0);
    assert_eq!(f.counter.total(), 2, "{:?}", f.counter.snapshot());

    let all = f.store.list_recent(Some(TENANT), 100).await.expect("list");
    assert_eq!((all.jobs.len(), all.total), (25, 25));
    let none = f.store.list_recent(Some(TENANT), 0).await.expect("list");
    assert_eq!((none.jobs.len(), none.total), (0, 25));
}

fn notification(id: &str) -> NotificationId {
    NotificationId::parse(id).expect("a notification id")
}

#[tokio::test]
async fn completing_a_running_job_records_its_notification_and_ttl_in_one_request() {
    let f = fixture("complete").await;
    let job = teams_job(400_001, T0);
    f.store.create(&job).await.expect("create");

    f.counter.reset();
    let outcome = f
        .store
        .complete(job.number, &notification("job-400001-1"), at(T0 + 10_000))
        .await
        .expect("complete");

    assert_eq!(f.counter.total(), 1, "{:?}", f.counter.snapshot());
    assert_eq!(f.counter.count("DynamoDB", "UpdateItem"), 1);
    let CompleteOutcome::Completed(completed) = outcome else {
        panic!("expected Completed, got {outcome:?}");
    };
    let expected = JobStatus::Complete {
        completed_at: at(T0 + 10_000),
        notification: notification("job-400001-1"),
    };
    assert_eq!(completed.status, expected);
    assert_eq!(completed.reference, job.reference);
    assert_eq!(
        f.store
            .get(job.number)
            .await
            .expect("get")
            .expect("job")
            .status,
        expected
    );
    let item = f.raw_item(job.number).await;
    let expires: i64 = match item.get("expiresAt") {
        Some(AttributeValue::N(n)) => n.parse().unwrap(),
        other => panic!("no TTL: {other:?}"),
    };
    assert_eq!(
        expires,
        (at(T0 + 10_000) + DynamoJobStore::DEFAULT_RETENTION).timestamp(),
        "epoch seconds: completion + retention"
    );
}

#[tokio::test]
async fn completing_twice_is_already_complete_in_one_request_and_keeps_the_first() {
    let f = fixture("twice").await;
    let job = teams_job(400_002, T0);
    f.store.create(&job).await.expect("create");
    f.store
        .complete(job.number, &notification("first"), at(T0 + 10_000))
        .await
        .expect("complete");

    f.counter.reset();
    let outcome = f
        .store
        .complete(job.number, &notification("second"), at(T0 + 20_000))
        .await
        .expect("complete again");
    assert_eq!(f.counter.total(), 1, "{:?}", f.counter.snapshot());
    let CompleteOutcome::AlreadyComplete(stored) = outcome else {
        panic!("expected AlreadyComplete, got {outcome:?}");
    };
    assert_eq!(stored.status.notification(), Some(&notification("first")));
}

#[tokio::test]
async fn completing_an_unknown_number_is_not_found_in_one_request_and_creates_nothing() {
    let f = fixture("complete-unknown").await;
    f.counter.reset();
    assert_eq!(
        f.store
            .complete(number(777_777), &notification("n"), at(T0))
            .await
            .expect("complete"),
        CompleteOutcome::NotFound
    );
    assert_eq!(f.counter.total(), 1);
    assert_eq!(f.store.get(number(777_777)).await.expect("get"), None);
}

#[tokio::test]
async fn running_jobs_never_expire() {
    let f = fixture("no-ttl").await;
    let job = teams_job(400_003, T0);
    f.store.create(&job).await.expect("create");
    assert!(!f.raw_item(job.number).await.contains_key("expiresAt"));
}

#[tokio::test]
async fn each_tenant_lists_only_its_own_jobs_and_a_running_reply_is_remembered() {
    let f = fixture("tenants").await;
    let mut other = teams_job(500_002, T0 + 2);
    other.reference.conversation.tenant_id = Some("other-tenant".into());
    let mut none = teams_job(500_003, T0 + 3);
    none.reference.conversation.tenant_id = None;
    for job in [&teams_job(500_001, T0 + 1), &other, &none] {
        f.store.create(job).await.expect("create");
    }
    let listed = |page: proactive_bot::jobs::JobPage| {
        (
            page.jobs.iter().map(|j| j.number.get()).collect::<Vec<_>>(),
            page.total,
        )
    };
    assert_eq!(
        listed(f.store.list_recent(Some(TENANT), 10).await.unwrap()),
        (vec![500_001], 1)
    );
    assert_eq!(
        listed(f.store.list_recent(Some("other-tenant"), 10).await.unwrap()),
        (vec![500_002], 1)
    );
    assert_eq!(
        listed(f.store.list_recent(None, 10).await.unwrap()),
        (vec![500_003], 1)
    );
    assert_eq!(
        listed(f.store.list_recent(Some("nobody"), 10).await.unwrap()),
        (vec![], 0)
    );

    // The running reply's id: one conditional update, read back with the job.
    f.counter.reset();
    assert!(
        f.store
            .announce(number(500_001), "1:reply-id")
            .await
            .unwrap()
    );
    assert_eq!(f.counter.count("DynamoDB", "UpdateItem"), 1);
    let read = f.store.get(number(500_001)).await.unwrap().unwrap();
    assert_eq!(read.announcement.as_deref(), Some("1:reply-id"));
    assert!(read.status.is_running(), "nothing else changed");
    assert!(
        !f.store.announce(number(500_999), "1:x").await.unwrap(),
        "an unknown job is not created by it"
    );
    assert!(f.store.get(number(500_999)).await.unwrap().is_none());
}
