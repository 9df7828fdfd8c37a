//! The DynamoDB delivery store against moto, over DynamoDB's real wire protocol, on the
//! `DeliveryTable` template.yaml defines (created by scripts/local_resources.py): every clause
//! of the `NotificationStore` and `RateLimitStore` contracts, and what each costs in requests.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration as StdDuration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, Utc};
use proactive_bot::adapters::dynamodb_delivery::DynamoDeliveryStore;
use proactive_bot::delivery::limits::{RateLimitStore, SendLog, Slot};
use proactive_bot::delivery::{
    Claim, Content, Created, DeliveryState, Notification, NotificationId, NotificationStore,
    Outcome, Source, StoreError,
};
use proactive_bot::schema::ConversationReference;
use proactive_bot::testing::moto::{self, MotoServer, RequestCounter};
use serde_json::json;

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
    let store = DynamoDeliveryStore::new(
        client.clone(),
        &resources.delivery_table_name,
        DynamoDeliveryStore::DEFAULT_RETENTION,
    );
    Fixture {
        store,
        client,
        counter,
        table: resources.delivery_table_name,
    }
}

impl Fixture {
    async fn raw_item(&self, pk: &str) -> Option<HashMap<String, AttributeValue>> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem")
            .item()
            .cloned()
    }

    async fn raw_notification(&self, id: &NotificationId) -> HashMap<String, AttributeValue> {
        self.raw_item(&format!("n#{id}"))
            .await
            .expect("the notification's item exists")
    }

    async fn stored(&self, id: &NotificationId) -> Notification {
        self.store
            .get(id)
            .await
            .expect("get")
            .expect("the notification exists")
    }

    /// Creates a queued notification and claims it at `T0` with a lease until `T0 + 60 s`.
    async fn claimed(&self, name: &str) -> Notification {
        let notification = queued(name);
        self.store.create(&notification).await.expect("create");
        match self
            .store
            .claim(&notification.id, at(T0), at(T0 + 60_000))
            .await
            .expect("claim")
        {
            Claim::Claimed(n) => n,
            other => panic!("expected Claimed, got {other:?}"),
        }
    }
}

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, in ms

fn at(millis: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(millis).expect("a valid instant")
}

fn id(text: &str) -> NotificationId {
    NotificationId::parse(text).expect("a notification id")
}

/// The TTL a notification that ended at `ended` gets: epoch seconds, 30 days later.
fn ttl(ended: DateTime<Utc>) -> AttributeValue {
    AttributeValue::N((ended + Duration::days(30)).timestamp().to_string())
}

/// A Teams channel thread's reference, with fields this version does not model.
fn teams_reference() -> ConversationReference {
    serde_json::from_value(json!({
        "activityId": "1712345678901",
        "user": {
            "id": "29:1abc",
            "name": "Zoë Ångström",
            "aadObjectId": "00000000-0000-0000-0000-000000000001",
            "userRole": "user"
        },
        "bot": {"id": "28:bot-app-id", "name": "Jobs"},
        "conversation": {
            "id": "19:f00dfeed@thread.tacv2;messageid=1712345678901",
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
    .expect("a reference")
}

/// A queued notification with unicode text and an Adaptive Card.
fn queued(name: &str) -> Notification {
    let content = Content {
        text: Some("Job **7** is complete ✅ — café 日本語 🎉".to_owned()),
        text_format: Some("markdown".to_owned()),
        attachments: vec![json!({
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "type": "AdaptiveCard",
                "version": "1.5",
                "body": [{"type": "TextBlock", "text": "Ünïcödé ✓", "wrap": true}]
            }
        })],
        digest: Some(proactive_bot::delivery::DigestLine {
            key: "job-complete".to_owned(),
            item: "7".to_owned(),
            summary: "{count} jobs are complete: {items}.".to_owned(),
        }),
    };
    let mut notification = Notification::new(
        id(name),
        Source::Api {
            request: "req-42".to_owned(),
        },
        teams_reference(),
        content,
        at(T0 + 7),
    );
    notification.idempotency_key = Some(format!("key-{name}"));
    notification
}

// --- create and get ------------------------------------------------------------------------

#[tokio::test]
async fn a_notification_reads_back_unchanged_with_attachments_unicode_and_unknown_fields() {
    let f = fixture("roundtrip").await;
    let mut notification = queued("job-7");
    notification.update_of = Some("1:activity/7".to_owned());

    f.counter.reset();
    let created = f.store.create(&notification).await.expect("create");
    assert_eq!(created, Created::New);
    assert_eq!(f.counter.total(), 1);
    assert_eq!(f.counter.count("DynamoDB", "PutItem"), 1);

    let read = f.stored(&notification.id).await;
    assert_eq!(read, notification);
    assert_eq!(read.target.extra["futureReferenceField"], "kept");
    assert_eq!(
        read.target.conversation.extra["futureConversationField"],
        json!({"nested": [1, 2, 3]})
    );
    assert_eq!(read.target.user.extra["userRole"], "user");

    let item = f.raw_notification(&notification.id).await;
    assert_eq!(item["state"], AttributeValue::S("queued".into()));
    assert_eq!(item["createdAt"], AttributeValue::N((T0 + 7).to_string()));
    assert_eq!(item["attempts"], AttributeValue::N("0".into()));
    assert_eq!(
        item["idempotencyKey"],
        AttributeValue::S("key-job-7".into())
    );
    assert!(
        !item.contains_key("expiresAt"),
        "a queued notification never expires"
    );
}

#[tokio::test]
async fn creating_an_existing_id_returns_the_stored_one_in_one_request_and_overwrites_nothing() {
    let f = fixture("existing").await;
    let original = queued("job-8");
    f.store.create(&original).await.expect("create");
    let mut impostor = queued("job-8");
    impostor.content = Content::text("something else");
    impostor.target.service_url = "https://attacker.example/".into();

    f.counter.reset();
    let created = f.store.create(&impostor).await.expect("create again");

    assert_eq!(created, Created::Existing(Box::new(original.clone())));
    assert_eq!(f.counter.total(), 1);
    assert_eq!(f.counter.count("DynamoDB", "PutItem"), 1);
    assert_eq!(f.stored(&original.id).await, original);
}

#[tokio::test]
async fn getting_an_unknown_id_is_none() {
    let f = fixture("unknown").await;
    assert_eq!(f.store.get(&id("nobody")).await.expect("get"), None);
}

#[tokio::test]
async fn get_many_reads_more_than_a_hundred_ids_in_two_requests_and_leaves_out_missing_ones() {
    let f = fixture("many").await;
    let mut created = BTreeSet::new();
    for n in 0..130 {
        let notification = queued(&format!("n-{n:03}"));
        f.store.create(&notification).await.expect("create");
        created.insert(notification.id);
    }
    let mut asked: Vec<NotificationId> = created.iter().cloned().collect();
    asked.extend((0..5).map(|n| id(&format!("missing-{n}"))));
    asked.push(id("n-000")); // named twice

    f.counter.reset();
    let found = f.store.get_many(&asked).await.expect("get_many");

    assert_eq!(f.counter.count("DynamoDB", "BatchGetItem"), 2);
    assert_eq!(f.counter.total(), 2);
    let found_ids: BTreeSet<NotificationId> = found.iter().map(|n| n.id.clone()).collect();
    assert_eq!(found.len(), 130);
    assert_eq!(found_ids, created);
    assert!(found.iter().all(|n| n.content == queued("x").content));

    f.counter.reset();
    assert_eq!(f.store.get_many(&[]).await.expect("get_many"), vec![]);
    assert_eq!(f.counter.total(), 0);
}

#[tokio::test]
async fn an_unreadable_notification_is_reported_corrupt_with_its_key() {
    let f = fixture("corrupt").await;
    let mut item = HashMap::from([
        ("pk".to_owned(), AttributeValue::S("n#broken".into())),
        ("state".to_owned(), AttributeValue::S("queued".into())),
        ("createdAt".to_owned(), AttributeValue::N(T0.to_string())),
        (
            "source".to_owned(),
            AttributeValue::S(r#"{"kind":"job","number":7}"#.into()),
        ),
        (
            "correlationId".to_owned(),
            AttributeValue::S("c0ffee".into()),
        ),
        ("content".to_owned(), AttributeValue::S("{}".into())),
        ("attempts".to_owned(), AttributeValue::N("0".into())),
    ]);
    f.client
        .put_item()
        .table_name(&f.table)
        .set_item(Some(item.clone()))
        .send()
        .await
        .expect("PutItem");
    item.insert("pk".into(), AttributeValue::S("n#strange".into()));
    item.insert("state".into(), AttributeValue::S("delivered".into()));
    item.insert(
        "target".into(),
        AttributeValue::S(serde_json::to_string(&teams_reference()).expect("json")),
    );
    f.client
        .put_item()
        .table_name(&f.table)
        .set_item(Some(item))
        .send()
        .await
        .expect("PutItem");

    match f.store.get(&id("broken")).await {
        Err(StoreError::Corrupt { key, detail }) => {
            assert_eq!(key, "n#broken");
            assert!(detail.contains("target"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    match f.store.get(&id("strange")).await {
        Err(StoreError::Corrupt { key, detail }) => {
            assert_eq!(key, "n#strange");
            assert!(detail.contains("delivered"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        f.store.get_many(&[id("strange")]).await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        f.store.claim(&id("strange"), at(T0), at(T0 + 1)).await,
        Err(StoreError::Corrupt { .. })
    ));
}

// --- claim ---------------------------------------------------------------------------------

#[tokio::test]
async fn claiming_a_queued_notification_leases_it_in_one_update() {
    let f = fixture("claim").await;
    let notification = queued("job-9");
    f.store.create(&notification).await.expect("create");

    f.counter.reset();
    let claim = f
        .store
        .claim(&notification.id, at(T0), at(T0 + 60_000))
        .await
        .expect("claim");

    assert_eq!(f.counter.total(), 1);
    assert_eq!(f.counter.count("DynamoDB", "UpdateItem"), 1);
    let expected = Notification {
        state: DeliveryState::Sending {
            lease_until: at(T0 + 60_000),
        },
        ..notification.clone()
    };
    assert_eq!(claim, Claim::Claimed(expected.clone()));
    assert_eq!(f.stored(&notification.id).await, expected);
}

#[tokio::test]
async fn a_released_claim_is_queued_again_with_nothing_counted_in_one_update() {
    let f = fixture("release").await;
    let notification = queued("job-10");
    f.store.create(&notification).await.expect("create");
    f.store
        .claim(&notification.id, at(T0), at(T0 + 60_000))
        .await
        .expect("claim");

    f.counter.reset();
    f.store
        .record(&notification.id, Outcome::Released, at(T0 + 1))
        .await
        .expect("release");
    assert_eq!(f.counter.count("DynamoDB", "UpdateItem"), 1);
    assert_eq!(f.stored(&notification.id).await, notification);
    let raw = f.raw_notification(&notification.id).await;
    assert!(!raw.contains_key("leaseUntil") && !raw.contains_key("expiresAt"));
    // And it can be claimed at once by the next delivery.
    assert!(matches!(
        f.store
            .claim(&notification.id, at(T0 + 2), at(T0 + 60_002))
            .await
            .expect("claim"),
        Claim::Claimed(_)
    ));
}

#[tokio::test]
async fn a_live_lease_is_busy_until_it_ends_and_then_another_delivery_takes_over() {
    let f = fixture("lease").await;
    let claimed = f.claimed("job-10").await;

    assert_eq!(
        f.store
            .claim(&claimed.id, at(T0 + 30_000), at(T0 + 90_000))
            .await
            .expect("claim"),
        Claim::Busy(at(T0 + 60_000))
    );
    // A lease is live up to and including its last instant.
    assert_eq!(
        f.store
            .claim(&claimed.id, at(T0 + 60_000), at(T0 + 120_000))
            .await
            .expect("claim"),
        Claim::Busy(at(T0 + 60_000))
    );
    match f
        .store
        .claim(&claimed.id, at(T0 + 60_001), at(T0 + 120_001))
        .await
        .expect("claim")
    {
        Claim::Claimed(n) => {
            assert_eq!(
                n.state,
                DeliveryState::Sending {
                    lease_until: at(T0 + 120_001)
                }
            );
            assert_eq!(n.attempts, 0, "a claim is not an attempt");
        }
        other => panic!("expected a takeover, got {other:?}"),
    }
}

#[tokio::test]
async fn sent_and_failed_notifications_are_final_and_claiming_them_changes_nothing() {
    let f = fixture("final").await;
    let sent = f.claimed("job-11").await;
    f.store
        .record(
            &sent.id,
            Outcome::Sent {
                activity_id: Some("1:abc".into()),
            },
            at(T0 + 1_000),
        )
        .await
        .expect("record");
    let failed = f.claimed("job-12").await;
    f.store
        .record(
            &failed.id,
            Outcome::Failed {
                reason: "the bot was removed from the conversation".into(),
            },
            at(T0 + 2_000),
        )
        .await
        .expect("record");

    for id in [&sent.id, &failed.id] {
        let before = f.raw_notification(id).await;
        let stored = f.stored(id).await;
        f.counter.reset();
        let claim = f
            .store
            .claim(id, at(T0 + 500_000), at(T0 + 560_000))
            .await
            .expect("claim");
        assert_eq!(f.counter.total(), 1);
        assert_eq!(claim, Claim::Final(stored));
        assert_eq!(f.raw_notification(id).await, before);
    }
}

#[tokio::test]
async fn a_notification_that_gave_up_is_claimed_again_by_a_redrive_and_no_longer_expires() {
    let f = fixture("redrive").await;
    let claimed = f.claimed("job-13").await;
    f.store
        .record(
            &claimed.id,
            Outcome::GaveUp {
                last_error: "503 from the Connector".into(),
                attempted: true,
            },
            at(T0 + 5_000),
        )
        .await
        .expect("record");
    let item = f.raw_notification(&claimed.id).await;
    assert!(item.contains_key("gaveUpAt") && item.contains_key("expiresAt"));

    let claim = f
        .store
        .claim(&claimed.id, at(T0 + 900_000), at(T0 + 960_000))
        .await
        .expect("claim");

    let Claim::Claimed(n) = claim else {
        panic!("expected Claimed, got {claim:?}");
    };
    assert_eq!(
        n.state,
        DeliveryState::Sending {
            lease_until: at(T0 + 960_000)
        }
    );
    assert_eq!(n.attempts, 1);
    assert_eq!(n.last_error.as_deref(), Some("503 from the Connector"));
    let item = f.raw_notification(&claimed.id).await;
    assert!(!item.contains_key("gaveUpAt"), "{item:?}");
    assert!(!item.contains_key("expiresAt"), "{item:?}");
}

#[tokio::test]
async fn claiming_an_unknown_id_is_not_found_and_creates_nothing() {
    let f = fixture("claim-unknown").await;
    assert_eq!(
        f.store
            .claim(&id("nobody"), at(T0), at(T0 + 60_000))
            .await
            .expect("claim"),
        Claim::NotFound
    );
    assert_eq!(f.raw_item("n#nobody").await, None);
}

// --- record --------------------------------------------------------------------------------

#[tokio::test]
async fn a_retry_requeues_with_the_error_and_a_later_send_counts_both_attempts_and_expires() {
    let f = fixture("retry-sent").await;
    let claimed = f.claimed("job-14").await;

    f.counter.reset();
    f.store
        .record(
            &claimed.id,
            Outcome::Retry {
                error: "429 Too Many Requests".into(),
            },
            at(T0 + 1_000),
        )
        .await
        .expect("record");
    assert_eq!(f.counter.total(), 1);
    assert_eq!(f.counter.count("DynamoDB", "UpdateItem"), 1);

    let retried = f.stored(&claimed.id).await;
    assert_eq!(retried.state, DeliveryState::Queued);
    assert_eq!(retried.attempts, 1);
    assert_eq!(retried.last_error.as_deref(), Some("429 Too Many Requests"));
    let item = f.raw_notification(&claimed.id).await;
    assert!(!item.contains_key("leaseUntil"), "{item:?}");
    assert!(!item.contains_key("expiresAt"), "{item:?}");

    f.store
        .claim(&claimed.id, at(T0 + 2_000), at(T0 + 62_000))
        .await
        .expect("claim");
    f.counter.reset();
    f.store
        .record(
            &claimed.id,
            Outcome::Sent {
                activity_id: Some("1:0f00".into()),
            },
            at(T0 + 3_000),
        )
        .await
        .expect("record");
    assert_eq!(f.counter.total(), 1);
    assert_eq!(f.counter.count("DynamoDB", "UpdateItem"), 1);

    let sent = f.stored(&claimed.id).await;
    assert_eq!(
        sent.state,
        DeliveryState::Sent {
            sent_at: at(T0 + 3_000),
            activity_id: Some("1:0f00".into()),
        }
    );
    assert_eq!(sent.attempts, 2);
    assert_eq!(sent.last_error.as_deref(), Some("429 Too Many Requests"));
    let item = f.raw_notification(&claimed.id).await;
    assert!(!item.contains_key("leaseUntil"), "{item:?}");
    assert_eq!(item["expiresAt"], ttl(at(T0 + 3_000)));
}

#[tokio::test]
async fn a_send_the_channel_gave_no_activity_id_is_sent_without_one() {
    let f = fixture("sent-no-id").await;
    let claimed = f.claimed("job-15").await;
    f.store
        .record(
            &claimed.id,
            Outcome::Sent { activity_id: None },
            at(T0 + 1_000),
        )
        .await
        .expect("record");

    let sent = f.stored(&claimed.id).await;
    assert_eq!(
        sent.state,
        DeliveryState::Sent {
            sent_at: at(T0 + 1_000),
            activity_id: None,
        }
    );
    assert_eq!(sent.attempts, 1);
    assert_eq!(sent.last_error, None);
    assert!(
        !f.raw_notification(&claimed.id)
            .await
            .contains_key("activityId")
    );
}

#[tokio::test]
async fn a_permanent_failure_is_final_counts_the_attempt_and_expires() {
    let f = fixture("failed").await;
    let claimed = f.claimed("job-16").await;
    f.store
        .record(
            &claimed.id,
            Outcome::Failed {
                reason: "403: the bot is not in the conversation".into(),
            },
            at(T0 + 4_000),
        )
        .await
        .expect("record");

    let failed = f.stored(&claimed.id).await;
    assert_eq!(
        failed.state,
        DeliveryState::Failed {
            failed_at: at(T0 + 4_000),
            reason: "403: the bot is not in the conversation".into(),
        }
    );
    assert_eq!(failed.attempts, 1);
    let item = f.raw_notification(&claimed.id).await;
    assert_eq!(item["expiresAt"], ttl(at(T0 + 4_000)));
    assert!(!item.contains_key("leaseUntil"), "{item:?}");
}

#[tokio::test]
async fn giving_up_counts_an_attempt_only_when_one_was_made_and_expires() {
    let f = fixture("gave-up").await;
    for (name, attempted, attempts) in [("job-17", true, 1), ("job-18", false, 0)] {
        let claimed = f.claimed(name).await;
        f.store
            .record(
                &claimed.id,
                Outcome::GaveUp {
                    last_error: "deferred by the rate limit".into(),
                    attempted,
                },
                at(T0 + 9_000),
            )
            .await
            .expect("record");

        let gave_up = f.stored(&claimed.id).await;
        assert_eq!(
            gave_up.state,
            DeliveryState::GaveUp {
                gave_up_at: at(T0 + 9_000),
                last_error: "deferred by the rate limit".into(),
            }
        );
        assert_eq!(gave_up.attempts, attempts, "{name}");
        assert_eq!(
            gave_up.last_error.as_deref(),
            Some("deferred by the rate limit")
        );
        let item = f.raw_notification(&claimed.id).await;
        assert_eq!(item["expiresAt"], ttl(at(T0 + 9_000)));
        assert!(!item.contains_key("leaseUntil"), "{item:?}");
    }
}

#[tokio::test]
async fn no_report_after_a_send_changes_the_notification() {
    let f = fixture("late-report").await;
    let claimed = f.claimed("job-19").await;
    f.store
        .record(
            &claimed.id,
            Outcome::Sent {
                activity_id: Some("1:first".into()),
            },
            at(T0 + 1_000),
        )
        .await
        .expect("record");
    let before = f.raw_notification(&claimed.id).await;

    for outcome in [
        Outcome::Sent {
            activity_id: Some("1:second".into()),
        },
        Outcome::Failed {
            reason: "late".into(),
        },
        Outcome::Retry {
            error: "late".into(),
        },
        Outcome::GaveUp {
            last_error: "late".into(),
            attempted: true,
        },
    ] {
        f.counter.reset();
        f.store
            .record(&claimed.id, outcome, at(T0 + 50_000))
            .await
            .expect("a late report is not an error");
        assert_eq!(f.counter.total(), 1);
    }

    assert_eq!(f.raw_notification(&claimed.id).await, before);
}

#[tokio::test]
async fn recording_for_an_unknown_id_is_ok_and_creates_nothing() {
    let f = fixture("record-unknown").await;
    f.store
        .record(&id("nobody"), Outcome::Sent { activity_id: None }, at(T0))
        .await
        .expect("record on an unknown id");
    assert_eq!(f.raw_item("n#nobody").await, None);
}

// --- send logs -----------------------------------------------------------------------------

#[tokio::test]
async fn a_conversation_without_a_log_has_an_empty_one_at_version_zero() {
    let f = fixture("log-empty").await;
    assert_eq!(
        f.store.load_log("c#msteams#19:x").await.expect("load"),
        SendLog::default()
    );
}

#[tokio::test]
async fn of_two_writers_from_the_same_version_exactly_one_wins() {
    let f = fixture("log-version").await;
    let key = "c#msteams#19:abc@thread.tacv2";
    let keep_for = StdDuration::from_millis(150_500);

    // Two writers of a log that does not exist yet.
    let before = Utc::now().timestamp_millis();
    assert!(
        f.store
            .store_log(key, 0, &[T0, T0 + 10], keep_for)
            .await
            .expect("store")
    );
    let after = Utc::now().timestamp_millis();
    assert!(
        !f.store
            .store_log(key, 0, &[T0 + 5], keep_for)
            .await
            .expect("store")
    );
    assert_eq!(
        f.store.load_log(key).await.expect("load"),
        SendLog {
            sends: vec![T0, T0 + 10],
            version: 1,
        }
    );

    // Two writers of version 1.
    assert!(
        f.store
            .store_log(key, 1, &[T0, T0 + 10, T0 + 20], keep_for)
            .await
            .expect("store")
    );
    assert!(
        !f.store
            .store_log(key, 1, &[T0 + 99], keep_for)
            .await
            .expect("store")
    );
    assert_eq!(
        f.store.load_log(key).await.expect("load"),
        SendLog {
            sends: vec![T0, T0 + 10, T0 + 20],
            version: 2,
        }
    );

    let item = f.raw_item(&format!("rate#{key}")).await.expect("the log");
    assert_eq!(
        item["sends"],
        AttributeValue::S(format!("{T0},{},{}", T0 + 10, T0 + 20))
    );
    let AttributeValue::N(expires_at) = &item["expiresAt"] else {
        panic!("expiresAt is a number: {item:?}");
    };
    let expires_at: i64 = expires_at.parse().expect("epoch seconds");
    // now + keep_for, in seconds, rounded up.
    assert!(
        expires_at >= (before + 150_500 + 999) / 1000
            && expires_at <= (Utc::now().timestamp_millis() + 150_500 + 999) / 1000,
        "{expires_at} for a write between {before} and {after}"
    );
}

// --- tenant slots --------------------------------------------------------------------------

const INTERVAL: StdDuration = StdDuration::from_millis(20);

#[tokio::test]
async fn an_idle_tenant_gives_the_slot_at_not_before() {
    let f = fixture("slot-idle").await;
    let key = "t#msteams#tenant-a";
    assert_eq!(
        f.store
            .reserve_slot(key, INTERVAL, T0, T0 + 400)
            .await
            .expect("reserve"),
        Slot::Reserved(T0)
    );
    let item = f.raw_item(&format!("slot#{key}")).await.expect("the slot");
    assert_eq!(item["nextFree"], AttributeValue::N((T0 + 20).to_string()));
    let AttributeValue::N(expires_at) = &item["expiresAt"] else {
        panic!("expiresAt is a number: {item:?}");
    };
    let expires_at: i64 = expires_at.parse().expect("epoch seconds");
    assert!(expires_at * 1000 > T0 + 20 + 60_000, "{expires_at}");

    // Long after the last slot the tenant is idle again.
    assert_eq!(
        f.store
            .reserve_slot(key, INTERVAL, T0 + 5_000, T0 + 5_400)
            .await
            .expect("reserve"),
        Slot::Reserved(T0 + 5_000)
    );
}

#[tokio::test]
async fn a_busy_tenant_gives_the_next_free_slot_spaced_by_the_interval() {
    let f = fixture("slot-busy").await;
    let key = "t#msteams#tenant-b";
    let mut slots = Vec::new();
    for not_before in [T0, T0, T0 + 5, T0 + 40] {
        match f
            .store
            .reserve_slot(key, INTERVAL, not_before, T0 + 400)
            .await
            .expect("reserve")
        {
            Slot::Reserved(slot) => slots.push(slot),
            full => panic!("expected a slot, got {full:?}"),
        }
    }
    assert_eq!(slots, vec![T0, T0 + 20, T0 + 40, T0 + 60]);
}

#[tokio::test]
async fn an_interval_of_a_fraction_of_a_millisecond_is_rounded_up() {
    let f = fixture("slot-round").await;
    let key = "t#msteams#tenant-r";
    let interval = StdDuration::from_micros(20_400);
    let first = f.store.reserve_slot(key, interval, T0, T0 + 400).await;
    let second = f.store.reserve_slot(key, interval, T0, T0 + 400).await;
    assert_eq!(first.expect("reserve"), Slot::Reserved(T0));
    assert_eq!(second.expect("reserve"), Slot::Reserved(T0 + 21));
}

#[tokio::test]
async fn a_slot_beyond_latest_is_full_says_when_and_reserves_nothing() {
    let f = fixture("slot-full").await;
    let key = "t#msteams#tenant-c";
    for _ in 0..3 {
        f.store
            .reserve_slot(key, INTERVAL, T0, T0 + 400)
            .await
            .expect("reserve");
    }
    // Slots T0, +20, +40 are taken; the next free one is T0 + 60.
    assert_eq!(
        f.store
            .reserve_slot(key, INTERVAL, T0, T0 + 59)
            .await
            .expect("reserve"),
        Slot::Full(T0 + 60)
    );
    assert_eq!(
        f.store
            .reserve_slot(key, INTERVAL, T0 + 10, T0 + 30)
            .await
            .expect("reserve"),
        Slot::Full(T0 + 60)
    );
    // A caller that can wait until then gets exactly that slot: nothing was taken.
    assert_eq!(
        f.store
            .reserve_slot(key, INTERVAL, T0, T0 + 60)
            .await
            .expect("reserve"),
        Slot::Reserved(T0 + 60)
    );
    // Even an idle tenant's slot is too late when not_before is after latest.
    assert_eq!(
        f.store
            .reserve_slot("t#msteams#tenant-idle", INTERVAL, T0 + 500, T0 + 400)
            .await
            .expect("reserve"),
        Slot::Full(T0 + 500)
    );
    assert_eq!(f.raw_item("slot#t#msteams#tenant-idle").await, None);
}

#[tokio::test]
async fn fifty_sequential_reservations_get_fifty_distinct_slots_spaced_exactly_by_the_interval() {
    let f = fixture("slot-fifty").await;
    let key = "t#msteams#tenant-d";
    let mut slots = Vec::new();
    for _ in 0..50 {
        match f
            .store
            .reserve_slot(key, INTERVAL, T0, T0 + 10_000)
            .await
            .expect("reserve")
        {
            Slot::Reserved(slot) => slots.push(slot),
            full => panic!("expected a slot, got {full:?}"),
        }
    }
    let expected: Vec<i64> = (0..50).map(|n| T0 + 20 * n).collect();
    assert_eq!(slots, expected);
}

#[tokio::test]
async fn a_busy_tenant_reserves_a_slot_in_one_update() {
    let f = fixture("slot-cost").await;
    let key = "t#msteams#tenant-e";
    for _ in 0..2 {
        f.store
            .reserve_slot(key, INTERVAL, T0, T0 + 400)
            .await
            .expect("reserve");
    }

    for n in 2..5 {
        f.counter.reset();
        assert_eq!(
            f.store
                .reserve_slot(key, INTERVAL, T0, T0 + 400)
                .await
                .expect("reserve"),
            Slot::Reserved(T0 + 20 * n)
        );
        assert_eq!(f.counter.total(), 1);
        assert_eq!(f.counter.count("DynamoDB", "UpdateItem"), 1);
    }
}
