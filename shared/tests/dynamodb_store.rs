//! The DynamoDB job store against moto, over DynamoDB's real wire protocol, on the table
//! template.yaml defines (created by scripts/local_resources.py).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, Utc};
use proactive_bot::adapters::dynamodb::DynamoJobStore;
use proactive_bot::jobs::{
    CompleteOutcome, DeliveryOutcome, Job, JobNumber, JobStatus, JobStore, StoreError,
};
use proactive_bot::schema::ConversationReference;
use proactive_bot::testing::moto::{self, MotoServer, RequestCounter};
use serde_json::json;

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
            "tenantId": "72f988bf-0000-0000-0000-000000000000",
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
    assert_eq!(item["listKey"], AttributeValue::S("job".into()));
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
        .item("listKey", AttributeValue::S("job".into()))
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
            .complete_if_running(number(424_242), at(T0), at(T0 + 1))
            .await,
        Err(StoreError::Corrupt { .. })
    ));
    f.store
        .create(&teams_job(100_001, T0 + 1))
        .await
        .expect("create");
    let page = f.store.list_recent(10).await.expect("list");
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
    let page = f.store.list_recent(10).await.expect("list");

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

    let all = f.store.list_recent(100).await.expect("list");
    assert_eq!((all.jobs.len(), all.total), (25, 25));
    let none = f.store.list_recent(0).await.expect("list");
    assert_eq!((none.jobs.len(), none.total), (0, 25));
}

#[tokio::test]
async fn completing_a_running_job_leases_it_in_one_request() {
    let f = fixture("complete").await;
    let job = teams_job(400_001, T0);
    f.store.create(&job).await.expect("create");

    f.counter.reset();
    let outcome = f
        .store
        .complete_if_running(job.number, at(T0 + 10_000), at(T0 + 70_000))
        .await
        .expect("complete");

    assert_eq!(f.counter.total(), 1, "{:?}", f.counter.snapshot());
    assert_eq!(f.counter.count("DynamoDB", "UpdateItem"), 1);
    let CompleteOutcome::Completed(completed) = outcome else {
        panic!("expected Completed, got {outcome:?}");
    };
    let expected = JobStatus::Completing {
        completed_at: at(T0 + 10_000),
        lease_until: at(T0 + 70_000),
        attempts: 1,
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
}

#[tokio::test]
async fn completing_under_a_live_lease_is_already_complete_in_one_request() {
    let f = fixture("live-lease").await;
    let job = teams_job(400_002, T0);
    f.store.create(&job).await.expect("create");
    f.store
        .complete_if_running(job.number, at(T0 + 10_000), at(T0 + 70_000))
        .await
        .expect("complete");

    f.counter.reset();
    let outcome = f
        .store
        .complete_if_running(job.number, at(T0 + 20_000), at(T0 + 80_000))
        .await
        .expect("complete again");

    assert_eq!(f.counter.total(), 1, "{:?}", f.counter.snapshot());
    let CompleteOutcome::AlreadyComplete(stored) = outcome else {
        panic!("expected AlreadyComplete, got {outcome:?}");
    };
    assert_eq!(
        stored.status,
        JobStatus::Completing {
            completed_at: at(T0 + 10_000),
            lease_until: at(T0 + 70_000),
            attempts: 1,
        }
    );
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_keeping_completed_at_and_counting_the_attempt() {
    let f = fixture("takeover").await;
    let job = teams_job(400_003, T0);
    f.store.create(&job).await.expect("create");
    f.store
        .complete_if_running(job.number, at(T0 + 10_000), at(T0 + 70_000))
        .await
        .expect("complete");

    f.counter.reset();
    let outcome = f
        .store
        .complete_if_running(job.number, at(T0 + 100_000), at(T0 + 160_000))
        .await
        .expect("take over");

    assert_eq!(f.counter.total(), 1, "{:?}", f.counter.snapshot());
    let CompleteOutcome::Completed(taken) = outcome else {
        panic!("expected a takeover, got {outcome:?}");
    };
    assert_eq!(
        taken.status,
        JobStatus::Completing {
            completed_at: at(T0 + 10_000),
            lease_until: at(T0 + 160_000),
            attempts: 2,
        }
    );
}

#[tokio::test]
async fn completing_an_unknown_number_is_not_found_in_one_request_and_creates_nothing() {
    let f = fixture("not-found").await;

    let outcome = f
        .store
        .complete_if_running(number(400_404), at(T0), at(T0 + 60_000))
        .await
        .expect("complete");

    assert_eq!(outcome, CompleteOutcome::NotFound);
    assert_eq!(f.counter.total(), 1, "{:?}", f.counter.snapshot());
    assert_eq!(f.store.get(number(400_404)).await.expect("get"), None);
}

#[tokio::test]
async fn recording_a_notification_finishes_the_job_and_sets_its_ttl_to_finish_plus_retention() {
    let f = fixture("notified").await;
    let job = teams_job(500_001, T0);
    f.store.create(&job).await.expect("create");
    f.store
        .complete_if_running(job.number, at(T0 + 10_000), at(T0 + 70_000))
        .await
        .expect("complete");

    f.counter.reset();
    f.store
        .record_delivery(job.number, DeliveryOutcome::Notified, at(T0 + 12_345))
        .await
        .expect("record");

    assert_eq!(f.counter.total(), 1, "{:?}", f.counter.snapshot());
    let stored = f.store.get(job.number).await.expect("get").expect("job");
    assert_eq!(
        stored.status,
        JobStatus::Notified {
            completed_at: at(T0 + 10_000),
            notified_at: at(T0 + 12_345),
        }
    );
    let item = f.raw_item(job.number).await;
    let expected = (at(T0 + 12_345) + Duration::days(30)).timestamp();
    assert_eq!(item["expiresAt"], AttributeValue::N(expected.to_string()));
    assert!(!item.contains_key("leaseUntil"));
    // Finished: a redelivered completion finds it already complete.
    assert!(matches!(
        f.store
            .complete_if_running(job.number, at(T0 + 999_000), at(T0 + 999_999))
            .await,
        Ok(CompleteOutcome::AlreadyComplete(_))
    ));
}

#[tokio::test]
async fn a_second_record_delivery_changes_nothing() {
    let f = fixture("second-record").await;
    let job = teams_job(500_002, T0);
    f.store.create(&job).await.expect("create");
    f.store
        .complete_if_running(job.number, at(T0 + 10_000), at(T0 + 70_000))
        .await
        .expect("complete");
    f.store
        .record_delivery(job.number, DeliveryOutcome::Notified, at(T0 + 11_000))
        .await
        .expect("record");
    let before = f.raw_item(job.number).await;

    f.store
        .record_delivery(
            job.number,
            DeliveryOutcome::Failed {
                reason: "late report".into(),
            },
            at(T0 + 50_000),
        )
        .await
        .expect("a late report is not an error");
    f.store
        .record_delivery(job.number, DeliveryOutcome::Notified, at(T0 + 60_000))
        .await
        .expect("a repeated report is not an error");

    assert_eq!(f.raw_item(job.number).await, before);
}

#[tokio::test]
async fn record_delivery_does_nothing_to_a_running_or_unknown_job_and_records_failures() {
    let f = fixture("record-failed").await;
    let job = teams_job(500_003, T0);
    f.store.create(&job).await.expect("create");

    f.store
        .record_delivery(job.number, DeliveryOutcome::Notified, at(T0 + 1_000))
        .await
        .expect("record on a running job");
    assert_eq!(
        f.store
            .get(job.number)
            .await
            .expect("get")
            .expect("job")
            .status,
        JobStatus::Running
    );
    f.store
        .record_delivery(number(500_404), DeliveryOutcome::Notified, at(T0))
        .await
        .expect("record on an unknown job");
    assert_eq!(f.store.get(number(500_404)).await.expect("get"), None);

    f.store
        .complete_if_running(job.number, at(T0 + 10_000), at(T0 + 70_000))
        .await
        .expect("complete");
    f.store
        .record_delivery(
            job.number,
            DeliveryOutcome::Failed {
                reason: "the bot was removed from the conversation".into(),
            },
            at(T0 + 20_000),
        )
        .await
        .expect("record");
    let stored = f.store.get(job.number).await.expect("get").expect("job");
    assert_eq!(
        stored.status,
        JobStatus::Failed {
            completed_at: at(T0 + 10_000),
            reason: "the bot was removed from the conversation".into(),
        }
    );
    let item = f.raw_item(job.number).await;
    let expected = (at(T0 + 20_000) + Duration::days(30)).timestamp();
    assert_eq!(item["expiresAt"], AttributeValue::N(expected.to_string()));
}
