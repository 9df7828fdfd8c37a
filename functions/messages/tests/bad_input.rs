//! Bad input gets a clear status, never a panic, and writes nothing.

mod support;

use proactive_bot::testing::connector::ConnectorStandIn;
use serde_json::json;
use support::*;

#[tokio::test]
async fn a_body_that_is_not_json_is_refused_with_400() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[]).await;
    let (status, body) = post_raw(&bot, b"{not json".to_vec(), None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not a valid activity"), "{body}");
    let (status, _) = post_raw(&bot, Vec::new(), None).await;
    assert_eq!(status, 400);
    assert_eq!(services.jobs.list_recent(10).await.unwrap().total, 0);
    assert!(connector.requests().is_empty());
}

#[tokio::test]
async fn missing_fields_are_named_in_the_400() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[]).await;
    let a = Conversation::new("conv|livechat", "user-a", &connector);
    for (field, reason) in [
        ("type", "type"),
        ("conversation", "conversation.id"),
        ("serviceUrl", "serviceUrl"),
    ] {
        let mut activity = a.message("run");
        activity.as_object_mut().unwrap().remove(field);
        let (status, body) = post(&bot, &activity).await;
        assert_eq!(status, 400, "without {field}: {body}");
        assert!(body.contains(reason), "without {field}: {body}");
    }
    let mut wrong_type = a.message("run");
    wrong_type["conversation"] = json!("not an object");
    assert_eq!(post(&bot, &wrong_type).await.0, 400);
    let mut bad_time = a.message("run");
    bad_time["timestamp"] = json!("yesterday");
    assert_eq!(post(&bot, &bad_time).await.0, 400);
    assert_eq!(
        services.jobs.list_recent(10).await.unwrap().total,
        0,
        "no half-written job"
    );
    assert!(connector.requests().is_empty());
}

#[tokio::test]
async fn a_body_over_256_kib_is_refused_with_413() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[]).await;
    let a = Conversation::new("conv|livechat", "user-a", &connector);
    let mut activity = a.message("run");
    activity["channelData"] = json!({"padding": "x".repeat(256 * 1024)});
    let (status, _) = post(&bot, &activity).await;
    assert_eq!(status, 413);
    assert_eq!(services.jobs.list_recent(10).await.unwrap().total, 0);
    // Just under the limit is fine.
    activity["channelData"] = json!({"padding": "x".repeat(200 * 1024)});
    assert_eq!(post(&bot, &activity).await.0, 200);
}

#[tokio::test]
async fn unknown_activity_types_are_accepted_and_ignored() {
    let connector = ConnectorStandIn::start().await;
    let (bot, _services) = start_bot(&[]).await;
    let a = Conversation::new("conv|livechat", "user-a", &connector);
    for kind in [
        "typing",
        "installationUpdate",
        "messageReaction",
        "somethingNew",
    ] {
        assert_eq!(post(&bot, &a.activity(kind)).await.0, 200, "{kind}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(connector.requests().is_empty());
}

#[tokio::test]
async fn other_paths_and_methods_are_not_found() {
    let (bot, _services) = start_bot(&[]).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", bot.addr);
    assert_eq!(
        client
            .get(format!("{base}/api/messages"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        405
    );
    assert_eq!(
        client
            .post(format!("{base}/elsewhere"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
}

#[tokio::test]
async fn a_failing_store_or_channel_is_answered_not_panicked() {
    // The channel refuses every reply: the turn fails, the bot answers 502, nothing crashes.
    let connector = ConnectorStandIn::start().await;
    let (bot, _services) = start_bot(&[]).await;
    let a = Conversation::new("conv|livechat", "user-a", &connector);
    for _ in 0..3 {
        connector.script(proactive_bot::testing::connector::ScriptedResponse::status(
            500,
            Some(r#"{"error":{"code":"ServiceError","message":"boom"}}"#),
        ));
    }
    let (status, body) = post(&bot, &a.message("help")).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        !body.contains("boom"),
        "internal details stay in the logs: {body}"
    );
}
