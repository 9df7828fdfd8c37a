//! The DynamoDB conversation registry against moto, over DynamoDB's real wire protocol, on the
//! `DeliveryTable` and its `ActiveConversations` index as template.yaml defines them (created
//! by scripts/local_resources.py): every clause of the `ConversationRegistry` contract, the
//! stored item and its TTL, and what each operation costs in requests.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, Utc};
use proactive_bot::adapters::dynamodb_registry::DynamoConversationRegistry;
use proactive_bot::registry::{
    ConversationRegistry, Registration, RegistryError, RegistryRetention, Status,
};
use proactive_bot::schema::ConversationReference;
use proactive_bot::testing::moto::{self, MotoServer, RequestCounter};
use serde_json::json;

/// Not the defaults, so the tests see the adapter use what it was given.
const RETENTION: RegistryRetention = RegistryRetention {
    inactive: Duration::days(100),
    retired: Duration::days(7),
};

struct Fixture {
    registry: DynamoConversationRegistry,
    client: aws_sdk_dynamodb::Client,
    counter: RequestCounter,
    table: String,
}

async fn fixture(name: &str) -> Fixture {
    let moto = MotoServer::shared();
    let resources = moto.create_resources(name).await;
    let (config, counter) = moto.sdk_config().await;
    let client = moto::dynamodb_client(&config, &counter);
    let registry =
        DynamoConversationRegistry::new(client.clone(), &resources.delivery_table_name, RETENTION);
    Fixture {
        registry,
        client,
        counter,
        table: resources.delivery_table_name,
    }
}

impl Fixture {
    async fn raw(&self, conversation: &str) -> Option<HashMap<String, AttributeValue>> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(format!("conv#{conversation}")))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem")
            .item()
            .cloned()
    }

    async fn stored(&self, conversation: &str) -> Registration {
        self.registry
            .get(conversation)
            .await
            .expect("get")
            .expect("registered")
    }

    /// Every active conversation (of `tenant`), `limit` per page, in listing order.
    async fn list_all(&self, tenant: Option<&str>, limit: usize) -> (Vec<String>, usize) {
        let mut ids = Vec::new();
        let mut pages = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .registry
                .list_active(tenant, after.as_deref(), limit)
                .await
                .expect("list_active");
            pages += 1;
            assert!(page.conversations.len() <= limit, "{page:?}");
            assert!(
                page.conversations.iter().all(|r| r.status.is_active()),
                "{page:?}"
            );
            ids.extend(
                page.conversations
                    .iter()
                    .map(|r| r.conversation_id().to_owned()),
            );
            match page.next {
                Some(next) => after = Some(next),
                None => return (ids, pages),
            }
            assert!(pages < 100, "the listing never ends");
        }
    }
}

/// A Teams-like reference, with fields the schema does not model.
fn reference(conversation: &str, tenant: Option<&str>, service_url: &str) -> ConversationReference {
    let mut reference = proactive_bot::testing::reference(service_url, conversation);
    reference.channel_id = "msteams".into();
    reference.conversation.tenant_id = tenant.map(str::to_owned);
    reference.conversation.conversation_type = Some("personal".into());
    reference.user.id = "29:user".into();
    reference
        .conversation
        .extra
        .insert("futureField".into(), json!({"kept": true}));
    reference.extra.insert("unmodelled".into(), json!(42));
    reference
}

/// `now`, as the store keeps it: whole milliseconds.
fn millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap()
}

fn n(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value.parse().unwrap(),
        other => panic!("{name} is not a number: {other:?}"),
    }
}

fn s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> &'a str {
    match item.get(name) {
        Some(AttributeValue::S(value)) => value,
        other => panic!("{name} is not a string: {other:?}"),
    }
}

#[tokio::test]
async fn seen_registers_a_conversation_in_one_update_with_every_attribute_and_its_ttl() {
    let f = fixture("reg-seen").await;
    let now = Utc::now();
    let reference = reference(
        "19:a@thread.v2",
        Some("tenant-1"),
        "https://smba.example/amer/",
    );
    f.counter.reset();
    f.registry.seen(&reference, now).await.unwrap();
    assert_eq!(
        f.counter.snapshot(),
        [("DynamoDB.UpdateItem".to_owned(), 1)].into(),
        "seen is one request"
    );

    let item = f.raw("19:a@thread.v2").await.expect("stored");
    assert_eq!(s(&item, "channelId"), "msteams");
    assert_eq!(s(&item, "tenantId"), "tenant-1");
    assert_eq!(s(&item, "conversationType"), "personal");
    assert_eq!(s(&item, "userId"), "29:user");
    assert_eq!(s(&item, "status"), "active");
    assert_eq!(n(&item, "firstSeen"), now.timestamp_millis());
    assert_eq!(n(&item, "lastSeen"), now.timestamp_millis());
    assert_eq!(s(&item, "activePk"), "active");
    assert_eq!(s(&item, "activeSk"), "tenant-1#19:a@thread.v2");
    assert_eq!(
        n(&item, "expiresAt"),
        (now + RETENTION.inactive).timestamp(),
        "an active conversation expires the inactivity retention after it was last seen"
    );
    assert!(!item.contains_key("retiredAt") && !item.contains_key("reason"));
    let stored_reference: serde_json::Value = serde_json::from_str(s(&item, "reference")).unwrap();
    assert_eq!(
        stored_reference["conversation"]["futureField"]["kept"],
        true
    );
    assert_eq!(stored_reference["unmodelled"], 42);

    let stored = f.stored("19:a@thread.v2").await;
    assert_eq!(stored.reference, reference, "unknown fields survive");
    assert_eq!(stored.first_seen, millis(now));
    assert_eq!(stored.last_seen, millis(now));
    assert_eq!(stored.status, Status::Active);
    assert_eq!(stored.tenant_id(), Some("tenant-1"));
    assert_eq!(stored.conversation_type(), Some("personal"));
}

#[tokio::test]
async fn seen_again_keeps_first_seen_and_follows_the_latest_service_url_and_user() {
    let f = fixture("reg-again").await;
    let first = Utc::now() - Duration::hours(5);
    f.registry
        .seen(&reference("c1", Some("t1"), "https://old.example/"), first)
        .await
        .unwrap();
    let later = Utc::now();
    let mut newer = reference("c1", Some("t1"), "https://new.example/emea/");
    newer.user.id = "29:someone-else".into();
    newer.conversation.conversation_type = None;
    f.counter.reset();
    f.registry.seen(&newer, later).await.unwrap();
    assert_eq!(f.counter.total(), 1, "{:?}", f.counter.snapshot());

    let stored = f.stored("c1").await;
    assert_eq!(stored.first_seen, millis(first), "first seen is kept");
    assert_eq!(stored.last_seen, millis(later));
    assert_eq!(stored.reference.service_url, "https://new.example/emea/");
    assert_eq!(stored.user_id(), "29:someone-else");
    let item = f.raw("c1").await.unwrap();
    assert_eq!(s(&item, "userId"), "29:someone-else");
    assert!(
        !item.contains_key("conversationType"),
        "an attribute the latest reference lacks is removed"
    );
    assert_eq!(
        n(&item, "expiresAt"),
        (later + RETENTION.inactive).timestamp()
    );
}

#[tokio::test]
async fn retire_is_one_conditional_update_that_leaves_the_index_and_expires_sooner() {
    let f = fixture("reg-retire").await;
    let first = Utc::now() - Duration::days(3);
    f.registry
        .seen(&reference("c1", Some("t1"), "https://a.example/"), first)
        .await
        .unwrap();
    f.registry
        .seen(&reference("c2", Some("t1"), "https://a.example/"), first)
        .await
        .unwrap();
    let now = Utc::now();
    f.counter.reset();
    assert!(f.registry.retire("c1", "uninstalled", now).await.unwrap());
    assert_eq!(
        f.counter.snapshot(),
        [("DynamoDB.UpdateItem".to_owned(), 1)].into(),
        "retire is one request"
    );

    let item = f.raw("c1").await.unwrap();
    assert_eq!(s(&item, "status"), "retired");
    assert_eq!(s(&item, "reason"), "uninstalled");
    assert_eq!(n(&item, "retiredAt"), now.timestamp_millis());
    assert_eq!(
        n(&item, "expiresAt"),
        (now + RETENTION.retired).timestamp(),
        "a retired conversation expires the retired retention after it was retired"
    );
    assert!(
        !item.contains_key("activePk") && !item.contains_key("activeSk"),
        "out of the index: {item:?}"
    );
    let stored = f.stored("c1").await;
    assert_eq!(
        stored.status,
        Status::Retired {
            retired_at: millis(now),
            reason: "uninstalled".into()
        }
    );
    assert_eq!(stored.first_seen, millis(first));
    assert_eq!(f.list_all(None, 10).await.0, vec!["c2".to_owned()]);
    assert_eq!(f.list_all(Some("t1"), 10).await.0, vec!["c2".to_owned()]);
}

#[tokio::test]
async fn retiring_an_unknown_or_already_retired_conversation_is_false_and_changes_nothing() {
    let f = fixture("reg-noretire").await;
    f.counter.reset();
    assert!(!f.registry.retire("unknown", "x", Utc::now()).await.unwrap());
    assert_eq!(f.counter.total(), 1);
    assert!(f.raw("unknown").await.is_none(), "nothing created");

    let first_retirement = Utc::now() - Duration::minutes(1);
    f.registry
        .seen(
            &reference("c1", None, "https://a.example/"),
            first_retirement,
        )
        .await
        .unwrap();
    assert!(
        f.registry
            .retire("c1", "bot removed", first_retirement)
            .await
            .unwrap()
    );
    let before = f.raw("c1").await.unwrap();
    assert!(
        !f.registry
            .retire("c1", "404 ConversationNotFound", Utc::now())
            .await
            .unwrap()
    );
    assert_eq!(
        f.raw("c1").await.unwrap(),
        before,
        "the first retirement stands"
    );
}

#[tokio::test]
async fn a_retired_conversation_that_talks_again_is_active_again_in_one_update() {
    let f = fixture("reg-revive").await;
    let first = Utc::now() - Duration::days(2);
    f.registry
        .seen(&reference("c1", Some("t1"), "https://a.example/"), first)
        .await
        .unwrap();
    f.registry
        .retire("c1", "403 BotNotInConversationRoster", first)
        .await
        .unwrap();
    let now = Utc::now();
    f.counter.reset();
    f.registry
        .seen(&reference("c1", Some("t1"), "https://b.example/"), now)
        .await
        .unwrap();
    assert_eq!(f.counter.total(), 1);

    let stored = f.stored("c1").await;
    assert_eq!(stored.status, Status::Active);
    assert_eq!(stored.first_seen, millis(first));
    assert_eq!(stored.reference.service_url, "https://b.example/");
    let item = f.raw("c1").await.unwrap();
    assert!(!item.contains_key("retiredAt") && !item.contains_key("reason"));
    assert_eq!(
        n(&item, "expiresAt"),
        (now + RETENTION.inactive).timestamp()
    );
    assert_eq!(f.list_all(Some("t1"), 10).await.0, vec!["c1".to_owned()]);
}

#[tokio::test]
async fn get_of_an_unknown_conversation_is_none() {
    let f = fixture("reg-unknown").await;
    assert!(f.registry.get("nobody").await.unwrap().is_none());
}

#[tokio::test]
async fn get_many_reads_more_than_a_hundred_ids_in_two_requests_and_leaves_out_missing_ones() {
    let f = fixture("reg-many").await;
    let now = Utc::now();
    for i in 0..150 {
        f.registry
            .seen(
                &reference(&format!("c{i:03}"), Some("t"), "https://a.example/"),
                now,
            )
            .await
            .unwrap();
    }
    f.registry.retire("c007", "uninstalled", now).await.unwrap();
    let mut ids: Vec<String> = (0..150).map(|i| format!("c{i:03}")).collect();
    ids.extend((0..30).map(|i| format!("missing-{i}")));
    ids.extend(["c001".to_owned(), "c002".to_owned()]); // named twice
    f.counter.reset();
    let found = f.registry.get_many(&ids).await.unwrap();
    assert_eq!(
        f.counter.count("DynamoDB", "BatchGetItem"),
        2,
        "180 distinct ids: two requests of at most 100"
    );
    let mut found_ids: Vec<&str> = found.iter().map(|r| r.conversation_id()).collect();
    found_ids.sort();
    let expected: Vec<String> = (0..150).map(|i| format!("c{i:03}")).collect();
    assert_eq!(
        found_ids, expected,
        "every registered one, once; retired ones too"
    );
    let retired = found
        .iter()
        .find(|r| r.conversation_id() == "c007")
        .unwrap();
    assert!(!retired.status.is_active());
    assert!(f.registry.get_many(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn list_active_pages_through_every_active_conversation_by_tenant_then_id() {
    let f = fixture("reg-list").await;
    let now = Utc::now();
    let mut expected_all = Vec::new();
    for tenant in ["t1", "t2"] {
        for i in 0..9 {
            let id = format!("{tenant}-c{i}");
            f.registry
                .seen(&reference(&id, Some(tenant), "https://a.example/"), now)
                .await
                .unwrap();
            expected_all.push(id);
        }
    }
    for id in ["x-no-tenant-1", "x-no-tenant-2"] {
        f.registry
            .seen(&reference(id, None, "https://a.example/"), now)
            .await
            .unwrap();
        expected_all.push(id.to_owned());
    }
    // Retired conversations are not listed.
    for id in ["t1-c3", "t2-c0"] {
        f.registry.retire(id, "uninstalled", now).await.unwrap();
        expected_all.retain(|e| e != id);
    }

    f.counter.reset();
    let (all, pages) = f.list_all(None, 4).await;
    assert_eq!(
        all, expected_all,
        "all active ones, by tenant then id, conversations without a tenant last"
    );
    assert_eq!(
        pages, 5,
        "18 in pages of 4: the last page says it is the last"
    );
    assert_eq!(
        f.counter.count("DynamoDB", "Query"),
        5,
        "one Query per page"
    );
    assert_eq!(f.counter.count("DynamoDB", "Scan"), 0);

    let t2: Vec<String> = expected_all
        .iter()
        .filter(|id| id.starts_with("t2-"))
        .cloned()
        .collect();
    let (listed, pages) = f.list_all(Some("t2"), 3).await;
    assert_eq!(listed, t2);
    assert_eq!(pages, 3, "8 in pages of 3");
    let (listed, pages) = f.list_all(Some("t2"), 8).await;
    assert_eq!((listed, pages), (t2.clone(), 1), "exactly one full page");
    assert_eq!(f.list_all(Some("t2"), 1000).await.0, t2);
    assert_eq!(f.list_all(Some("t3"), 10).await, (vec![], 1));
    let whole = f.registry.list_active(Some("t1"), None, 100).await.unwrap();
    assert!(whole.next.is_none());
    assert!(
        whole
            .conversations
            .iter()
            .all(|r| r.tenant_id() == Some("t1"))
    );
    assert_eq!(whole.conversations[0].reference.extra["unmodelled"], 42);
}

#[tokio::test]
async fn a_tenant_listing_never_reaches_into_a_tenant_whose_id_extends_it() {
    let f = fixture("reg-tenants").await;
    let now = Utc::now();
    for (id, tenant) in [("b#x", "a"), ("y", "a#b"), ("z", "ab"), ("w", "~")] {
        f.registry
            .seen(&reference(id, Some(tenant), "https://a.example/"), now)
            .await
            .unwrap();
    }
    f.registry
        .seen(&reference("none", None, "https://a.example/"), now)
        .await
        .unwrap();
    assert_eq!(f.list_all(Some("a"), 10).await.0, vec!["b#x".to_owned()]);
    assert_eq!(f.list_all(Some("a#b"), 10).await.0, vec!["y".to_owned()]);
    assert_eq!(f.list_all(Some("~"), 10).await.0, vec!["w".to_owned()]);
    let (all, _) = f.list_all(None, 2).await;
    assert_eq!(all.len(), 5, "{all:?}");
    assert_eq!(all.last().unwrap(), "none", "no tenant sorts last: {all:?}");
}

#[tokio::test]
async fn a_cursor_is_opaque_resumes_where_it_left_off_and_a_bad_one_is_refused() {
    let f = fixture("reg-cursor").await;
    let now = Utc::now();
    for i in 0..5 {
        f.registry
            .seen(
                &reference(
                    &format!("19:c{i};messageid=1"),
                    Some("t1"),
                    "https://a.example/",
                ),
                now,
            )
            .await
            .unwrap();
    }
    let first = f.registry.list_active(Some("t1"), None, 2).await.unwrap();
    let cursor = first.next.expect("more pages");
    assert!(
        cursor
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "URL-safe: {cursor}"
    );
    let second = f
        .registry
        .list_active(Some("t1"), Some(&cursor), 2)
        .await
        .unwrap();
    let ids: Vec<&str> = second
        .conversations
        .iter()
        .map(|r| r.conversation_id())
        .collect();
    assert_eq!(ids, vec!["19:c2;messageid=1", "19:c3;messageid=1"]);
    // The same cursor again reads the same page: it names a position, not a session.
    let again = f
        .registry
        .list_active(Some("t1"), Some(&cursor), 2)
        .await
        .unwrap();
    assert_eq!(again, second);
    // A tenant's cursor is a valid position in the listing of all.
    assert!(f.registry.list_active(None, Some(&cursor), 2).await.is_ok());

    for bad in ["", "garbage!", "bm8tc2VwYXJhdG9y", "%%%"] {
        let result = f.registry.list_active(None, Some(bad), 2).await;
        assert!(
            matches!(result, Err(RegistryError::BadCursor(_))),
            "{bad:?}: {result:?}"
        );
    }
    let other_tenant = f.registry.list_active(Some("t2"), Some(&cursor), 2).await;
    match other_tenant {
        Err(error @ RegistryError::BadCursor(_)) => {
            assert!(error.to_string().contains("another tenant"), "{error}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_registration_past_its_expiry_reads_as_gone_before_the_ttl_deletes_it() {
    let f = fixture("reg-expired").await;
    let long_ago = Utc::now() - RETENTION.inactive - Duration::days(1);
    f.registry
        .seen(
            &reference("stale", Some("t1"), "https://a.example/"),
            long_ago,
        )
        .await
        .unwrap();
    f.registry
        .seen(
            &reference("fresh", Some("t1"), "https://a.example/"),
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(f.raw("stale").await.is_some(), "still stored");
    assert!(f.registry.get("stale").await.unwrap().is_none());
    let found = f
        .registry
        .get_many(&["stale".to_owned(), "fresh".to_owned()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].conversation_id(), "fresh");
    assert_eq!(f.list_all(Some("t1"), 10).await.0, vec!["fresh".to_owned()]);
    // Retired long enough ago: gone too.
    f.registry
        .retire(
            "fresh",
            "uninstalled",
            Utc::now() - RETENTION.retired - Duration::hours(1),
        )
        .await
        .unwrap();
    assert!(f.registry.get("fresh").await.unwrap().is_none());
    // Talking again brings it back.
    f.registry
        .seen(
            &reference("stale", Some("t1"), "https://a.example/"),
            Utc::now(),
        )
        .await
        .unwrap();
    assert!(f.stored("stale").await.status.is_active());
}

#[tokio::test]
async fn an_unreadable_registration_is_reported_corrupt_with_its_key() {
    let f = fixture("reg-corrupt").await;
    f.client
        .put_item()
        .table_name(&f.table)
        .item("pk", AttributeValue::S("conv#broken".into()))
        .item("reference", AttributeValue::S("{not json".into()))
        .item("status", AttributeValue::S("active".into()))
        .send()
        .await
        .unwrap();
    match f.registry.get("broken").await {
        Err(RegistryError::Corrupt { key, detail }) => {
            assert_eq!(key, "conv#broken");
            assert!(detail.contains("reference"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn held_notifications_are_a_set_that_seen_reads_back_in_its_one_write() {
    let f = fixture("reg-held").await;
    let url = "https://smba.example/amer/";
    let a = reference("19:held@thread.v2", Some("tenant-1"), url);
    assert!(
        !f.registry.hold("19:unknown", "job-1-1").await.unwrap(),
        "an unknown conversation holds nothing"
    );
    assert!(f.raw("19:unknown").await.is_none(), "and is not created");
    assert!(f.registry.seen(&a, Utc::now()).await.unwrap().is_empty());

    f.counter.reset();
    assert!(
        f.registry
            .hold(&a.conversation.id, "job-1-1")
            .await
            .unwrap()
    );
    assert!(
        f.registry
            .hold(&a.conversation.id, "job-2-2")
            .await
            .unwrap()
    );
    assert!(
        f.registry
            .hold(&a.conversation.id, "job-1-1")
            .await
            .unwrap()
    );
    assert_eq!(
        f.counter.count("DynamoDB", "UpdateItem"),
        3,
        "one write each"
    );
    let mut held = f.stored(&a.conversation.id).await.held;
    held.sort();
    assert_eq!(held, ["job-1-1", "job-2-2"], "a set: held once");

    // The turn's write returns them, in that one request.
    f.counter.reset();
    let mut read = f.registry.seen(&a, Utc::now()).await.unwrap();
    read.sort();
    assert_eq!(read, ["job-1-1", "job-2-2"]);
    assert_eq!(f.counter.total(), 1, "{:?}", f.counter.snapshot());

    f.registry
        .release(
            &a.conversation.id,
            &["job-1-1".to_owned(), "nope".to_owned()],
        )
        .await
        .unwrap();
    assert_eq!(f.stored(&a.conversation.id).await.held, ["job-2-2"]);
    f.registry
        .release(&a.conversation.id, &["job-2-2".to_owned()])
        .await
        .unwrap();
    assert!(f.stored(&a.conversation.id).await.held.is_empty());
    assert!(f.registry.seen(&a, Utc::now()).await.unwrap().is_empty());
    // Releasing from an unknown conversation creates nothing.
    f.registry
        .release("19:unknown", &["job-1-1".to_owned()])
        .await
        .unwrap();
    assert!(f.raw("19:unknown").await.is_none());
}
