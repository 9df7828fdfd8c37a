//! The reminders' ports against their contracts: the store in memory and on DynamoDB (moto,
//! the template's delivery table), and the EventBridge scheduler's calls on moto's
//! EventBridge Scheduler.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use proactive_bot::adapters::dynamodb_reminders::DynamoReminderStore;
use proactive_bot::adapters::eventbridge::{EventBridgeScheduler, at_expression};
use proactive_bot::adapters::local_reminders::MemoryReminderStore;
use proactive_bot::delivery::{DeliveryMessage, NotificationId};
use proactive_bot::reminders::{
    ConversationKey, ConversationReminders, Reminder, ReminderId, ReminderScheduler, ReminderStore,
    ScheduleName,
};
use proactive_bot::testing::moto::{self, MotoServer, RequestCounter};

fn key(conversation: &str) -> ConversationKey {
    ConversationKey {
        channel: "msteams".into(),
        conversation: conversation.into(),
    }
}

/// Whole milliseconds, as a round trip through JSON keeps them.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

fn reminder(number: u32, text: &str, offset: Option<i32>) -> Reminder {
    Reminder {
        number,
        id: ReminderId::random(),
        due: now() + Duration::minutes(i64::from(number)),
        text: text.into(),
        offset_seconds: offset,
        created_at: now(),
    }
}

/// The [`ReminderStore`] contract, on any adapter.
async fn store_contract(store: Arc<dyn ReminderStore>, concurrent: bool) {
    let a = key("19:a@thread.skype;messageid=1#x");
    let b = key("19:a@thread.skype;messageid=1");

    let empty = store.load(&a).await.unwrap();
    assert_eq!(empty, ConversationReminders::default());
    assert_eq!((empty.next_number, empty.version), (1, 0));

    let mut record = empty.clone();
    record
        .reminders
        .push(reminder(1, "Stretch — ünïcode ✓", Some(3600)));
    record.reminders.push(reminder(2, "call \"Bob\"", None));
    record.next_number = 3;
    assert!(
        store.save(&a, &record).await.unwrap(),
        "version 0: none stored"
    );
    assert!(
        !store.save(&a, &record).await.unwrap(),
        "a stale version writes nothing"
    );
    let stored = store.load(&a).await.unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(stored.next_number, 3);
    assert_eq!(stored.reminders, record.reminders, "round trip");
    assert_eq!(
        store.load(&b).await.unwrap(),
        ConversationReminders::default(),
        "another conversation (a prefix of this one's key) sees nothing of it"
    );

    // Two turns read the same version; only one write wins.
    let mut first = stored.clone();
    first.reminders.remove(0);
    let mut second = stored.clone();
    second.next_number = 4;
    second.reminders.push(reminder(3, "three", None));
    let (one, two) = if concurrent {
        tokio::join!(store.save(&a, &first), store.save(&a, &second))
    } else {
        // moto's conditional writes are not atomic across concurrent requests (real
        // DynamoDB's are): there, the second of two writes of one version.
        (store.save(&a, &first).await, store.save(&a, &second).await)
    };
    assert_eq!(
        [one.unwrap(), two.unwrap()]
            .iter()
            .filter(|won| **won)
            .count(),
        1,
        "exactly one of two racing writes lands"
    );
    let after = store.load(&a).await.unwrap();
    assert_eq!(after.version, 2);
    assert!(
        after
            == ConversationReminders {
                version: 2,
                ..first
            }
            || after
                == ConversationReminders {
                    version: 2,
                    ..second
                }
    );
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    store_contract(Arc::new(MemoryReminderStore::new()), true).await;
}

#[tokio::test]
async fn the_dynamodb_store_keeps_the_contract_in_the_delivery_table() {
    let moto = MotoServer::shared();
    let resources = moto.create_resources("remstore").await;
    let (config, counter) = moto.sdk_config().await;
    let client = moto::dynamodb_client(&config, &counter);
    let store = Arc::new(DynamoReminderStore::new(
        client.clone(),
        &resources.delivery_table_name,
    ));
    store_contract(store.clone(), false).await;
    // One item per conversation, under its typed key, with a TTL.
    let item = client
        .get_item()
        .table_name(&resources.delivery_table_name)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(
                "rem#msteams#19:a@thread.skype;messageid=1#x".into(),
            ),
        )
        .send()
        .await
        .unwrap()
        .item
        .expect("the conversation's item");
    for attribute in ["reminders", "nextNumber", "version", "expiresAt"] {
        assert!(item.contains_key(attribute), "{attribute}: {item:?}");
    }
    counter.reset();
    store.load(&key("other")).await.unwrap();
    assert_eq!(counter.count("DynamoDB", "GetItem"), 1);
    assert_eq!(counter.total(), 1, "a load is one read");
}

fn message(id: &str, conversation: &str) -> DeliveryMessage {
    DeliveryMessage {
        id: NotificationId::parse(id).unwrap(),
        conversation: conversation.into(),
        channel: "msteams".into(),
        tenant: Some("tenant-1".into()),
        correlation_id: "0123456789abcdef".into(),
        urgent: true,
        update: false,
        slot: None,
    }
}

#[tokio::test]
async fn the_eventbridge_scheduler_creates_and_deletes_one_time_schedules() {
    let moto = MotoServer::shared();
    let resources = moto.create_resources("remsched").await;
    let (config, counter) = moto.sdk_config().await;
    let target = resources.eventbridge_target();
    let scheduler =
        EventBridgeScheduler::new(moto::scheduler_client(&config, &counter), target.clone());
    let client = moto::scheduler_client(&config, &RequestCounter::default());

    let id = format!("rem-{}", ReminderId::random());
    let name = ScheduleName::parse(&id).unwrap();
    // A conversation id SQS does not take as a group id: hashed.
    let conversation = "19:".to_owned() + &"x".repeat(200);
    let message = message(&id, &conversation);
    let at = Utc::now() + Duration::days(364) + Duration::milliseconds(300);
    scheduler.schedule(&name, at, &message).await.unwrap();
    // The same name again (a retried turn) is fine and changes nothing.
    scheduler
        .schedule(&name, at + Duration::hours(1), &message)
        .await
        .unwrap();
    assert_eq!(counter.count("Scheduler", "CreateSchedule"), 2);

    let schedule = client
        .get_schedule()
        .name(&id)
        .group_name(&target.group)
        .send()
        .await
        .unwrap();
    assert_eq!(
        schedule.schedule_expression(),
        Some(at_expression(at).as_str())
    );
    let sent = schedule.target().unwrap();
    assert_eq!(sent.input(), Some(message.to_body().as_str()));
    assert_eq!(
        sent.sqs_parameters().and_then(|p| p.message_group_id()),
        Some(message.group().as_str())
    );
    assert!(message.group().starts_with("h-"));

    scheduler.cancel(&name).await.unwrap();
    let gone = client
        .get_schedule()
        .name(&id)
        .group_name(&target.group)
        .send()
        .await
        .unwrap_err();
    assert!(
        gone.as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception())
    );
    // Cancelling again, or a name never scheduled (a fired schedule deleted itself): fine.
    scheduler.cancel(&name).await.unwrap();
    scheduler
        .cancel(&ScheduleName::parse("rem-never").unwrap())
        .await
        .unwrap();
    assert_eq!(counter.count("Scheduler", "DeleteSchedule"), 3);

    // Scheduling into a group that does not exist is an error the caller sees.
    let mut missing = target.clone();
    missing.group = "no-such-group".into();
    let wrong = EventBridgeScheduler::new(moto::scheduler_client(&config, &counter), missing);
    assert!(wrong.schedule(&name, at, &message).await.is_err());
}
