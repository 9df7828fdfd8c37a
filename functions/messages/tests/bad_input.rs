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
    assert_eq!(services.jobs.list_recent(None, 10).await.unwrap().total, 0);
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
        services.jobs.list_recent(None, 10).await.unwrap().total,
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
    assert_eq!(services.jobs.list_recent(None, 10).await.unwrap().total, 0);
    // Just under the limit is fine.
    activity["channelData"] = json!({"padding": "x".repeat(200 * 1024)});
    assert_eq!(post(&bot, &activity).await.0, 200);
}

#[tokio::test]
async fn an_invoke_the_bot_does_not_handle_gets_501_and_changes_nothing() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[]).await;
    let a = Conversation::new("conv|livechat", "user-a", &connector);
    for name in [
        "adaptiveCard/action",
        "task/fetch",
        "composeExtension/query",
        "unknown",
    ] {
        let mut invoke = a.activity("invoke");
        invoke["name"] = json!(name);
        invoke["value"] = json!({"data": {"x": 1}});
        let (status, _) = post(&bot, &invoke).await;
        assert_eq!(status, 501, "{name}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(connector.requests().is_empty(), "no reply");
    assert!(
        services.registry.get(&a.id).await.unwrap().is_none(),
        "not even registered"
    );
    // The conversation is untouched: a message afterwards is answered as usual (the help
    // text, which is Markdown and says so).
    let reply = say(&bot, &connector, &a, "hello").await;
    assert_eq!(reply.body["textFormat"], "markdown");
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

#[tokio::test]
async fn a_400_never_echoes_the_input() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[]).await;
    let a = Conversation::new("conv|livechat", "user-a", &connector);
    let mut wrong_conversation = a.message("run");
    wrong_conversation["conversation"] = json!("SECRET-123");
    let bodies = [
        br#"{"type": 5, "x": "SECRET-123"}"#.to_vec(),
        br#"{"type":"message","conversation":"SECRET-123"}"#.to_vec(),
        wrong_conversation.to_string().into_bytes(),
        br#"{"type":"message","timestamp":"SECRET-123"}"#.to_vec(),
        br#"{"type":"message" "SECRET-123"}"#.to_vec(),
        br#"{"type":"SECRET-123"#.to_vec(),
    ];
    for body in bodies {
        let (status, answer) = post_raw(&bot, body.clone(), None).await;
        let sent = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{sent}: {answer}");
        assert!(!answer.contains("SECRET"), "{sent} echoed: {answer}");
        assert!(answer.contains("not a valid activity"), "{answer}");
        assert!(answer.contains("line 1 column"), "{answer}");
    }
    let (_, answer) = post_raw(&bot, br#"{"type": 5, "x": "SECRET-123"}"#.to_vec(), None).await;
    assert_eq!(
        answer,
        r#"{"error":"body is not a valid activity: wrong type or value at line 1 column 10"}"#
    );
    assert_eq!(services.jobs.list_recent(None, 10).await.unwrap().total, 0);
    assert!(connector.requests().is_empty());
}

#[tokio::test]
async fn a_service_url_the_allowlist_refuses_gets_403_before_the_turn() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[]).await;
    let mut a = Conversation::new("conv|livechat", "user-a", &connector);
    // Emulator mode: plain http only to loopback hosts.
    a.service_url = "http://evil.example.com/amer/".to_owned();
    for text in ["run", "help"] {
        let (status, body) = post(&bot, &a.message(text)).await;
        assert_eq!(status, 403, "{text}: {body}");
        assert_eq!(body, r#"{"error":"serviceUrl not allowed"}"#);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        services.jobs.list_recent(None, 10).await.unwrap().total,
        0,
        "no job for a conversation the bot could not answer"
    );
    assert!(connector.requests().is_empty());
}

#[tokio::test]
async fn a_service_url_that_is_not_an_http_url_gets_400_before_the_turn() {
    let connector = ConnectorStandIn::start().await;
    let (bot, services) = start_bot(&[]).await;
    let mut a = Conversation::new("conv|livechat", "user-a", &connector);
    for service_url in ["not a url", "ftp://127.0.0.1/amer/", "http://", "/amer/"] {
        a.service_url = service_url.to_owned();
        let (status, body) = post(&bot, &a.message("run")).await;
        assert_eq!(status, 400, "{service_url}: {body}");
        assert!(body.contains("serviceUrl"), "{body}");
        assert!(!body.contains(service_url), "{body}");
    }
    assert_eq!(services.jobs.list_recent(None, 10).await.unwrap().total, 0);
    assert!(connector.requests().is_empty());
}
